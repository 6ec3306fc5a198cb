"""``contractive train DATA --out RUN_DIR``: fit a CAE, checkpointing every epoch.

Parameters come from, lowest first: the estimator's defaults, ``--config run.toml``, then
the flags given. Everything is checked (parameters, output folder, data) before anything
is written. The run folder then gets ``config.json`` (the resolved parameters; a missing
``random_state`` is drawn and recorded, so ``--resume`` continues the same run), a
checkpoint after every epoch, and the model, metrics, history and figures at the end (see
``contractive.runs``). ``--resume`` continues from the last checkpoint with the optimizer and
random-generator state, so the result equals an uninterrupted run's (bitwise on the CPU).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io as _io
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import ACTIVATIONS
from ..checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ..data import DATASETS
from ..estimator import SCALINGS, ContractiveAutoencoder
from ..io import (
    atomic_write_bytes,
    figure_png,
    missing_folders,
    params_from_json,
    remove_empty_folders,
)
from ..models import LOSSES, OUTPUT_ACTIVATIONS
from ..penalty import METHODS
from ..plotting import reconstruction_grid, reconstruction_profiles, training_curves
from ..runs import (
    CONFIG_NAME,
    HELDOUT_NAME,
    check_same_data,
    file_fingerprint,
    image_shape_for,
    load_data,
    read_heldout,
    read_run_config,
    write_json,
)
from ..training import (
    OPTIMIZERS,
    PRECISIONS,
    NonFiniteLossError,
    memory_error_line,
    out_of_memory,
    resolve_device,
)
from ._common import data_spec

LOG_NAME = "train.log"
EXAMPLE = """examples:
  contractive train digits
  contractive train digits --out runs/digits --n-components 16 --max-epochs 300 --seed 0
  contractive train mnist --data-dir ../shared/data/mnist --n-components 64 --max-epochs 3
  contractive train data.csv --label-column label --scaling standard --out runs/mine
  contractive train --config run.toml --out runs/a      (then, after a stop: ... --resume)"""

CHOICES = {
    "activation": tuple(sorted(ACTIVATIONS)),
    "output_activation": OUTPUT_ACTIVATIONS,
    "loss": LOSSES,
    "penalty_method": METHODS,
    "scaling": SCALINGS,
    "optimizer": OPTIMIZERS,
    "precision": PRECISIONS,
}
#: Parameters that may change when a run is resumed (the rest must match the run's).
RESUMABLE_CHANGES = ("max_epochs", "device", "verbose")
RUN_KEYS = ("data", "out", "data_dir", "label_column", "test_fraction")
PARAMS = [n for n in inspect.signature(ContractiveAutoencoder.__init__).parameters if n != "self"]


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
    """One flag per estimator parameter, same name with dashes; absent unless given."""
    group = parser.add_argument_group("model and training (ContractiveAutoencoder parameters)")
    for name, param in inspect.signature(ContractiveAutoencoder.__init__).parameters.items():
        if name == "self":
            continue
        default = param.default
        flag = "--" + name.replace("_", "-")
        kw: dict = {"dest": name, "default": argparse.SUPPRESS, "help": f"default: {default!r}"}
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
    p.add_argument("data", metavar="DATA", nargs="?",
                   help=f"a dataset ({', '.join(DATASETS)}) or a data file (.npy, .npz, .csv, "
                        ".tsv, .parquet, IDX)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/DATA-TIMESTAMP)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its last checkpoint (or start it)")
    p.add_argument("--config", metavar="TOML", help="parameters from a TOML file (flags win)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding a dataset's files")
    p.add_argument("--label-column", metavar="NAME|INDEX",
                   help="column (or .npz array) with labels, left out of the features")
    p.add_argument("--test-fraction", type=float, metavar="FLOAT",
                   help="rows of a data file held out for metrics (default 0.1)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_estimator_flags(p)
    p.set_defaults(run=run)


# -- parameters -----------------------------------------------------------------------------


def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path}: not valid TOML ({exc})") from None
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name == "seed":
            name = "random_state"
        if name not in PARAMS and name not in RUN_KEYS:
            raise ValueError(
                f"--config {path}: unknown key {key!r}; valid: "
                + ", ".join(RUN_KEYS + tuple(PARAMS))
            )
        if name == "hidden_layer_sizes" and isinstance(value, list):
            value = tuple(value)
        elif name == "hidden_layer_sizes" and isinstance(value, str):
            try:
                value = parse_sizes(value)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"--config {path}: hidden_layer_sizes: {exc}") from None
        if name == "label_column" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # an index, as --label-column 3 gives it
        if name in ("data", "out", "data_dir", "label_column") and not isinstance(value, str):
            raise ValueError(f"--config {path}: {key} = {value!r} must be a string")
        if name == "test_fraction" and (isinstance(value, bool)
                                        or not isinstance(value, (int, float))):
            raise ValueError(f"--config {path}: {key} = {value!r} must be a number")
        out[name] = value
    return out


def _check_params(params: dict[str, Any]) -> None:
    """Validate the estimator parameters before any data is read (``_preflight`` checks
    them again with the data, before anything is written)."""
    est = ContractiveAutoencoder(**params)
    est._module_config(1)
    est._train_config(1, 0)
    est._random_state()
    resolve_device(params["device"])


def _resolve(args: argparse.Namespace) -> tuple[dict, dict, Path, dict | None]:
    """(estimator params, run settings, run folder, stored config when resuming)."""
    from_file = _read_toml(args.config) if args.config else {}
    given = {**{k: v for k, v in from_file.items() if k in PARAMS},
             **{k: getattr(args, k) for k in PARAMS if hasattr(args, k)}}
    settings = {k: from_file.get(k) for k in RUN_KEYS}
    for key in RUN_KEYS:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if settings["out"] is not None and not str(settings["out"]).strip():
        raise ValueError("--out is empty: name the run folder, or leave --out out for "
                         "runs/NAME-TIME")
    if args.overwrite and args.resume:
        raise ValueError("--overwrite and --resume contradict each other; pass one")
    if settings["out"]:  # "new/../old" is "old": the checks below must see the folder used
        out = Path(os.path.normpath(settings["out"]))
    elif settings["data"]:
        out = Path("runs") / f"{Path(settings['data']).stem}-{stamp}"
    else:
        raise ValueError("DATA is missing: name a dataset or a file (or set data in --config)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a folder")
            break
    stored = None
    if args.resume and (out / CONFIG_NAME).exists():
        stored = read_run_config(out)
        params = params_from_json(stored["params"])
        for key, value in params_from_json(given).items():
            if key in RESUMABLE_CHANGES:
                params[key] = value
            elif params.get(key) != value:
                raise ValueError(
                    f"--{key.replace('_', '-')} {value!r} differs from the run's "
                    f"{params.get(key)!r} in {out}; a resumed run keeps its parameters (only "
                    f"{', '.join(RESUMABLE_CHANGES)} may change)"
                )
        data = stored["data"]
        if settings["data"] and settings["data"] not in (
            data.get("name"), data.get("spec"), data.get("path")
        ):
            raise ValueError(
                f"DATA {settings['data']!r} differs from the run's {data.get('spec')!r}"
            )
        for key in ("label_column", "test_fraction"):
            if settings[key] is not None and settings[key] != data.get(key):
                raise ValueError(
                    f"--{key.replace('_', '-')} {settings[key]!r} differs from the run's "
                    f"{data.get(key)!r} in {out}; a resumed run keeps its data settings"
                )
        settings.update({"data": data_spec(data),
                         "data_dir": settings["data_dir"] or data.get("data_dir"),
                         "label_column": data.get("label_column"),
                         "test_fraction": data.get("test_fraction")})
    else:
        if not settings["data"]:
            raise ValueError("DATA is missing: name a dataset or a file (or set data in --config)")
        busy = out.is_dir() and any(p for p in out.iterdir() if not p.name.endswith(".tmp"))
        if busy and not (args.overwrite or args.resume):
            raise ValueError(
                f"--out {out}: folder exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue it"
            )
        if busy and args.resume:
            raise ValueError(
                f"--out {out}: not a run folder (no {CONFIG_NAME}); --resume continues a run "
                "folder, so name one or an empty or new folder"
            )
        if busy and args.overwrite and not (out / CONFIG_NAME).exists():
            raise ValueError(
                f"--out {out}: not a run folder (no {CONFIG_NAME}); --overwrite only replaces "
                "run folders, so empty or remove it yourself"
            )
        params = ContractiveAutoencoder().get_params()
        params.update(params_from_json(given))
        if params["random_state"] is None:  # fixed now, so that --resume can redo the same run
            params["random_state"] = int(np.random.default_rng().integers(2**31 - 1))
    if settings["data"] in DATASETS:
        for key in ("label_column", "test_fraction"):
            if settings[key] is not None and stored is None:
                raise ValueError(
                    f"--{key.replace('_', '-')} applies to data files; the dataset "
                    f"{settings['data']!r} has its own labels and test split"
                )
    if "verbose" not in given:
        params["verbose"] = sys.stderr.isatty()
    _check_params(params)
    fraction = settings["test_fraction"]
    settings["test_fraction"] = 0.1 if fraction is None else fraction
    if not (isinstance(settings["test_fraction"], (int, float))
            and 0 <= settings["test_fraction"] < 1):
        raise ValueError(f"--test-fraction {fraction!r} must be a number in [0, 1)")
    return params, settings, out, stored


# -- the run --------------------------------------------------------------------------------


class _EpochHook:
    """After each epoch: a checkpoint (atomic) and a line in ``train.log``."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out, self.meta = out, meta
        self.saved_epoch: int | None = None

    def __call__(self, trainer) -> None:
        save_checkpoint(self.out / CHECKPOINT_NAME, trainer.state_dict(), self.meta)
        self.saved_epoch = trainer.epoch
        record = trainer.history[-1]
        terms = " ".join(f"{k}={v:.6g}" for k, v in record.items() if k not in ("epoch",))
        with open(self.out / LOG_NAME, "a", encoding="utf-8") as log:
            log.write(f"{datetime.now().isoformat(timespec='seconds')} epoch {record['epoch']}"
                      f"/{trainer.config.max_epochs} {terms}\n")


