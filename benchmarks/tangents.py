"""Tangent recovery on synthetic manifolds: CAE, plain auto-encoder, local PCA.

    .venv/bin/python benchmarks/tangents.py [--quick] [--out benchmarks/results]

For each manifold (2,000 noisy training points embedded in R^100, 300 held-out clean
points), the largest principal angle between the estimated and the true tangent plane,
mean and 90th percentile, in degrees; and the share of points whose local dimension is the
true one, by the default rule (the fewest singular values holding 80% of the Jacobian's
energy) and by the largest gap of its log spectrum. Estimators:

* CAE: 100-64-8 sigmoid encoder, standard scaling, contractive weight 10, 200 epochs;
* plain AE: the same with contractive weight 0 and early stopping (its best);
* local PCA: the top-d principal directions of the K nearest training points (K = 300,
  the best of 50-300 in our sweep), the classical estimator.

``--wide`` instead compares, on the curved cases (torus, swiss roll; the sphere as a
control) and three seeds, the default encoder against a wide one (100-512-8, contractive
weight 30) and two deep ones (100-256-256-8 and 100-512-256-8, weight 0.5, 600 epochs), CAE
only; it writes
``tangents-wide.json`` / ``.md`` (``--encoders`` reruns some, ``--workers`` in parallel).
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

from contractive import ContractiveAutoencoder
from contractive.analysis import principal_angles
from contractive.manifolds import make_manifold

CASES = [("sphere", "linear", 0.05), ("sphere", "linear", 0.01), ("torus", "linear", 0.01),
         ("swiss_roll", "smooth", 0.01), ("sphere", "smooth", 0.01), ("saddle", "linear", 0.01),
         ("saddle", "smooth", 0.01), ("sphere3", "linear", 0.01), ("circle", "linear", 0.01)]
ENCODER = dict(n_components=8, hidden_layer_sizes=(64,), activation="sigmoid",
               scaling="standard", max_epochs=200, random_state=0)


def local_pca(X_train: np.ndarray, X: np.ndarray, d: int, k: int) -> np.ndarray:
    out = []
    for x in X:
        idx = np.argsort(np.sum((X_train - x) ** 2, 1))[:k]
        nb = X_train[idx] - X_train[idx].mean(0)
        out.append(np.linalg.svd(nb, full_matrices=False)[2][:d])
    return np.stack(out)


def summary(angles: np.ndarray) -> dict:
    return {"mean": float(angles.mean()), "p90": float(np.percentile(angles, 90))}


def run_case(name: str, embedding: str, noise: float, epochs: int) -> dict:
    m = make_manifold(name, 2300, ambient_dim=100, embedding=embedding, noise=noise,
                      random_state=0)
    X, X_test, T, d = m.X[:2000], m.X_clean[2000:], m.tangents[2000:], m.intrinsic_dim
    row = {"manifold": name, "embedding": embedding, "noise": noise, "d": d}
    t0 = time.perf_counter()
    cae = ContractiveAutoencoder(**{**ENCODER, "max_epochs": epochs,
                                    "contractive_weight": 10.0}).fit(X)
    row["cae"] = summary(principal_angles(cae.tangents(X_test, d), T))
    row["cae"]["local_dimension_share"] = float(np.mean(cae.local_dimension(X_test) == d))
    row["cae"]["local_dimension_gap_share"] = float(
        np.mean(cae.local_dimension(X_test, method="gap") == d))
    row["cae"]["fit_s"] = time.perf_counter() - t0
    plain = ContractiveAutoencoder(**{**ENCODER, "max_epochs": epochs, "contractive_weight": 0.0,
                                      "early_stopping": True}).fit(X)
    row["plain_ae"] = summary(principal_angles(plain.tangents(X_test, d), T))
    row["local_pca"] = summary(principal_angles(local_pca(X, X_test, d, 300), T))
    return row


WIDE = [("torus", "linear", 0.01), ("swiss_roll", "smooth", 0.01), ("sphere", "linear", 0.01)]
#: label -> (hidden layers, contractive weight, epochs)
ENCODERS = {"100-64-8, weight 10": ((64,), 10.0, 200),
            "100-512-8, weight 30": ((512,), 30.0, 200),
            "100-256-256-8, weight 0.5": ((256, 256), 0.5, 600),
            "100-512-256-8, weight 0.5": ((512, 256), 0.5, 600)}


def wide_one(job: tuple) -> dict:
    (name, embedding, noise), seed, label, quick = job
    torch.set_num_threads(1)
    hidden, weight, epochs = ENCODERS[label]
    m = make_manifold(name, 2300, ambient_dim=100, embedding=embedding, noise=noise,
                      random_state=seed)
    X, X_test, T, d = m.X[:2000], m.X_clean[2000:], m.tangents[2000:], m.intrinsic_dim
    epochs = 50 if quick else epochs
    t0 = time.perf_counter()
    cae = ContractiveAutoencoder(**{**ENCODER, "hidden_layer_sizes": hidden,
                                    "max_epochs": epochs,
                                    "random_state": seed, "contractive_weight": weight}).fit(X)
    row = {"manifold": name, "embedding": embedding, "noise": noise, "seed": seed,
           "encoder": label, "epochs": epochs,
           **summary(principal_angles(cae.tangents(X_test, d), T)),
           "local_dimension_share": float(np.mean(cae.local_dimension(X_test) == d)),
           "fit_s": time.perf_counter() - t0}
    print(json.dumps(row), flush=True)
    return row


def run_wide(labels: list[str], seeds: tuple[int, ...], quick: bool, workers: int) -> list[dict]:
    jobs = [(case, seed, label, quick) for case in WIDE for seed in seeds for label in labels]
    if workers == 1:
        return [wide_one(j) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(pool.map(wide_one, jobs))


def wide_table(rows: list[dict]) -> str:
    lines = ["| manifold (R^100, noise 0.01) | encoder | epochs | mean angle (seeds 0, 1, 2) "
             "| local dim = d (seeds 0, 1, 2) |", "|---|---|---|---|---|"]
    for name, embedding, _ in WIDE:
        for label in ENCODERS:
            rs = sorted((r for r in rows if r["manifold"] == name and r["encoder"] == label),
                        key=lambda r: r["seed"])
            if not rs:
                continue
            epochs = rs[0].get("epochs", 200)  # rows before 2026-11-27 lack it: 200
            lines.append(f"| {name} ({embedding}) | {label} | {epochs} | "
                         + ", ".join(f"{r['mean']:.1f}" for r in rs) + " | "
                         + ", ".join(f"{r['local_dimension_share']:.0%}" for r in rs) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first case only, 50 epochs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--wide", action="store_true",
                    help="the default encoder against a wide and a deep one, curved manifolds")
    ap.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS),
                    metavar="LABEL", help="with --wide: these encoders only; the rows of the "
                    "others are kept from an earlier tangents-wide.json")
    ap.add_argument("--workers", type=int, default=1, help="with --wide: processes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.workers < 1:
        ap.error(f"--workers {args.workers} must be at least 1")
    suffix = "-quick" if args.quick else ""  # a quick check never replaces the results
    if args.wide:
        encoders = list(dict.fromkeys(args.encoders))
        path = out / f"tangents-wide{suffix}.json"
        kept = [r for r in json.loads(path.read_text()) if r["encoder"] not in encoders] \
            if path.exists() and not args.quick else []
        rows = kept + run_wide(encoders, (0,) if args.quick else (0, 1, 2), args.quick,
                               args.workers)
        path.write_text(json.dumps(rows, indent=1))
        (out / f"tangents-wide{suffix}.md").write_text(wide_table(rows))
        print(wide_table(rows))
        return 0
    cases = CASES[:1] if args.quick else CASES
    rows = [run_case(*c, epochs=50 if args.quick else 200) for c in cases]
    lines = ["| manifold (R^100) | d | noise | CAE mean / p90 | local dim = d: energy / gap "
             "| plain AE mean / p90 | local PCA mean / p90 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['manifold']} ({r['embedding']}) | {r['d']} | {r['noise']} | "
            f"{r['cae']['mean']:.1f} / {r['cae']['p90']:.1f} | "
            f"{r['cae']['local_dimension_share']:.0%} / "
            f"{r['cae']['local_dimension_gap_share']:.0%} | "
            f"{r['plain_ae']['mean']:.1f} / {r['plain_ae']['p90']:.1f} | "
            f"{r['local_pca']['mean']:.1f} / {r['local_pca']['p90']:.1f} |")
    (out / f"tangents{suffix}.json").write_text(json.dumps(rows, indent=1))
    (out / f"tangents{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
