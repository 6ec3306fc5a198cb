"""Choosing a recipe without the true tangents: does ``tangent_residual`` pick the better one?

    .venv/bin/python benchmarks/tangent_selection.py [--workers 1] [--out benchmarks/results]

Neither recipe of the README's "The learned manifold" suits every manifold: the small
encoder (100-64-8, contractive weight 10) misses tori, knots and helicoids, the deep one
(512-256, weight 0.5) misses some flat-ish surfaces. A user has no true tangents to choose
with. ``ContractiveAutoencoder.tangent_residual`` scores tangent planes from the data alone:
the share of the squared offsets to the 20 nearest training points that lies off the plane
(lower is better). This script asks whether that score picks the recipe whose tangents are
truly closer (the principal angle to the true planes, measured as in
``tangents_heldout.py``).

Manifolds: the eleven held-out surfaces of ``tangents_heldout.py`` (the same samples), and
four written for this script on 2026-11-28 (first run in a throw-away script the same day,
with the small and deep recipes, seed 0): a trefoil knot (d = 1, R^50), a flat torus
``(cos u, sin u, 0.8 cos v, 0.8 sin v)`` (R^60), the graph ``w = sin(2x) y + z^2`` over
``[-1, 1]^3`` (d = 3, R^50), and a wavy sheet ``z = 0.5 sin(3x) cos(2y)`` over
``[-1, 1]^2`` (R^70). Each: 2,000 training points with noise 0.01 per coordinate.

Scores are read where a user would read them: at 300 *noisy* held-out points (the clean
held-out points plus noise 0.01 from a separate generator), against the training points;
the angles at the clean held-out points, as in ``tangents_heldout.py``. Local PCA (300
neighbours) is scored the same way, for reference.

Writes ``tangent-selection.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tangents import local_pca  # benchmarks/, beside this script
from tangents_heldout import DIMS, RECIPES, sample

from contractive import ContractiveAutoencoder
from contractive.analysis import principal_angles, tangent_residual

NEW = {"trefoil": (50, 1), "flat torus": (60, 2), "graph3": (50, 3), "wavy sheet": (70, 2)}
USED = ("small", "deep 512")


def _orthonormal(rows: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(np.swapaxes(rows, 1, 2))
    return np.swapaxes(q, 1, 2)


def _new_manifold(name: str, n: int, rng: np.random.Generator):
    """Points ``(n, k)`` and orthonormal tangent rows ``(n, d, k)`` before the embedding."""
    if name == "trefoil":
        t = rng.uniform(0, 2 * np.pi, n)
        p = np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t),
                      -np.sin(3 * t)], 1)
        dp = np.stack([np.cos(t) + 4 * np.cos(2 * t), -np.sin(t) + 4 * np.sin(2 * t),
                       -3 * np.cos(3 * t)], 1)
        return p, _orthonormal(dp[:, None, :])
    z, o = np.zeros(n), np.ones(n)
    if name == "flat torus":
        u, v = rng.uniform(0, 2 * np.pi, (2, n))
        p = np.stack([np.cos(u), np.sin(u), 0.8 * np.cos(v), 0.8 * np.sin(v)], 1)
        rows = [np.stack([-np.sin(u), np.cos(u), z, z], 1),
                np.stack([z, z, -np.sin(v), np.cos(v)], 1)]
    elif name == "graph3":
        x, y, w = rng.uniform(-1, 1, (3, n))
        p = np.stack([x, y, w, np.sin(2 * x) * y + w**2], 1)
        rows = [np.stack([o, z, z, 2 * np.cos(2 * x) * y], 1),
                np.stack([z, o, z, np.sin(2 * x)], 1), np.stack([z, z, o, 2 * w], 1)]
    else:  # wavy sheet
        x, y = rng.uniform(-1, 1, (2, n))
        p = np.stack([x, y, 0.5 * np.sin(3 * x) * np.cos(2 * y)], 1)
        rows = [np.stack([o, z, 1.5 * np.cos(3 * x) * np.cos(2 * y)], 1),
                np.stack([z, o, -np.sin(3 * x) * np.sin(2 * y)], 1)]
    return p, _orthonormal(np.stack(rows, 1))


def data(name: str):
    """(training points, held-out clean points, their tangent rows, d), embedded in R^D."""
    if name in DIMS:
        X, X_test, T = sample(name)
        return X, X_test, T, 2
    D, d = NEW[name]
    rng = np.random.default_rng(123)
    p, T = _new_manifold(name, 2300, rng)
    Q = np.linalg.qr(rng.standard_normal((D, p.shape[1])))[0]
    Y = p @ Q.T
    X = Y[:2000] + 0.01 * rng.standard_normal((2000, D))
    return X, Y[2000:], (T @ Q.T)[2000:], d


def one(job: tuple[str, str]) -> dict:
    name, recipe = job
    torch.set_num_threads(1)
    X, X_test, T, d = data(name)
    queries = X_test + 0.01 * np.random.default_rng(7).standard_normal(X_test.shape)
    t0 = time.perf_counter()
    if recipe == "local PCA":
        clean, noisy = local_pca(X, X_test, d, 300), local_pca(X, queries, d, 300)
    else:
        est = ContractiveAutoencoder(n_components=8, scaling="standard", random_state=0,
                                     device="cpu", **RECIPES[recipe]).fit(X)
        clean, noisy = est.tangents(X_test, d), est.tangents(queries, d)
    angles = principal_angles(clean, T)
    row = {"manifold": name, "ambient_dim": X.shape[1], "d": d, "recipe": recipe,
           "mean_angle": float(angles.mean()), "p90_angle": float(np.percentile(angles, 90)),
           "residual": float(tangent_residual(queries, noisy, X).mean()),
           "true_plane_residual": float(tangent_residual(queries, T, X).mean()),
           "fit_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| manifold | d | small: angle / residual | deep 512: angle / residual | "
             "residual picks | angle picks | local PCA: angle / residual | true planes' "
             "residual |", "|---|---|---|---|---|---|---|---|"]
    by = {(r["manifold"], r["recipe"]): r for r in rows}
    for name in dict.fromkeys(r["manifold"] for r in rows):
        got = [by.get((name, k)) for k in (*USED, "local PCA")]
        if None in got[:2]:
            continue
        cells = [f"{r['mean_angle']:.1f} / {r['residual']:.3f}" if r else "" for r in got]
        pick_res = min(USED, key=lambda k: by[name, k]["residual"])
        pick_ang = min(USED, key=lambda k: by[name, k]["mean_angle"])
        lines.append(f"| {name} (R^{got[0]['ambient_dim']}) | {got[0]['d']} | {cells[0]} | "
                     f"{cells[1]} | {pick_res} | {pick_ang} | {cells[2]} | "
                     f"{got[0]['true_plane_residual']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--manifolds", nargs="*", choices=[*DIMS, *NEW])
    args = ap.parse_args()
    if args.workers < 1:
        print(f"tangent_selection: error: --workers {args.workers} must be >= 1",
              file=sys.stderr)
        return 2
    names = args.manifolds or [*DIMS, *NEW]
    jobs = [(n, r) for n in names for r in (*USED, "local PCA")]
    jobs.sort(key=lambda j: j[1] != "deep 512")  # the long fits first
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        rows = list(pool.map(one, jobs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = {n: i for i, n in enumerate(names)}
    rows.sort(key=lambda r: (order[r["manifold"]], r["recipe"]))
    (out / "tangent-selection.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "tangent-selection.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
