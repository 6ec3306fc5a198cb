"""What several commands share: a run's model and the data a command is pointed at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..estimator import ContractiveAutoencoder
from ..io import CONFIG_NAME as MODEL_CONFIG_NAME
from ..runs import (
    CONFIG_NAME,
    Data,
    check_same_data,
    is_dataset_name,
    load_data,
    read_heldout,
    read_run_config,
)
from ..stacking import STACK_NAME


def add_run_and_data(p) -> None:
    """RUN_DIR, an optional DATA (default: the run's held-out rows) and the data options."""
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("data", metavar="DATA", nargs="?",
                   help="dataset name or data file (default: the run's held-out rows)")
    add_data_options(p)


def add_data_options(p, *, split: bool = True) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="folder holding a dataset's files")
    p.add_argument("--label-column", metavar="NAME|INDEX",
                   help="column (or .npz array) with labels, left out of the features")
    if split:
        p.add_argument("--split", choices=("test", "train"),
                       help="for a dataset name: which split (default: test)")
    p.add_argument("--device", default="auto", help="device for inference (default: auto)")


def is_model_folder(folder: str) -> bool:
    """A folder written by ``ContractiveAutoencoder.save`` or
    ``StackedContractiveAutoencoder.save``, not a run folder (no ``config.json``); or the
    path of its ``model.json`` / ``stack.json``, as ``contractive.load`` takes it."""
    path = Path(folder)
    if path.name in (MODEL_CONFIG_NAME, STACK_NAME) and path.is_file():
        path = path.parent
    return (path.is_dir() and not (path / CONFIG_NAME).exists()
            and ((path / MODEL_CONFIG_NAME).is_file() or (path / STACK_NAME).is_file()))


def run_model(run_dir: str, device: str, *, model_folder: str | None = None
              ) -> tuple[ContractiveAutoencoder, dict | None]:
    """The model and ``config.json`` of a run folder. ``model_folder``: what to say when
    ``run_dir`` is a folder written by ``save()`` (no run config, so no data): None
    refuses it (the command needs the run's data), otherwise its model comes back with
    the config ``None``."""
    if is_model_folder(run_dir):
        if model_folder is None:
            raise ValueError(f"{run_dir}: a model saved by save(), not a run folder: this "
                             "command needs the run's training data, which only a run of "
                             "`contractive train` records (encode and reconstruct take a "
                             "model folder)")
        from .. import load

        return load(run_dir, device=device), None
    if model_folder is not None and Path(run_dir).is_dir() and not (
            Path(run_dir) / CONFIG_NAME).exists():
        raise ValueError(f"{run_dir}: neither a run folder (no {CONFIG_NAME}) nor a model "
                         f"folder written by save() (no {MODEL_CONFIG_NAME} or {STACK_NAME})")
    config = read_run_config(run_dir)
    if not (Path(run_dir) / MODEL_CONFIG_NAME).exists():
        raise ValueError(
            f"{run_dir}: the run has no model yet (training unfinished?); "
            f"finish it with: contractive train --out {run_dir} --resume"
        )
    return ContractiveAutoencoder.load(run_dir, device=device), config


def training_data(run_dir: str, config: dict, data_dir: str | None = None) -> Data:
    """The run's own data, split as in training (``data_dir`` overrides where the run found
    a dataset's files; the checksums still make it the same data)."""
    src = config["data"]
    check_same_data(src, run_dir)
    return load_data(data_spec(src), data_dir=data_dir or src.get("data_dir"),
                     label_column=src.get("label_column"), heldout=read_heldout(run_dir, src))


def data_spec(source: dict) -> str:
    """What to load a run's data from: the dataset name, or the file's absolute path (so a
    run made with a relative path works from any folder)."""
    return source["path"] if source.get("kind") == "file" else source["spec"]


@dataclass
class Rows:
    """The rows a command works on: ``X``, labels ``y``, a description, the file's column
    names (when it has a header) and the run's training data when it was loaded."""

    X: np.ndarray
    y: np.ndarray | None
    described: str
    feature_names: list[str] | None = None
    train: Data | None = None