def _write_history(folder: Path, history: list[dict]) -> None:
    write_json(folder / "history.json", history)
    buf = _io.StringIO()
    keys = list(dict.fromkeys(k for h in history for k in h))
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(folder / "history.csv", buf.getvalue().encode())


def _prepare_folder(out: Path, overwrite: bool, resume: bool) -> None:
    if out.is_dir() and overwrite and not resume:
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # left by a write that was killed
        stale.unlink(missing_ok=True)


def _metrics(est: ContractiveAutoencoder, data, fit_s: float) -> dict:
    X_eval = data.X_heldout if data.X_heldout is not None else data.X
    rec = est.reconstruct(X_eval)
    seconds = sum(h["time_s"] for h in est.history_)  # this process's epochs only
    return {
        "data": data.source.get("name") or data.source.get("path"),
        "evaluated_on": "held-out" if data.X_heldout is not None else "training data",
        "n_train": int(len(data.X)),
        "n_eval": int(len(X_eval)),
        "n_features": int(data.X.shape[1]),
        "n_components": int(est.n_components),
        "penalty_method": est.penalty_method_,
        "device": est.device_,
        "epochs": int(est.n_epochs_),
        "stopped_early": bool(est.stopped_early_),
        "fit_time_s": fit_s,
        "train_samples_per_s": len(data.X) * len(est.history_) / seconds if seconds else None,
        "train_mse": -est.score(data.X),
        "test_mse": float(np.mean((rec.astype(np.float64) - X_eval) ** 2)),
        "test_mean_jacobian_frobenius_sq": float(np.mean(est.penalty(X_eval))),
        "final_train_loss": est.history_[-1]["loss"] if est.history_ else None,
    }


