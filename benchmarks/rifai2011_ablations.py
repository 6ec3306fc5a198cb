"""What moves the fine-tuned CAE's MNIST error: one change at a time from the defaults of
``contractive reproduce rifai2011`` before adversarial fine-tuning (today's
``--finetune-adversarial-weight 0``; CAE, lambda 0.3 on the paper's scale).

    python benchmarks/rifai2011_ablations.py --data-dir DIR [--only NAME ...] [--json OUT]
        [--cae MODEL_DIR]

Variants (each pre-trains its own CAE unless it only changes fine-tuning, then it reuses
the default pre-trained model, trained once here or read from ``--cae``, e.g. the
reproduction's ``models/CAE_lambda_0.3``). ``--json`` merges into an existing file: rows of
the variants run replace theirs, the others stay.

* ``default``: 50 Adam epochs; fine-tuning without dropout, patience 20, plateau patience
  10, at most 150 epochs, batch 100 (the reproduction's defaults before dropout).
* ``dropout``: dropout 0.5 on the hidden layer, patience 40, plateau patience 20, at most
  250 epochs (the reproduction's defaults before adversarial fine-tuning);
  ``dropout-seed-1`` / ``dropout-seed-2``: its fine-tuning seeds; ``dropout-input``: plus
  input dropout 0.2.
* ``short-schedule``: plateau patience 3, early-stopping patience 10, at most 60 epochs.
* ``batch-20``: fine-tuning batch 20 at learning rate 0.02.
* ``pretrain-20`` / ``pretrain-150``: 20 or 150 pre-training epochs.
* ``lambda-1``: contractive weight 1.0.
* ``constant-lr``: no schedule, early-stopping patience 30, at most 200 epochs.
* ``sgd-pretrain``: pre-training by SGD (momentum 0.9, learning rate 1.0 on the mean loss).
* ``seed-1`` / ``seed-2``: fine-tuning seeds (the spread of the default's figure).
* ``cae2-dropout``: not the paper's architecture, its CAE-2: a second CAE (1000 sigmoid
  units, tied, cross-entropy, weight 0.1 on the paper's scale, 50 Adam epochs) trained on the
  default CAE's codes, the 784-1000-1000-10 stack fine-tuned as ``dropout``;
  ``cae2-dropout-seed-1``: the same with fine-tuning seed 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from contractive import (
    ContractiveAutoencoder,
    FineTunedClassifier,
    StackedContractiveAutoencoder,
)
from contractive.reproduce import Protocol, mnist_split

PRETRAIN = {"pretrain-20": {"max_epochs": 20}, "pretrain-150": {"max_epochs": 150},
            "lambda-1": {"contractive_weight": 1.0 / 784},
            "sgd-pretrain": {"optimizer": "sgd", "learning_rate": 1.0}}
FINETUNE = {"short-schedule": {"lr_patience": 3, "n_iter_no_change": 10, "max_epochs": 60},
            "batch-20": {"batch_size": 20, "learning_rate": 0.02},
            "constant-lr": {"lr_schedule": "constant", "n_iter_no_change": 30, "max_epochs": 200},
            "seed-1": {"random_state": 1}, "seed-2": {"random_state": 2}}
DROPOUT = {"dropout": 0.5, "lr_patience": 20, "n_iter_no_change": 40, "max_epochs": 250}
FINETUNE.update({"dropout": DROPOUT, "dropout-seed-1": {**DROPOUT, "random_state": 1},
                 "dropout-seed-2": {**DROPOUT, "random_state": 2},
                 "dropout-input": {**DROPOUT, "input_dropout": 0.2}})
STACK = {"cae2-dropout": DROPOUT, "cae2-dropout-seed-1": {**DROPOUT, "random_state": 1}}
VARIANTS = ("default", *FINETUNE, *PRETRAIN, *STACK)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--only", nargs="*", choices=VARIANTS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--cae", help="folder of the default pre-trained CAE (else trained here)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split = mnist_split(Protocol(), args.data_dir)
    cae_params = dict(n_components=1000, activation="sigmoid", output_activation="sigmoid",
                      tied_weights=True, loss="bce", contractive_weight=0.3 / 784,
                      learning_rate=1e-3, max_epochs=50, device=args.device, random_state=0)
    ft_params = dict(learning_rate=0.05, lr_patience=10, n_iter_no_change=20, max_epochs=150,
                     batch_size=100, device=args.device, random_state=0)
    default_cae = ContractiveAutoencoder.load(args.cae, device=args.device) if args.cae else None
    results = []
    for name in args.only or VARIANTS:
        t0 = time.perf_counter()
        if name in PRETRAIN:
            cae = ContractiveAutoencoder(**{**cae_params, **PRETRAIN[name]}).fit(split.X_train)
        else:
            if default_cae is None:
                default_cae = ContractiveAutoencoder(**cae_params).fit(split.X_train)
            cae = default_cae
        if name in STACK:  # a second layer on the codes of the first
            second = ContractiveAutoencoder(**{**cae_params, "contractive_weight": 0.1 / 1000})
            cae = StackedContractiveAutoencoder.from_encoders(
                [cae, second.fit(cae.transform(split.X_train))])
        settings = {**FINETUNE, **STACK}.get(name, {})
        clf = FineTunedClassifier(cae, **{**ft_params, **settings}).fit(
            split.X_train, split.y_train, split.X_valid, split.y_valid)
        row = {"variant": name, "valid_error": clf.best_validation_error_,
               "test_error": clf.error(split.X_test, split.y_test),
               "finetune_epochs": clf.n_epochs_, "time_s": time.perf_counter() - t0}
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        path = Path(args.json)
        doc = json.loads(path.read_text()) if path.exists() else {"results": []}
        done = {r["variant"] for r in results}
        doc["results"] = [r for r in doc["results"] if r["variant"] not in done] + results
        path.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
