"""``contractive finetune RUN_DIR [DATA]``: the run's encoder as the start of a classifier.

Fine-tunes an MLP initialised from the run's encoder (a softmax layer added; every weight
trained on the labels, SGD with Nesterov momentum, early stopping on a validation share of
the run's training rows) and reports its error on DATA (default: the run's held-out rows),
beside the same MLP from random weights and the linear-probe and 5-NN read-outs of the
frozen codes. ``--tangent-weight`` adds the Manifold Tangent Classifier's term (the MLP made
flat along the encoder's leading tangents; ``contractive.tangentprop``),
``--adversarial-weight`` adversarial training (both MLPs). Writes
``finetune.json`` and the fine-tuned classifier (``finetuned/``, a
``FineTunedClassifier.save`` folder: ``contractive.load`` reads it) into RUN_DIR.

A stack (the paper's CAE-2): train a second run on the first run's codes (``contractive
encode RUN_DIR DATA --split train -o codes.npy``, then ``contractive train codes.npy``) and
name it with ``--stack``; the MLP then starts from both encoders, one on top of the other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..classifier import FineTunedClassifier, encoder_layers
from ..readouts import readout_errors
from ..runs import write_json
from ..stacking import StackedContractiveAutoencoder
from ._common import add_run_and_data, model_and_rows, run_model

FINETUNED = "finetuned"  # the fine-tuned classifier's folder in RUN_DIR

EXAMPLE = """examples:
  contractive finetune runs/digits
  contractive finetune runs/mnist mnist --max-epochs 50 --json
  contractive finetune runs/mine test.csv --label-column label --no-baseline
  contractive finetune runs/layer1 --stack runs/layer2       # a CAE-2 stack
  contractive finetune runs/mnist mnist --tangent-weight 1   # Manifold Tangent Classifier
  contractive finetune runs/mnist mnist --adversarial-weight 0.5   # adversarial training"""


