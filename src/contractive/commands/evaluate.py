"""``contractive evaluate RUN_DIR [DATA]``: the CAE against PCA, as one table.

Columns: reconstruction MSE and mean ``||J_f(x)||_F^2`` (for PCA, ``||W||_F^2 = k``); with
labels, the accuracy of a linear probe (logistic regression on standardised codes) and of a
5-nearest-neighbour classifier on the codes, both by stratified cross-validation on the
evaluated rows (at most 5,000 of them). PCA has the same number of components, fitted on the
run's training data.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.decomposition import PCA

from ..readouts import cross_validated_accuracies
from ._common import add_run_and_data, model_and_rows

EXAMPLE = """examples:
  contractive evaluate runs/digits                 (the run's held-out rows)
  contractive evaluate runs/mnist mnist --split test --json
  contractive evaluate runs/mine new.csv --label-column label"""


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="reconstruction, contraction and probe accuracy, against PCA",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_and_data(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    est, rows = model_and_rows(args)
    X, y, described, train = rows.X, rows.y, rows.described, rows.train
    k = est.n_components
    codes = est.transform(X)
    rows = {"CAE": {
        "reconstruction_mse": -est.score(X),
        "mean_jacobian_frobenius_sq": float(np.mean(est.penalty(X))),
    }}
    pca = PCA(n_components=min(k, *train.X.shape), random_state=0).fit(train.X)
    pca_codes = pca.transform(X)
    rows["PCA"] = {
        "reconstruction_mse": float(np.mean((pca.inverse_transform(pca_codes) - X) ** 2)),
        "mean_jacobian_frobenius_sq": float(pca.n_components_),
    }
    if y is not None:
        for name, c in (("CAE", codes), ("PCA", pca_codes)):
            probes = cross_validated_accuracies(c, y)
            if probes:
                rows[name].update(probes)
    result = {"run_dir": args.run_dir, "data": described, "n_samples": int(len(X)),
              "n_components": int(k), "results": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    cols = [("reconstruction_mse", "recon. MSE", ".5g"),
            ("mean_jacobian_frobenius_sq", "mean ||J||_F^2", ".4g"),
            ("linear_probe_accuracy", "linear probe", ".2%"),
            ("knn_accuracy", f"{rows['CAE'].get('knn_neighbors', 5)}-NN", ".2%")]
    cols = [c for c in cols if any(c[0] in r for r in rows.values())]
    print(f"{described}: {len(X)} samples, {k} components")
    print(f"{'':10}" + "".join(f"{title:>16}" for _, title, _ in cols))
    for name, r in rows.items():
        label = f"{name} (k={k})" if name == "CAE" else f"PCA (k={pca.n_components_})"
        print(f"{label:10}" + "".join(f"{format(r[key], fmt):>16}" for key, _, fmt in cols))
    if y is None:
        print("(no labels: probe accuracies need --label-column or a labelled dataset)")
    elif "linear_probe_accuracy" not in rows["CAE"]:
        print("(no probe accuracies: cross-validation needs two classes and at least two "
              "rows of every class)")
    return 0
