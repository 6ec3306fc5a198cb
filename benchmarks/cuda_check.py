"""CUDA-graph training against eager training, on the GPU (a check, not a unit test).

    python benchmarks/cuda_check.py --data-dir DIR [--json OUT]

Trains the seed configuration (784-64-784, MNIST subset) and a fine-tuned classifier twice
from the same seed, once through ``training.GraphedSteps`` and once eagerly
(``CONTRACTIVE_CUDA_GRAPHS=0``), and prints the largest weight difference, the losses and
the time of each. Both must agree to float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch


def _fit(make, graphs: bool):
    os.environ["CONTRACTIVE_CUDA_GRAPHS"] = "1" if graphs else "0"
    t0 = time.perf_counter()
    est = make()
    torch.cuda.synchronize()
    return est, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--json")
    args = ap.parse_args()
    from contractive import ContractiveAutoencoder, FineTunedClassifier
    from contractive.data import load_mnist

    ds = load_mnist(args.data_dir)
    X, y = ds.X_train[:20000], ds.y_train[:20000]
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    def cae():
        return ContractiveAutoencoder(n_components=64, contractive_weight=1e-3,
                                      learning_rate=1e-3, max_epochs=3, device="cuda",
                                      random_state=0).fit(X)

    def clf():
        return FineTunedClassifier(hidden_layer_sizes=(256,), max_epochs=4, device="cuda",
                                   random_state=0).fit(X[:15000], y[:15000], X[15000:],
                                                       y[15000:])

    for name, make in (("cae", cae), ("classifier", clf)):
        (g, tg), (e, te) = _fit(make, True), _fit(make, False)
        diffs = [float((a - b).abs().max()) for a, b in
                 zip(g.module_.state_dict().values(), e.module_.state_dict().values())]
        key = "loss" if name == "classifier" else "reconstruction"
        out[name] = {
            "max_weight_difference": max(diffs),
            "graphed_last": g.history_[-1][key], "eager_last": e.history_[-1][key],
            "graphed_s": tg, "eager_s": te,
        }
        if name == "cae":
            out[name]["test_mse"] = [-g.score(ds.X_test), -e.score(ds.X_test)]
        else:
            out[name]["test_error"] = [g.error(ds.X_test, ds.y_test),
                                       e.error(ds.X_test, ds.y_test)]
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    ok = all(np.isfinite(out[k]["max_weight_difference"]) and
             out[k]["max_weight_difference"] < 1e-2 for k in ("cae", "classifier"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
