"""``contractive analyze RUN_DIR [DATA]``: the learned manifold, measured and drawn.

Writes ``analysis.json`` and figures into RUN_DIR (``analysis_*.png``): the Jacobian's
spectrum against a plain auto-encoder (the run's parameters with contractive weight 0,
trained once and kept in ``RUN_DIR/baseline``) and PCA, contraction curves of both
auto-encoders with the minimum, median and maximum distance between training points marked,
tangent vectors as images (image data), the codes in 2-D coloured by label, and the training
curves. Measures (see ``contractive.analysis``): spectrum, local dimension, contraction ratio
and curve, saturation (SAT), mean ``||J||_F^2`` and the mean squared Jacobian entry.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .. import analysis as A
from ..estimator import ContractiveAutoencoder
from ..io import atomic_write_bytes, figure_png
from ..plotting import codes_scatter, contraction_curves, spectra, tangent_images, training_curves
from ..runs import image_shape_for, write_json
from ._common import add_run_and_data, model_and_rows

EXAMPLE = r"""examples:
  contractive analyze runs/digits
  contractive train mnist --tied-weights --loss bce --output-activation sigmoid \
      --contractive-weight 0.01 --n-components 64 --max-epochs 10 --out runs/mnist
  contractive analyze runs/mnist mnist --n-points 500 --json
  contractive analyze runs/mine data.csv --no-baseline"""
BASELINE = "baseline"
UNTIED_NOTE = (
    "untied decoder: it can grow to offset the encoder's contraction, so the spectrum may "
    "not fall faster than a plain auto-encoder's; the paper's findings were measured with "
    "--tied-weights (README, 'The learned manifold')"
)


def register(sub) -> None:
    p = sub.add_parser(
        "analyze", help="spectra, tangents, contraction curves and figures of a run",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_and_data(p)
    p.add_argument("--n-points", type=int, default=1000, metavar="INT",
                   help="points analysed (a seeded subsample; default 1000)")
    p.add_argument("--n-tangents", type=int, default=None, metavar="INT",
                   help="tangent vectors drawn per point (default: 4, or fewer when the "
                        "code is smaller)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the plain auto-encoder that spectra and curves compare against")
    p.add_argument("--json", action="store_true", help="print analysis.json")
    p.set_defaults(run=run)


def _baseline(run_dir: Path, est: ContractiveAutoencoder, X_train: np.ndarray,
              device: str) -> ContractiveAutoencoder:
    """The run's model with contractive weight 0, trained once and kept in RUN_DIR (again
    when the run's parameters change, e.g. after a resumed run with more epochs)."""
    folder = run_dir / BASELINE
    params = {**est.get_params(), "contractive_weight": 0.0, "higher_order_weight": 0.0,
              "verbose": False}
    same = ("device", "verbose")
    if (folder / "model.json").exists():
        try:
            kept = ContractiveAutoencoder.load(folder, device=device)
        except ValueError as exc:
            raise ValueError(f"{exc}; the plain auto-encoder kept in {folder} is damaged: "
                             "delete that folder to train it again, or pass --no-baseline"
                             ) from None
        if {k: v for k, v in kept.get_params().items() if k not in same} == {
                k: v for k, v in params.items() if k not in same}:
            return kept
    plain = ContractiveAutoencoder(**{**params, "device": device})
    plain.fit(X_train)
    plain.save(folder)
    return plain


def _measures(model: ContractiveAutoencoder, X: np.ndarray,
              radii: np.ndarray) -> tuple[dict, np.ndarray]:
    s = model.singular_values(X)
    dims = A.local_dimension(s)
    k, d = model.n_components, X.shape[1]
    out = {
        "spectrum_mean": s.mean(0).tolist(),
        "spectrum_std": s.std(0).tolist(),
        "local_dimension_method": f"{A.LOCAL_DIMENSION_METHOD} {A.LOCAL_DIMENSION_ENERGY:g}",
        "local_dimension_counts": dict(sorted(Counter(map(int, dims)).items())),
        "local_dimension_median": float(np.median(dims)),
        "local_dimension_gap_counts": dict(sorted(Counter(
            map(int, A.local_dimension(s, method="gap"))).items())),
        "contraction_ratio": model.contraction_curve(X, radii).tolist(),
        "saturation": A.saturation(model.transform(X), model.activation),
        **A.jacobian_summary(model.penalty(X), k, d),
    }
    return out, s


