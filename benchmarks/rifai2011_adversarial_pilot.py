"""Pilot for adversarial fine-tuning: the reproduction's lambda 0.3 CAE fine-tuned on the
first 10,000 MNIST training images for 40 epochs (dropout 0.5, SGD 0.05, batch 100; no early
stop), validated and tested as the reproduction is, once per setting given as JSON.

    python benchmarks/rifai2011_adversarial_pilot.py --data-dir DIR --cae MODELS/CAE_lambda_0.3 \
        --out results.jsonl '{}' '{"adversarial_weight": 0.5, "adversarial_epsilon": 1.0, \
        "adversarial_norm": "l2"}'

One torch thread; each setting appends one JSON line (valid and test error in %, seconds).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--cae", required=True, help="a saved CAE model folder")
    ap.add_argument("--out", required=True, help="a JSON-lines file, appended to")
    ap.add_argument("settings", nargs="+", help="FineTunedClassifier parameters, as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from contractive import ContractiveAutoencoder, FineTunedClassifier
    from contractive.reproduce import Protocol, mnist_split

    split = mnist_split(Protocol(), args.data_dir)
    cae = ContractiveAutoencoder.load(args.cae, device="cpu")
    X, y = split.X_train[:10_000], split.y_train[:10_000]
    for text in args.settings:
        kw = json.loads(text)
        start = time.perf_counter()
        clf = FineTunedClassifier(cae, learning_rate=0.05, batch_size=100, max_epochs=40,
                                  n_iter_no_change=40, lr_patience=20, dropout=0.5,
                                  device="cpu", random_state=0, **kw)
        clf.fit(X, y, split.X_valid, split.y_valid)
        row = {**kw, "valid_error_pct": round(100 * clf.best_validation_error_, 2),
               "test_error_pct": round(100 * clf.error(split.X_test, split.y_test), 2),
               "seconds": round(time.perf_counter() - start, 1)}
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
