"""CUDA-graph training against eager training, on the GPU (a check, not a unit test).

    python benchmarks/cuda_check.py --data-dir DIR [--json OUT] [--only CASE ...]

Trains the seed configuration (784-64-784, MNIST subset), a deep encoder with the exact
penalty (784-256-64, autograd step), the same with the one-probe estimate, a one-layer CAE+H,
a fine-tuned classifier without and with dropout, one with dropout and adversarial
training, and one with dropout and the Manifold
Tangent Classifier's term (exact, and estimated with probes) twice from the same seed, once through
``training.GraphedSteps`` and once eagerly
(``CONTRACTIVE_CUDA_GRAPHS=0``), and prints the largest weight difference, the losses and
the time of each. Both must agree to float32 rounding, and each graphed fit must have
captured its graphs. The classifier runs a plateau schedule with patience 1, so that a
learning-rate drop, where one happens, is crossed by graphs captured again. The estimate,
CAE+H, dropout (twice a step with adversarial training) and the probes draw random
numbers inside the graphs (from the trainer's generator,
registered with each graph): equal weights show that a replay draws what eager steps draw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

captures: dict[str, int] = {}


def _counting_capture(name: str):
    """``GraphedSteps.capture`` that counts its successful captures under ``name``."""
    from contractive import training

    original = training.GraphedSteps.__dict__["capture"].__func__

    def capture(cls, *args, **kwargs):
        graphs, done = original(cls, *args, **kwargs)
        captures[name] = captures.get(name, 0) + (graphs is not None)
        return graphs, done

    training.GraphedSteps.capture = classmethod(capture)
    return original


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
    ap.add_argument("--only", nargs="+", help="cases to run (default: all)")
    args = ap.parse_args()
    from contractive import ContractiveAutoencoder, FineTunedClassifier, training
    from contractive.data import load_mnist

    ds = load_mnist(args.data_dir)
    X, y = ds.X_train[:20000], ds.y_train[:20000]
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    def cae():
        return ContractiveAutoencoder(n_components=64, contractive_weight=1e-3,
                                      learning_rate=1e-3, max_epochs=3, device="cuda",
                                      random_state=0).fit(X)

    def deep():
        return ContractiveAutoencoder(n_components=64, hidden_layer_sizes=(256,),
                                      penalty_method="exact", contractive_weight=1e-3,
                                      learning_rate=1e-3, max_epochs=2, device="cuda",
                                      random_state=0).fit(X)

    def estimate():
        return ContractiveAutoencoder(n_components=64, hidden_layer_sizes=(256,),
                                      penalty_method="hutchinson", n_probes=1,
                                      contractive_weight=1e-3, learning_rate=1e-3, max_epochs=2,
                                      device="cuda", random_state=0).fit(X)

    def cae_h():
        return ContractiveAutoencoder(n_components=64, contractive_weight=1e-3,
                                      higher_order_weight=1e-3, learning_rate=1e-3,
                                      max_epochs=2, device="cuda", random_state=0).fit(X)

    def dropout():
        return FineTunedClassifier(hidden_layer_sizes=(256,), max_epochs=4, dropout=0.5,
                                   input_dropout=0.2, device="cuda", random_state=0).fit(
            X[:15000], y[:15000], X[15000:], y[15000:])

    def adversarial():
        # the fast-gradient step's gradient inside the graphed step, with dropout; plateau
        # patience 1, as for the classifier, so a learning-rate drop is crossed
        return FineTunedClassifier(hidden_layer_sizes=(256,), max_epochs=8, lr_patience=1,
                                   dropout=0.5,
                                   adversarial_weight=0.5, adversarial_epsilon=1.0,
                                   adversarial_norm="l2", device="cuda", random_state=0).fit(
            X[:15000], y[:15000], X[15000:], y[15000:])

    def clf():
        # plateau patience 1: a learning-rate drop captures the graphs again
        return FineTunedClassifier(hidden_layer_sizes=(256,), max_epochs=8, lr_patience=1,
                                   device="cuda", random_state=0).fit(
            X[:15000], y[:15000], X[15000:], y[15000:])

    def mtc(**kw):
        # the Manifold Tangent Classifier's term along a small CAE's tangents (exact, or
        # estimated with probes drawn inside the graphs), with dropout
        def make():
            enc = ContractiveAutoencoder(n_components=64, max_epochs=1, device="cuda",
                                         random_state=0).fit(X[:5000])
            return FineTunedClassifier(enc, max_epochs=3, dropout=0.5, tangent_weight=1.0,
                                       n_tangents=5, device="cuda", random_state=0, **kw).fit(
                X[:15000], y[:15000], X[15000:], y[15000:])
        return make

    cases = {"cae": cae, "deep": deep, "estimate": estimate, "cae_h": cae_h,
             "classifier": clf, "dropout": dropout, "adversarial": adversarial,
             "mtc": mtc(), "mtc_probes": mtc(tangent_probes=1)}
    unknown = sorted(set(args.only or ()) - set(cases))
    if unknown:
        print(f"cuda_check: error: unknown cases {unknown}; known: {sorted(cases)}",
              file=sys.stderr)
        return 2
    cases = {k: v for k, v in cases.items() if not args.only or k in args.only}
    for name, make in cases.items():
        original = _counting_capture(name)
        (g, tg), (e, te) = _fit(make, True), _fit(make, False)
        training.GraphedSteps.capture = classmethod(original)
        diffs = [float((a - b).abs().max()) for a, b in
                 zip(g.module_.state_dict().values(), e.module_.state_dict().values())]
        classifier = name in ("classifier", "dropout", "adversarial", "mtc", "mtc_probes")
        key = "loss" if classifier else "reconstruction"
        out[name] = {
            "max_weight_difference": max(diffs),
            "graphed_last": g.history_[-1][key], "eager_last": e.history_[-1][key],
            "graphed_s": tg, "eager_s": te,
        }
        out[name]["graph_captures"] = captures.pop(name, 0)
        if not classifier:
            out[name]["test_mse"] = [-g.score(ds.X_test), -e.score(ds.X_test)]
        else:
            out[name]["test_error"] = [g.error(ds.X_test, ds.y_test),
                                       e.error(ds.X_test, ds.y_test)]
    out["graphs_capture_generators"] = training.graphs_capture_generators()
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    # steps that draw random numbers are graphed only where torch registers generators
    drawing = {"estimate", "cae_h", "dropout", "adversarial", "mtc", "mtc_probes"}
    ok = all(np.isfinite(out[k]["max_weight_difference"])
             and out[k]["max_weight_difference"] < 1e-2
             and (out[k]["graph_captures"] > 0
                  or (k in drawing and not out["graphs_capture_generators"]))
             for k in cases)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