def run(args: argparse.Namespace) -> int:
    if args.n_points < 2:
        raise ValueError(f"--n-points {args.n_points} must be at least 2")
    run_dir = Path(args.run_dir)
    est, rows = model_and_rows(args)
    if not args.no_baseline and (run_dir / BASELINE).exists() \
            and not (run_dir / BASELINE).is_dir():
        raise ValueError(f"{run_dir / BASELINE}: is a file, where analyze keeps the plain "
                         "auto-encoder; move it away, or pass --no-baseline")
    X, y, described, train = rows.X, rows.y, rows.described, rows.train
    most = min(est.n_components, X.shape[1])
    n_tangents = min(4, most) if args.n_tangents is None else args.n_tangents
    if not 1 <= n_tangents <= most:
        raise ValueError(f"--n-tangents {n_tangents} must be between 1 and {most}")
    rng = np.random.default_rng(0)
    if len(X) > args.n_points:
        keep = np.sort(rng.choice(len(X), args.n_points, replace=False))
        X, y = X[keep], (None if y is None else y[keep])
    if len(X) < 2:
        raise ValueError(f"{described}: has {len(X)} row; analyze needs at least 2")
    X = np.asarray(X, dtype=np.float64)
    distances = A.pairwise_distance_summary(train.X)
    radii = np.linspace(0.0, 1.2 * distances["max"], 25)

    result = {"run_dir": str(run_dir), "data": described, "n_points": int(len(X)),
              "radii": radii.tolist(), "training_distances": distances}
    result["cae"], s_cae = _measures(est, X, radii)
    curves, spectra_ = {"CAE": result["cae"]["contraction_ratio"]}, {"CAE": s_cae}
    if not args.no_baseline:
        plain = _baseline(run_dir, est, train.X, args.device)
        result["plain_ae"], s_ae = _measures(plain, X, radii)
        curves["plain AE"], spectra_["plain AE"] = result["plain_ae"]["contraction_ratio"], s_ae
    k = est.n_components
    scaled = (np.asarray(train.X[:5000], dtype=np.float64) - est.scale_offset_) / est.scale_factor_
    Xc = scaled - scaled.mean(0)  # in the units the network sees, like the encoders' spectra
    pca_s = np.linalg.svd(Xc, compute_uv=False)[: min(k, X.shape[1])]
    spectra_[f"PCA of the data (top {len(pca_s)})"] = pca_s
    result["pca_singular_values"] = pca_s.tolist()
    if not est.tied_weights and est.contractive_weight > 0:
        result["notes"] = [UNTIED_NOTE]
    figures = {
        "analysis_spectrum.png": spectra(spectra_),
        "analysis_contraction.png": contraction_curves(radii, curves, distances=distances),
        "analysis_codes.png": codes_scatter(est.transform(X), y,
                                            title=f"codes of {described}"),
    }
    shape = image_shape_for(X.shape[1], train.image_shape)
    if shape is not None:
        m = min(6, len(X))
        figures["analysis_tangents.png"] = tangent_images(
            X[:m], est.tangents(X[:m], n_tangents), shape, singular_values=s_cae[:m],
            title="leading tangent vectors (right singular vectors of J)")
    if est.history_:
        figures["training_curves.png"] = training_curves(
            est.history_, title=f"training of the run {run_dir.name}: each loss term per epoch")
    images = {name: figure_png(fig) for name, fig in figures.items()}  # all drawn first
    for name, data in images.items():
        atomic_write_bytes(run_dir / name, data)
    write_json(run_dir / "analysis.json", result)

    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _summary(result)
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"wrote {run_dir / 'analysis.json'} and analysis_*.png")
    return 0


def _summary(result: dict) -> None:
    rows = [("CAE", result["cae"])]
    if "plain_ae" in result:
        rows.append(("plain AE", result["plain_ae"]))
    print(f"{result['data']}: {result['n_points']} points; distances between training points: "
          "min {min:.3g}, median {median:.3g}, max {max:.3g}".format(
              **result["training_distances"]))
    head = ("", "mean ||J||^2", "mean J_ij^2", "SAT", "ratio r=0", "local dim", "top s_i")
    print("".join(f"{h:>13}" for h in head[:-1]) + f"  {head[-1]}")
    for name, r in rows:
        sat = "-" if r["saturation"] is None else f"{r['saturation']:.1%}"
        top = ", ".join(f"{v:.2g}" for v in r["spectrum_mean"][:3])
        cells = (name, f"{r['mean_jacobian_frobenius_sq']:.4g}",
                 f"{r['mean_squared_jacobian_entry']:.3g}", sat,
                 f"{r['contraction_ratio'][0]:.3g}", f"{r['local_dimension_median']:.0f}", top)
        print("".join(f"{c:>13}" for c in cells[:-1]) + f"  {cells[-1]}")
