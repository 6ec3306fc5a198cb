"""Run folders and the data a command names.

A run folder (``contractive train DATA --out RUN_DIR``) holds:

==========================  ===========================================================
``config.json``             the resolved parameters and where the data came from (first)
``checkpoint.safetensors``  the training state after the last finished epoch (resume)
``train.log``               one line per epoch
``heldout.npy``             indices of the held-out rows (for a data file, whose SHA-256
                            ``config.json`` records: a changed file is refused)
``model.safetensors``       the model (with ``model.json``): ``contractive.load(RUN_DIR)``
``metrics.json``            test reconstruction error, mean ``||J||_F^2``, timings
``history.json`` / ``.csv`` the loss terms per epoch
``*.png``                   reconstructions and training curves
``analysis.json``           written by ``contractive analyze``, with ``analysis_*.png``
``baseline/``               the plain auto-encoder ``analyze`` compares against
``finetune.json``           written by ``contractive finetune``, with ``finetuned/`` (the
                            fine-tuned classifier: ``contractive.load(RUN_DIR/finetuned)``)
==========================  ===========================================================

Every file is written atomically (``io.atomic_write_bytes``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import DATASETS, load_dataset
from .files import load_npy, read_data
from .io import atomic_write_bytes

CONFIG_NAME = "config.json"
HELDOUT_NAME = "heldout.npy"


@dataclass
class Data:
    """Rows to train or evaluate on, with labels and an image shape where known.

    ``X_heldout`` / ``y_heldout``: the dataset's test split, or the held-out rows of a file.
    """

    source: dict
    X: np.ndarray
    y: np.ndarray | None
    X_heldout: np.ndarray | None = None
    y_heldout: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None
    feature_names: list[str] | None = None
    heldout_rows: np.ndarray | None = None


def is_dataset_name(spec: str) -> bool:
    return spec in DATASETS


def load_data(
    spec: str, *, data_dir: str | None = None, label_column: str | None = None,
    test_fraction: float = 0.0, seed: int = 0, heldout: np.ndarray | None = None,
) -> Data:
    """Load DATA: a dataset name (train and test splits) or a file (with ``test_fraction``
    of its rows held out by a seeded permutation, or the rows ``heldout`` given)."""
    if is_dataset_name(spec):
        ds = load_dataset(spec, data_dir)
        source = {"kind": "dataset", "name": spec,
                  "data_dir": None if data_dir is None else str(Path(data_dir).resolve())}
        return Data(source, ds.X_train, ds.y_train, ds.X_test, ds.y_test, ds.image_shape)
    path = Path(spec)
    if not path.exists() and os.sep not in spec and "." not in spec:
        raise ValueError(
            f"DATA {spec!r} is neither a dataset ({', '.join(DATASETS)}) nor an existing file"
        )
    table = read_data(path, label_column=label_column)
    source = {"kind": "file", "path": str(path.resolve()), "label_column": label_column,
              "test_fraction": test_fraction}
    n = len(table.X)
    if heldout is None and test_fraction > 0:
        n_out = int(round(test_fraction * n))
        if n_out < 1 or n - n_out < 1:
            raise ValueError(
                f"--test-fraction {test_fraction:g} of {n} rows leaves no held-out or no "
                "training row; use 0 to hold out nothing"
            )
        heldout = np.sort(np.random.default_rng(seed).permutation(n)[:n_out])
    if heldout is None or len(heldout) == 0:
        return Data(source, table.X, table.y, image_shape=table.image_shape,
                    feature_names=table.feature_names)
    if heldout.max() >= n:
        raise ValueError(f"{path}: has {n} rows now, fewer than when the run was trained")
    mask = np.zeros(n, dtype=bool)
    mask[heldout] = True
    y = table.y
    return Data(
        source, np.asarray(table.X[~mask]), None if y is None else y[~mask],
        np.asarray(table.X[mask]), None if y is None else y[mask], table.image_shape,
        table.feature_names, heldout,
    )


def read_heldout(run_dir: str | os.PathLike, source: dict) -> np.ndarray | None:
    """The run's held-out row numbers (``heldout.npy``), or None where it holds none out.
    A run of a data file that held rows out but lacks the file, or one that is not a list
    of row numbers, is refused (``ValueError``)."""
    path = Path(run_dir) / HELDOUT_NAME
    if not path.exists():
        fraction = source.get("test_fraction") or 0
        if source.get("kind") == "file" and fraction > 0:
            raise ValueError(f"{path}: missing; the run held out --test-fraction {fraction:g} "
                             "of its data's rows and listed them there, and without the list "
                             "its training rows are unknown; restore it, or train the run "
                             "again")
        return None
    rows = np.asarray(load_npy(path, "list of held-out rows"))
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or (rows.size and rows.min() < 0):
        raise ValueError(f"{path}: not a list of row numbers (corrupted?); train the run "
                         "again")
    return rows


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a data file's bytes (hex): what a run records to know its data again."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What a run records of its data file: SHA-256, size and modification time."""
    st = os.stat(path)
    return {"sha256": file_digest(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_same_data(source: dict, run_dir: str | os.PathLike) -> None:
    """Refuse (``ValueError``) a run's data file that changed since the run recorded its
    SHA-256 (runs of older versions recorded none, and are not checked). A file of the
    recorded size and modification time (to the nanosecond) is taken as unchanged without
    reading it again, as ``make`` and ``rsync`` do: a rewrite that keeps both (``cp -p`` of
    another file of the same size, say) is not noticed."""
    recorded = source.get("sha256")
    if source.get("kind") != "file" or not isinstance(recorded, str):
        return
    path = source["path"]
    if not Path(path).is_file():
        raise ValueError(f"{path}: the data file of the run in {run_dir} is gone (moved or "
                         "deleted); the run needs its training rows: put it back there")
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) == (source.get("size"), source.get("mtime_ns")):
        return
    if file_digest(path) != recorded:
        raise ValueError(f"{path}: the data file of the run in {run_dir} changed since the "
                         "run was trained (its SHA-256 differs); restore the original, or "
                         "train a new run on this one")


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run folder; ``ValueError`` if there is none or it is bad."""
    path = Path(run_dir) / CONFIG_NAME
    if not Path(run_dir).is_dir():
        what = "a file, not a run folder" if Path(run_dir).exists() else "no such run folder"
        raise ValueError(f"{run_dir}: {what}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{run_dir}: not a run folder (no {CONFIG_NAME})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable run config ({exc})") from None
    if not isinstance(config, dict) or "params" not in config or "data" not in config:
        raise ValueError(f"{path}: not a contractive run config")
    problem = _config_problem(config)
    if problem:
        raise ValueError(f"{path}: not a valid run config ({problem})")
    return config


def _config_problem(config: dict) -> str | None:
    """What is wrong with a run config's ``params`` and ``data`` entries, or ``None``."""
    if not isinstance(config["params"], dict):
        return "'params' must be an object"
    src = config["data"]
    if not isinstance(src, dict):
        return "'data' must be an object"
    kind = src.get("kind")
    if kind not in ("dataset", "file"):
        return "data.kind must be 'dataset' or 'file'"
    if not isinstance(src.get("spec"), str):
        return "data.spec must be a string"
    if kind == "dataset":
        if src["spec"] not in DATASETS:
            return f"data.spec must be one of {', '.join(DATASETS)}"
        if not isinstance(src.get("data_dir"), (str, type(None))):
            return "data.data_dir must be a string or null"
    else:
        if not isinstance(src.get("path"), str):
            return "data.path must be a string"
        column = src.get("label_column")  # an integer from a TOML config of older versions
        if isinstance(column, bool) or not isinstance(column, (str, int, type(None))):
            return "data.label_column must be a name, an index or null"
        fraction = src.get("test_fraction", 0.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            return "data.test_fraction must be a number"
        if not isinstance(src.get("sha256"), (str, type(None))):
            return "data.sha256 must be a string or null"
        names = src.get("feature_names")
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) for n in names)):
            return "data.feature_names must be a list of names or null"
        for key in ("size", "mtime_ns"):
            if isinstance(src.get(key), bool) or not isinstance(src.get(key), (int, type(None))):
                return f"data.{key} must be an integer or null"
    return None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())


def image_shape_for(n_features: int, known: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The image shape to draw rows with: the data's own, else a square if ``d`` is one."""
    if known is not None and int(np.prod(known)) == n_features:
        return tuple(known)
    side = int(round(np.sqrt(n_features)))
    return (side, side) if side * side == n_features and side >= 4 else None
