"""Datasets: scikit-learn's bundled digits (the embedded default) and MNIST from IDX files.

Every loader returns a ``Dataset`` with images flattened to rows of floats in [0, 1].
MNIST is read from a folder holding the four original IDX files (raw or gzip-compressed);
the folder is, in order: the one named, ``$CONTRACTIVE_DATA_DIR`` (or its ``mnist``
sub-folder), then ``$XDG_CACHE_HOME/contractive/mnist`` (``~/.cache/contractive/mnist``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = ("digits", "mnist")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """A train/test split: ``X_*`` ``(n, d)`` float32 in [0, 1], ``y_*`` ``(n,)`` int64."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int] | None = None


def load_digits(test_size: float = 0.2, random_state: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (bundled, no network), pixels / 16, stratified split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    X = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=random_state, stratify=y
    )
    return Dataset("digits", X_tr, y_tr, X_te, y_te, (8, 8))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected by content), checking its header and size.

    Format: two zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions, then
    one big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: size {len(raw)} bytes does not match its header {shape} ({expected} bytes); "
            "the file is truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def mnist_search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the MNIST files, in order."""
    folders: list[Path] = []
    if data_dir is not None:
        folders += [Path(data_dir), Path(data_dir) / "mnist"]
    env = os.environ.get("CONTRACTIVE_DATA_DIR")
    if env:
        folders += [Path(env), Path(env) / "mnist"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folders.append(cache / "contractive" / "mnist")
    return folders


def find_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the four MNIST files: the first searched folder that holds all of them."""
    folders = mnist_search_path(data_dir)
    for folder in folders:
        found = {k: _idx_file(folder, stem) for k, stem in MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    raise ValueError(
        "MNIST not found: need " + ", ".join(f"{s}[.gz]" for s in MNIST_FILES.values())
        + " in one of: " + ", ".join(str(f) for f in folders)
        + " (put them there, or pass the folder that holds them)"
    )


def load_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST's 60,000 training and 10,000 test images as rows of 784 floats in [0, 1]."""
    paths = find_mnist(data_dir)
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{paths[f'{split}_images']}: images {images.shape} and labels {labels.shape} "
                "do not pair up"
            )

    def flat(a: np.ndarray) -> np.ndarray:
        return (a.reshape(len(a), -1) / np.float32(255.0)).astype(np.float32)

    return Dataset(
        "mnist", flat(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
        flat(arrays["test_images"]), arrays["test_labels"].astype(np.int64),
        tuple(arrays["train_images"].shape[1:]),
    )


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """A dataset by name: ``digits`` (bundled) or ``mnist``."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist(data_dir)
    raise ValueError(f"dataset {name!r} is not known; valid: {', '.join(DATASETS)}")