def register(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a classifier from the run's encoder; test error",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_and_data(p)
    p.add_argument("--stack", action="append", default=[], metavar="RUN_DIR",
                   help="a run (or a model folder written by save()) trained on the codes "
                        "of the layer below, stacked on top of RUN_DIR's encoder (repeat for "
                        "more layers)")
    p.add_argument("--learning-rate", type=float, default=0.05, metavar="FLOAT",
                   help="SGD learning rate (default 0.05)")
    p.add_argument("--max-epochs", type=int, default=100, metavar="INT",
                   help="most epochs; training stops earlier on validation (default 100)")
    p.add_argument("--batch-size", type=int, default=100, metavar="INT",
                   help="rows per SGD step (default 100)")
    p.add_argument("--dropout", type=float, default=0.0, metavar="FLOAT",
                   help="dropout rate on the hidden layers in training (default 0: none)")
    p.add_argument("--tangent-weight", type=float, default=0.0, metavar="FLOAT",
                   help="beta of the Manifold Tangent Classifier: the classifier is also made "
                        "flat along the encoder's leading tangents (default 0: off)")
    p.add_argument("--n-tangents", type=int, default=15, metavar="INT",
                   help="tangents per training row with --tangent-weight (default 15)")
    p.add_argument("--tangent-probes", type=int, default=0, metavar="INT",
                   help="estimate the tangent term from this many random combinations of the "
                        "tangents (cheaper); default 0: exact")
    p.add_argument("--adversarial-weight", type=float, default=0.0, metavar="FLOAT",
                   help="adversarial training (both MLPs): this share of the loss is the "
                        "cross-entropy at a fast-gradient step from each row, of size "
                        "--adversarial-epsilon (default 0: off; 0.5 is usual; about 2.5x "
                        "the time a step)")
    p.add_argument("--adversarial-epsilon", type=float, default=None, metavar="FLOAT",
                   help="size of that step in the units the MLP takes (default 0.1): the "
                        "encoder's scaled units, the data's for the random-init MLP (the same "
                        "where the run has no --scaling)")
    p.add_argument("--adversarial-norm", default=None, choices=("inf", "l2"),
                   help="the step: eps * sign(gradient) (inf, default) or eps * the gradient "
                        "over its L2 norm (l2)")
    p.add_argument("--validation-fraction", type=float, default=0.1, metavar="FLOAT",
                   help="share of the training rows for early stopping (default 0.1)")
    p.add_argument("--seed", type=int, default=0, metavar="INT",
                   help="seed of the split, the new layers and the batches (default 0)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the same MLP trained from random weights")
    p.add_argument("--json", action="store_true", help="print finetune.json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    est, rows = model_and_rows(args)
    if args.stack:
        upper = [run_model(folder, args.device, model_folder="accepted")[0]
                 for folder in args.stack]
        upper = [enc for u in upper for enc in getattr(u, "encoders_", [u])]  # stacks: layers
        try:
            encoder = StackedContractiveAutoencoder.from_encoders([est, *upper])
        except ValueError as exc:
            raise ValueError(f"--stack {' '.join(args.stack)}: {exc}") from None
    else:
        encoder = est
    train = rows.train
    if train.y is None:
        raise ValueError(
            f"{args.run_dir}: fine-tuning needs labels for the run's training rows; train "
            "with --label-column (or on a labelled dataset)"
        )
    if rows.y is None:
        raise ValueError(f"{rows.described}: has no labels; name its label column with "
                         "--label-column")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed {args.seed} must be between 0 and 2**32-1")
    if not 0 < args.validation_fraction < 1:
        raise ValueError(f"--validation-fraction {args.validation_fraction:g} must be between 0 "
                         "and 1 (exclusive): early stopping needs validation rows")
    if args.adversarial_weight == 0 and (args.adversarial_epsilon is not None
                                         or args.adversarial_norm is not None):
        raise ValueError("--adversarial-epsilon and --adversarial-norm need "
                         "--adversarial-weight above 0 (adversarial training is off without it)")
    params = dict(learning_rate=args.learning_rate, max_epochs=args.max_epochs,
                  batch_size=args.batch_size, validation_fraction=args.validation_fraction,
                  dropout=args.dropout, adversarial_weight=args.adversarial_weight,
                  adversarial_epsilon=0.1 if args.adversarial_epsilon is None
                  else args.adversarial_epsilon,
                  adversarial_norm=args.adversarial_norm or "inf",
                  random_state=args.seed, device=args.device)
    tangent = dict(tangent_weight=args.tangent_weight, n_tangents=args.n_tangents,
                   tangent_probes=args.tangent_probes)
    clf = FineTunedClassifier(encoder, **params, **tangent)
    clf._preflight(len(train.X))  # refuse bad options before training
    models = {"fine-tuned CAE": clf.fit(train.X, train.y)}
    if not args.no_baseline:
        layers = encoder_layers(encoder)
        models["random init"] = FineTunedClassifier(
            None, hidden_layer_sizes=tuple(W.shape[0] for W in layers.weights),
            activation=layers.activation, **params
        ).fit(train.X, train.y)
    result = {"run_dir": args.run_dir, "stack": list(args.stack), "data": rows.described,
              "n_test": int(len(rows.X)), "fine_tuning": {**params, **tangent},
              "results": {}}
    for name, model in models.items():
        result["results"][name] = {
            "test_error": model.error(rows.X, rows.y),
            "validation_error": model.best_validation_error_,
            "epochs": model.n_epochs_, "best_epoch": model.best_epoch_,
            "time_s": model.fit_time_,
        }
    frozen = readout_errors(encoder.transform(train.X), train.y, encoder.transform(rows.X),
                            rows.y)
    result["results"]["frozen codes"] = frozen
    models["fine-tuned CAE"].save(Path(args.run_dir) / FINETUNED)
    result["classifier"] = FINETUNED  # in RUN_DIR, wherever the run is moved
    write_json(Path(args.run_dir) / "finetune.json", result)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{rows.described}: {len(rows.X)} rows")
    for name, r in result["results"].items():
        if name == "frozen codes":
            print(f"  {'linear probe (frozen codes)':30} test error {r['linear_probe_error']:.2%}")
            print(f"  {'5-NN (frozen codes)':30} test error {r['knn_error']:.2%}")
        else:
            print(f"  {name:30} test error {r['test_error']:.2%} (validation "
                  f"{r['validation_error']:.2%}, best epoch {r['best_epoch']} of {r['epochs']})")
    print(f"wrote {Path(args.run_dir) / 'finetune.json'} and the classifier "
          f"{Path(args.run_dir) / FINETUNED}")
    return 0