def eval_rows(
    run_dir: str, config: dict, spec: str | None, *, data_dir: str | None,
    label_column: str | None, split: str | None = None,
) -> Rows:
    """The rows of a command's DATA. No DATA: the run's held-out rows. A dataset name: its
    ``split`` (default ``test``). A file: all its rows. An option that does not apply to
    DATA (``--split`` without a dataset name, ``--label-column`` with one) is refused."""
    if split is not None and (spec is None or not is_dataset_name(spec)):
        raise ValueError(f"--split {split} applies to a dataset name given as DATA, not to "
                         + ("the run's held-out rows" if spec is None else f"the file {spec}"))
    if label_column is not None and (spec is None or is_dataset_name(spec)):
        raise ValueError(f"--label-column {label_column} applies to a data file given as "
                         "DATA" + ("" if spec is None else f", not to the dataset {spec}"))
    if spec is None:
        data = training_data(run_dir, config, data_dir)
        if data.X_heldout is None:
            raise ValueError(
                f"{run_dir}: the run held out no rows (--test-fraction 0); name DATA to use"
            )
        return Rows(data.X_heldout, data.y_heldout, f"{config['data']['spec']} (held out)",
                    data.feature_names, data)
    if is_dataset_name(spec):
        data = load_data(spec, data_dir=data_dir)
        if split == "train":
            return Rows(data.X, data.y, f"{spec} (train)")
        return Rows(data.X_heldout, data.y_heldout, f"{spec} (test)")
    data = load_data(spec, label_column=label_column)
    return Rows(data.X, data.y, spec, data.feature_names)


def model_and_rows(args, *, with_training_data: bool = True, model_folder: bool = False
                   ) -> tuple[ContractiveAutoencoder, Rows]:
    """For a command on RUN_DIR [DATA]: the model and the rows, checked against the model's
    feature count; ``rows.train`` (the run's training data, for PCA and distances) is loaded
    when asked for. ``model_folder``: RUN_DIR may be a folder written by ``save()`` (DATA
    is then needed)."""
    run_dir = Path(args.run_dir)
    if run_dir.name in (MODEL_CONFIG_NAME, STACK_NAME) and run_dir.is_file() and (
            run_dir.parent / CONFIG_NAME).is_file():  # a run's model.json named: the run
        args.run_dir = str(run_dir.parent)
    est, config = run_model(args.run_dir, args.device,
                            model_folder="accepted" if model_folder else None)
    if config is None:
        if args.data is None:
            raise ValueError(f"{args.run_dir}: a model saved by save(), which records no "
                             "data: name DATA")
        rows = eval_rows(args.run_dir, {}, args.data, data_dir=args.data_dir,
                         label_column=args.label_column, split=args.split)
        check_features(rows.X, est, rows.described, args.run_dir)
        names = getattr(est, "feature_names_in_", None)  # a model fitted on a DataFrame
        check_columns(rows, None if names is None else list(names), args.run_dir)
        return est, rows
    rows = eval_rows(
        args.run_dir, config, args.data, data_dir=args.data_dir,
        label_column=args.label_column, split=args.split,
    )
    trained_with = config["data"].get("label_column")
    if (args.data is not None and trained_with is not None and args.label_column is None
            and rows.X.shape[1] == est.n_features_in_ + 1):
        raise ValueError(
            f"{rows.described}: has {rows.X.shape[1]} features, but the model in "
            f"{args.run_dir} expects {est.n_features_in_}; the run was trained with "
            f"--label-column {trained_with}: pass it here too"
        )
    check_features(rows.X, est, rows.described, args.run_dir)
    check_columns(rows, config["data"].get("feature_names"), args.run_dir)
    if rows.train is None and with_training_data:
        rows.train = training_data(args.run_dir, config, args.data_dir)
    return est, rows


def check_features(X: np.ndarray, est: ContractiveAutoencoder, spec: str, run_dir: str) -> None:
    if X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"{spec}: has {X.shape[1]} features, but the model in {run_dir} expects "
            f"{est.n_features_in_}"
        )


def check_columns(rows: Rows, trained: list[str] | None, run_dir: str) -> None:
    """Refuse a file whose header names the columns otherwise than the file the model was
    trained on: columns are taken by position, so a reordered file would be encoded
    wrongly without a word. (Either side without names: nothing to compare.)"""
    if trained is None or rows.feature_names is None:
        return
    got = [str(n) for n in rows.feature_names]
    if got == list(trained) or len(got) != len(trained):
        return
    i = next(i for i, (a, b) in enumerate(zip(got, trained)) if a != b)
    where = ("the same names in another order" if sorted(got) == sorted(trained)
             else "other names")
    raise ValueError(
        f"{rows.described}: column {i + 1} is {got[i]!r} where the model in {run_dir} was "
        f"trained on {trained[i]!r} ({where}); columns are taken by position: give them in "
        "the training file's order and names"
    )