def _figures(out: Path, est: ContractiveAutoencoder, data, label: str) -> None:
    X_eval = data.X_heldout if data.X_heldout is not None else data.X
    rec = est.reconstruct(X_eval[:10])
    shape = image_shape_for(X_eval.shape[1], data.image_shape)
    title = (f"{label}: {'held-out' if data.X_heldout is not None else 'training'} rows (top) "
             f"and CAE reconstructions (bottom), k={est.n_components}, "
             f"lambda={est.contractive_weight:g}")
    if shape is not None:
        fig = reconstruction_grid(X_eval[:10], rec, shape, title=title)
    else:
        fig = reconstruction_profiles(X_eval[:5], rec[:5], title=title.replace("(top)", "(solid)")
                                      .replace("(bottom)", "(dashed)"))
    atomic_write_bytes(out / "reconstructions.png", figure_png(fig))
    if est.history_:
        atomic_write_bytes(out / "training_curves.png", figure_png(
            training_curves(est.history_, title=f"training on {label}")))


def run(args: argparse.Namespace) -> int:
    params, settings, out, stored = _resolve(args)
    heldout = None
    if stored is not None:
        check_same_data(stored["data"], out)
        heldout = read_heldout(out, stored["data"])
    data = load_data(
        settings["data"], data_dir=settings["data_dir"], label_column=settings["label_column"],
        test_fraction=settings["test_fraction"], seed=params["random_state"], heldout=heldout,
    )
    resume_state = None
    if args.resume and (out / CHECKPOINT_NAME).exists():
        resume_state, _ = load_checkpoint(out / CHECKPOINT_NAME)
        done = int(resume_state.get("epoch", 0))
        if done > params["max_epochs"]:
            raise ValueError(f"--max-epochs {params['max_epochs']} is below the {done} epochs "
                             f"the run in {out} has done; pass more to continue it")
    ContractiveAutoencoder(**params)._preflight(data.X)  # before anything is written
    source = {**data.source, "spec": settings["data"]}
    if source["kind"] == "file" and stored is None:
        if args.overwrite and Path(out).resolve() in Path(source["path"]).parents:
            raise ValueError(f"--overwrite would delete DATA {settings['data']}, which lies "
                             f"inside --out {out}; move it out first")
        source.update(file_fingerprint(source["path"]))
        if data.feature_names is not None:  # commands on other files check their columns
            source["feature_names"] = [str(n) for n in data.feature_names]

    created = missing_folders(out)
    _prepare_folder(out, args.overwrite, args.resume)
    if stored is not None:  # a resumed run may have changed max_epochs / device / verbose
        write_json(out / CONFIG_NAME, {**stored, "params": params})
    else:
        if data.heldout_rows is not None:
            buf = _io.BytesIO()
            np.save(buf, data.heldout_rows)
            atomic_write_bytes(out / HELDOUT_NAME, buf.getvalue())
        write_json(out / CONFIG_NAME, {"data": source, "params": params})
    est = ContractiveAutoencoder(**params)
    hook = _EpochHook(out, {"params": params})
    t0 = time.perf_counter()
    try:
        est._fit(data.X, callbacks=[hook], resume=resume_state)
    except KeyboardInterrupt:
        if hook.saved_epoch is None and resume_state is None:
            where = "no epoch finished yet, so there is no checkpoint"
        else:
            epoch = hook.saved_epoch if hook.saved_epoch is not None else resume_state["epoch"]
            where = f"the checkpoint of epoch {epoch} is in {out}"
        print(f"contractive train: interrupted; {where}; continue with: contractive train "
              f"--out {out} --resume", file=sys.stderr)
        return 130
    except Exception as exc:  # nothing trained: what this run wrote goes (out of memory, say)
        nothing_saved = hook.saved_epoch is None and resume_state is None
        if nothing_saved and stored is None:  # only the run's own files, and emptied folders
            for name in (CONFIG_NAME, HELDOUT_NAME, CHECKPOINT_NAME, LOG_NAME):
                (out / name).unlink(missing_ok=True)
            remove_empty_folders(created)
        if not isinstance(exc, NonFiniteLossError):
            if out_of_memory(exc) and not nothing_saved:
                epoch = hook.saved_epoch if hook.saved_epoch is not None else resume_state["epoch"]
                raise MemoryError(f"{memory_error_line(exc)}; the checkpoint of epoch {epoch} "
                                  f"is in {out}: continue with contractive train --out {out} "
                                  "--resume (--device may change)") from None
            raise
        if nothing_saved:
            where = "no epoch finished, so no run was written" if stored is None else (
                f"no epoch finished; {out} holds only the run's config: retry with --overwrite")
        else:
            epoch = hook.saved_epoch if hook.saved_epoch is not None else resume_state["epoch"]
            where = f"the checkpoint of epoch {epoch} is in {out}"
        raise NonFiniteLossError(f"{exc.cause}; {where}", cause=exc.cause) from None
    fit_s = time.perf_counter() - t0
    metrics = _metrics(est, data, fit_s)
    est.save(out)
    write_json(out / "metrics.json", metrics)
    _write_history(out, est.history_)
    _figures(out, est, data, str(settings["data"]))
    if args.json:
        print(json.dumps({"run_dir": str(out), **metrics}, indent=1))
    else:
        print(
            f"trained on {metrics['data']} ({metrics['n_train']} samples, {metrics['epochs']} "
            f"epochs, {fit_s:.1f} s): {metrics['evaluated_on']} MSE {metrics['test_mse']:.5g}, "
            f"mean ||J||_F^2 {metrics['test_mean_jacobian_frobenius_sq']:.4g}"
        )
        print(f"run folder: {out}")
        print(f"  {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0

