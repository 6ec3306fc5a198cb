"""User data files: ``.npy`` (memory-mapped), ``.npz``, ``.csv`` / ``.tsv``, ``.parquet``, IDX.

``read_data(path)`` returns a ``TableData``: a 2-D array of samples by features, optional
labels, feature names and an image shape where the file has one. Everything is validated as
it is read, and each problem is one ``ValueError`` naming the file and, where it applies,
the row and column (rows are counted as a text editor counts lines, header included; columns
by name where the file has a header, else from 1):

* a missing, empty, unreadable or truncated file; an unknown format;
* non-numeric cells, empty cells, ragged rows, NaN or infinity;
* an array that is not 2-D (3-D image stacks are flattened), with no rows or no columns;
* labels whose length differs from the number of rows.
"""

from __future__ import annotations

import csv
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import parse_idx, read_idx_bytes
from .validation import FLOAT32_MAX

FORMATS = (".npy", ".npz", ".csv", ".tsv", ".parquet", "IDX (*-ubyte, *.idx, .gz)")
_X_KEYS = ("X", "x", "data")
_Y_KEYS = ("y", "labels", "target")
_CHECK_ROWS = 65536


@dataclass
class TableData:
    """X: ``(n, d)`` float array; y: ``(n,)`` or None; names: ``d`` column names or None."""

    path: str
    X: np.ndarray
    y: np.ndarray | None = None
    feature_names: list[str] | None = None
    image_shape: tuple[int, ...] | None = None


def _kind(path: Path) -> str:
    name = path.name.lower()
    for ext in (".npy", ".npz", ".csv", ".tsv", ".parquet"):
        if name.endswith(ext):
            return ext
    if name.endswith(".gz"):  # only IDX files are read compressed
        name = name[:-3]
    if name.endswith("-ubyte") or name.endswith(".idx") or ".idx" in name:
        return "idx"
    raise ValueError(f"{path}: unknown data format; supported: {', '.join(FORMATS)}")


def _numeric_2d(a: np.ndarray, path: Path, what: str = "array") -> tuple[np.ndarray, tuple | None]:
    """Check dtype and shape; flatten image stacks ``(n, h, w)`` to ``(n, h w)``."""
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{path}: {what} has dtype {a.dtype}; need numbers (int or float)")
    if a.ndim < 2:
        raise ValueError(
            f"{path}: {what} of shape {a.shape} is {a.ndim}-D; need 2-D (samples x features)"
        )
    image_shape = tuple(a.shape[1:]) if a.ndim == 3 else None
    if a.ndim > 2:
        a = a.reshape(a.shape[0], -1)
    if a.shape[0] == 0:
        raise ValueError(f"{path}: {what} has no samples (0 rows)")
    if a.shape[1] == 0:
        raise ValueError(f"{path}: {what} has no features (0 columns)")
    return a, image_shape


def _as_float(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a
    return a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)


def check_finite(X: np.ndarray, path: str | Path, names: list[str] | None = None,
                 row_offset: int = 1) -> None:
    """Raise ``ValueError`` at the first NaN, infinity or value beyond float32's range (the
    network computes in float32), naming its row and column.

    Rows are reported from ``row_offset`` (1, or 2 below a header line); checked in chunks
    so a memory-mapped array is never loaded whole.
    """
    for start in range(0, X.shape[0], _CHECK_ROWS):
        chunk = np.asarray(X[start : start + _CHECK_ROWS])
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(chunk) | (np.abs(chunk) > FLOAT32_MAX)
        if bad.any():
            r, c = map(int, np.argwhere(bad)[0])
            col = repr(names[c]) if names else str(c + 1)
            raise ValueError(
                f"{path}: row {start + r + row_offset}, column {col}: {chunk[r, c]}; "
                "values must be finite numbers (no NaN or infinity) within float32's range "
                f"(+-{FLOAT32_MAX:.4g})"
            )


