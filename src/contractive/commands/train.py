"""``contractive train DATA``: fit a CAE and write a run folder.

The run folder holds the model (``model.safetensors`` + ``model.json``), the resolved
parameters (``config.json``), ``metrics.json``, the history (``history.json``,
``history.csv``) and figures (``reconstructions.png``: test originals above their
reconstructions; ``training_curves.png``). It is assembled in a temporary folder beside
RUN_DIR and renamed into place at the end, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io as _io
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ..activations import ACTIVATIONS
from ..data import DATASETS, load_dataset
from ..estimator import SCALINGS, ContractiveAutoencoder
from ..io import atomic_write_bytes, default_mode
from ..models import LOSSES, OUTPUT_ACTIVATIONS
from ..penalty import METHODS
from ..plotting import reconstruction_grid, training_curves
from ..training import OPTIMIZERS

EXAMPLE = """examples:
  contractive train digits
  contractive train digits --out runs/digits --n-components 16 --max-epochs 200 --seed 0
  contractive train mnist --data-dir ../shared/data/mnist --n-components 64 --max-epochs 3"""

CHOICES = {
    "activation": tuple(sorted(ACTIVATIONS)),
    "output_activation": OUTPUT_ACTIVATIONS,
    "loss": LOSSES,
    "penalty_method": METHODS,
    "scaling": SCALINGS,
    "optimizer": OPTIMIZERS,
}


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"256,64"`` -> ``(256, 64)``; ``""`` or ``"none"`` -> ``()``."""
    text = text.strip()
    if text.lower() in ("", "none", "()"):
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of positive integers, e.g. 256,64"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: layer sizes must be positive integers")
    return sizes


def add_estimator_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per estimator parameter, same name with dashes, default from the estimator."""
    group = parser.add_argument_group("model and training (ContractiveAutoencoder parameters)")
    for name, param in inspect.signature(ContractiveAutoencoder.__init__).parameters.items():
        if name == "self":
            continue
        default = param.default
        flag = "--" + name.replace("_", "-")
        kw: dict = {"dest": name, "default": default, "help": f"default: {default!r}"}
        if name == "hidden_layer_sizes":
            group.add_argument(flag, type=parse_sizes, metavar="N,N,...", **kw)
        elif name == "random_state":
            group.add_argument(flag, "--seed", type=int, metavar="INT", **kw)
        elif isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif name in CHOICES:
            group.add_argument(flag, choices=CHOICES[name], **kw)
        elif isinstance(default, int):
            group.add_argument(flag, type=int, metavar="INT", **kw)
        elif isinstance(default, float):
            group.add_argument(flag, type=float, metavar="FLOAT", **kw)
        else:
            group.add_argument(flag, type=str, **kw)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a CAE and write a run folder",
        description="Train a contractive auto-encoder on DATA and write a run folder.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help=f"dataset name: {', '.join(DATASETS)}")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/DATA-TIMESTAMP)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset's files (mnist)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_estimator_flags(p)
    p.set_defaults(run=run)


def _estimator_params(args: argparse.Namespace) -> dict:
    names = ContractiveAutoencoder().get_params()
    return {k: getattr(args, k) for k in names}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"--out {out}: folder exists and is not empty; pass --overwrite to replace it"
        )


def _write_history(folder: Path, history: list[dict]) -> None:
    atomic_write_bytes(folder / "history.json", json.dumps(history, indent=1).encode())
    buf = _io.StringIO()
    keys = list(dict.fromkeys(k for h in history for k in h))
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(folder / "history.csv", buf.getvalue().encode())


def run(args: argparse.Namespace) -> int:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{args.data}-{stamp}"
    _check_out(out, args.overwrite)
    params = _estimator_params(args)
    est = ContractiveAutoencoder(**params)
    est._module_config(1)  # validate the parameters before loading any data
    ds = load_dataset(args.data, args.data_dir)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(default_mode(directory=True))
    try:
        t0 = time.perf_counter()
        est.fit(ds.X_train)
        fit_s = time.perf_counter() - t0
        rec_test = est.reconstruct(ds.X_test)
        metrics = {
            "dataset": ds.name,
            "n_train": int(len(ds.X_train)),
            "n_test": int(len(ds.X_test)),
            "n_features": int(ds.X_train.shape[1]),
            "n_components": int(est.n_components),
            "penalty_method": est.penalty_method_,
            "device": est.device_,
            "epochs": int(est.n_epochs_),
            "fit_time_s": fit_s,
            "train_samples_per_s": est.n_epochs_ * len(ds.X_train) / fit_s,
            "train_mse": -est.score(ds.X_train),
            "test_mse": float(np.mean((rec_test.astype(np.float64) - ds.X_test) ** 2)),
            "test_mean_jacobian_frobenius_sq": float(np.mean(est.penalty(ds.X_test))),
            "final_train_loss": est.history_[-1]["loss"] if est.history_ else None,
        }
        est.save(tmp)
        config = {"data": args.data, "data_dir": args.data_dir, "params": est.get_params()}
        atomic_write_bytes(tmp / "config.json", json.dumps(config, indent=1).encode())
        atomic_write_bytes(tmp / "metrics.json", json.dumps(metrics, indent=1).encode())
        _write_history(tmp, est.history_)
        if ds.image_shape is not None:
            fig = reconstruction_grid(
                ds.X_test, rec_test, ds.image_shape,
                title=f"{ds.name} test images (top) and CAE reconstructions (bottom), "
                f"k={est.n_components}, lambda={est.contractive_weight:g}",
            )
            fig.savefig(tmp / "reconstructions.png", dpi=100)
        if est.history_:
            training_curves(est.history_, title=f"training on {ds.name}").savefig(
                tmp / "training_curves.png", dpi=100
            )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if args.json:
        print(json.dumps({"run_dir": str(out), **metrics}, indent=1))
    else:
        files = ", ".join(sorted(p.name for p in out.iterdir()))
        print(
            f"trained on {ds.name} ({metrics['n_train']} samples, {metrics['epochs']} epochs, "
            f"{fit_s:.1f} s): test MSE {metrics['test_mse']:.5f}, "
            f"test mean ||J||_F^2 {metrics['test_mean_jacobian_frobenius_sq']:.4g}"
        )
        print(f"run folder: {out}")
        print(f"  {files}")
    sys.stdout.flush()
    return 0