def load_npy(path: str | os.PathLike, what: str = "file") -> np.ndarray:
    """``np.load`` of a ``.npy`` file (memory-mapped, never unpickled), with one-line errors
    naming ``path``: no ``.npy`` header, Python objects inside, or truncated."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if magic != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy {what} (no .npy header: corrupted, or another "
                         "format)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{path}: the {what} holds Python objects, not numbers; only "
                             "numeric arrays are read (never unpickled)") from None
        raise ValueError(f"{path}: not a numeric .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable or truncated .npy file ({exc})") from None


def _read_npy(path: Path) -> TableData:
    a, image_shape = _numeric_2d(load_npy(path), path)
    check_finite(a, path)
    return TableData(str(path), _as_float(a), image_shape=image_shape)


def _read_npz(path: Path, label_key: str | None) -> TableData:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: unreadable .npz file ({exc})") from None
    if not arrays:
        raise ValueError(f"{path}: the .npz file holds no arrays")
    x_key = next((k for k in _X_KEYS if k in arrays), None)
    if x_key is None:
        if len(arrays) != 1:
            raise ValueError(
                f"{path}: cannot tell the data from {sorted(arrays)}; name it one of {_X_KEYS}"
            )
        x_key = next(iter(arrays))
    if label_key is not None and label_key not in arrays:
        raise ValueError(f"{path}: no array {label_key!r}; it holds {sorted(arrays)}")
    y_key = label_key or next((k for k in _Y_KEYS if k in arrays), None)
    X, image_shape = _numeric_2d(arrays[x_key], path, f"array {x_key!r}")
    check_finite(X, path)
    y = None
    if y_key is not None:
        y = arrays[y_key]
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(
                f"{path}: labels {y_key!r} of shape {y.shape} do not match {x_key!r} with "
                f"{len(X)} rows; need one label per row"
            )
    return TableData(str(path), _as_float(X), y, image_shape=image_shape)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_text(path: Path, delimiter: str, label_column: str | int | None) -> TableData:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f, delimiter=delimiter)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    except (OSError, csv.Error) as exc:
        raise ValueError(f"{path}: unreadable {path.suffix} file ({exc})") from None
    numbered = [(i + 1, row) for i, row in enumerate(rows) if any(c.strip() for c in row)]
    if not numbered:
        raise ValueError(f"{path}: empty file (no rows)")
    header = None
    first = [c.strip() for c in numbered[0][1]]
    if any(c and not _is_number(c) for c in first):  # empty cells are no evidence of a header
        header = first
        numbered = numbered[1:]
    if not numbered:
        raise ValueError(f"{path}: has a header but no data rows")
    width = len(header) if header else len(numbered[0][1])
    label_idx = _label_index(path, label_column, header, width)
    names = header or [str(i + 1) for i in range(width)]
    X = np.empty((len(numbered), width - (label_idx is not None)), dtype=np.float64)
    labels = []
    for r, (line, row) in enumerate(numbered):
        if len(row) != width:
            raise ValueError(f"{path}: row {line} has {len(row)} columns, expected {width}")
        j = 0
        for c, cell in enumerate(row):
            if c == label_idx:
                if not cell.strip():
                    col = repr(names[c]) if header else str(c + 1)
                    raise ValueError(f"{path}: row {line}, column {col}: empty label cell")
                labels.append(cell.strip())
                continue
            text = cell.strip()
            col = repr(names[c]) if header else str(c + 1)
            if not text:
                raise ValueError(f"{path}: row {line}, column {col}: empty cell; need a number")
            try:
                X[r, j] = float(text)
            except ValueError:
                raise ValueError(
                    f"{path}: row {line}, column {col}: {text!r} is not a number"
                ) from None
            if not np.isfinite(X[r, j]) or abs(X[r, j]) > FLOAT32_MAX:
                raise ValueError(
                    f"{path}: row {line}, column {col}: {text!r}; values must be finite numbers "
                    f"(no NaN or infinity) within float32's range (+-{FLOAT32_MAX:.4g})"
                )
            j += 1
    feature_names = [n for c, n in enumerate(names) if c != label_idx] if header else None
    y = None
    if label_idx is not None:
        y = np.asarray(labels)
        if all(_is_number(v) for v in labels):
            values = np.asarray(labels, dtype=np.float64)
            y = values.astype(np.int64) if np.all(values == np.round(values)) else values
    return TableData(str(path), X, y, feature_names)


def _label_index(path: Path, label_column: str | int | None, header: list[str] | None,
                 width: int) -> int | None:
    if label_column is None:
        return None
    if isinstance(label_column, str) and not label_column.lstrip("-").isdigit():
        if header is None or label_column not in header:
            have = f"columns {header}" if header else "no header"
            raise ValueError(f"{path}: no label column {label_column!r} ({have})")
        if header.count(label_column) > 1:  # the other copy would be read as a feature
            raise ValueError(f"{path}: the header names the label column {label_column!r} "
                             f"{header.count(label_column)} times; name one column so")
        return header.index(label_column)
    idx = int(label_column)
    if not -width <= idx < width:
        raise ValueError(
            f"{path}: label column {idx} is out of range for {width} columns (0 to {width - 1})"
        )
    if width < 2:
        raise ValueError(f"{path}: a label column leaves no feature column")
    return idx % width


def _read_parquet(path: Path, label_column: str | int | None) -> TableData:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            f"{path}: reading .parquet needs pyarrow: pip install 'contractive[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types
        raise ValueError(f"{path}: unreadable .parquet file ({exc})") from None
    names = list(table.column_names)
    label_idx = _label_index(path, label_column, names, len(names))
    columns, feature_names, y = [], [], None
    for c, name in enumerate(names):
        col = table.column(c).to_numpy(zero_copy_only=False)
        if c == label_idx:
            y = col
            continue
        if col.dtype.kind not in "biuf":
            raise ValueError(f"{path}: column {name!r} has type {table.schema.field(c).type}; "
                             "need numbers")
        columns.append(col.astype(np.float64))
        feature_names.append(name)
    if not columns or table.num_rows == 0:
        raise ValueError(f"{path}: no numeric data (rows {table.num_rows}, columns {len(names)})")
    X = np.column_stack(columns)
    check_finite(X, path, feature_names, row_offset=1)
    return TableData(str(path), X, y, feature_names)


def _read_idx(path: Path) -> TableData:
    a = parse_idx(read_idx_bytes(path), path)
    X, image_shape = _numeric_2d(a, path, "IDX array")
    check_finite(X, path)
    return TableData(str(path), _as_float(X), image_shape=image_shape)


def read_data(path: str | os.PathLike, *, label_column: str | int | None = None) -> TableData:
    """Read a data file by its extension (see the module docstring for what is checked).

    label_column: for ``.csv`` / ``.tsv`` / ``.parquet``, a column name or 0-based index
    holding labels (not features); for ``.npz``, the name of the labels array (by default
    ``y``, ``labels`` or ``target`` when present).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; need a data file ({', '.join(FORMATS)})")
    kind = _kind(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    if label_column is not None and (isinstance(label_column, bool) or not isinstance(
            label_column, (str, int, np.integer))):
        raise TypeError(f"label_column={label_column!r} must be a column name or an integer "
                        "index")
    if label_column is not None and kind in (".npy", "idx"):
        raise ValueError(
            f"{path}: a label column applies to .csv, .tsv, .parquet and .npz files; "
            "this file holds features only"
        )
    if kind == ".npy":
        return _read_npy(path)
    if kind == ".npz":
        return _read_npz(path, None if label_column is None else str(label_column))
    if kind in (".csv", ".tsv"):
        return _read_text(path, "," if kind == ".csv" else "\t", label_column)
    if kind == ".parquet":
        return _read_parquet(path, label_column)
    return _read_idx(path)


def write_array(path: str | os.PathLike, X: np.ndarray, *, header: list[str] | None = None) -> None:
    """Write ``X`` to ``.npy`` or ``.csv`` / ``.tsv`` (by extension), atomically."""
    import io as _io

    from .io import atomic_write_bytes

    path = Path(path)
    ext = path.suffix.lower()
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; name an output file (.npy, .csv or .tsv)")
    X = np.asarray(X)
    if X.dtype.kind not in "biuf" or X.ndim != 2:
        raise ValueError(f"{path}: can write a 2-D numeric array, not {X.ndim}-D {X.dtype}")
    if header is not None and (isinstance(header, str) or len(header) != X.shape[1]):
        raise ValueError(f"{path}: header must be a list of {X.shape[1]} column names")
    check_finite(X, path, None if header is None else list(header))  # as the readers do
    if ext == ".npy":
        buf = _io.BytesIO()
        np.save(buf, np.ascontiguousarray(X))
        data = buf.getvalue()
    elif ext in (".csv", ".tsv"):
        buf = _io.StringIO()
        delim = "," if ext == ".csv" else "\t"
        np.savetxt(buf, X, delimiter=delim, fmt="%.9g",
                   header=delim.join(header) if header else "", comments="")
        data = buf.getvalue().encode()
    else:
        raise ValueError(f"{path}: unknown output format {ext or '(none)'}; use .npy, .csv or .tsv")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    atomic_write_bytes(path, data)
