"""Named datasets: scikit-learn's bundled digits (the embedded default), MNIST, Fashion-MNIST.

Every loader returns a ``Dataset`` with images flattened to rows of floats in [0, 1].
MNIST and Fashion-MNIST are read from the four original IDX files (raw or gzip-compressed),
found in the first of these folders that holds all four:

1. the folder named (``data_dir``, ``--data-dir``), or its sub-folder named after the dataset;
2. ``$CONTRACTIVE_DATA_DIR`` (for MNIST also the folder itself), or its sub-folder;
3. the user cache, ``$XDG_CACHE_HOME/contractive/NAME`` (``~/.cache/contractive/NAME``);

and otherwise downloaded into the cache (``download.py``). Every file is checked when read:
its IDX header and size, the image and label counts, and the MD5 of its *uncompressed*
content against the published one (so a re-compressed copy is accepted and a corrupted one
is not). Fashion-MNIST publishes checksums of its archives only: its files are checked at
download time against those, and structurally when read; a file that is MNIST's (by its
MD5) is refused there, the two sharing file names.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_FILES = dict(_STEMS)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class IdxDataset:
    """An IDX dataset: its files, where to fetch them, and their checksums.

    raw_md5: MD5 of each file's uncompressed content (``None`` where none is published);
    gz_md5: MD5 of each official ``.gz`` archive, checked on download.
    """

    name: str
    title: str
    mirrors: tuple[str, ...]
    gz_md5: dict[str, str]
    raw_md5: dict[str, str | None] = field(default_factory=dict)
    counts: tuple[int, int] = (60000, 10000)
    image_shape: tuple[int, int] = (28, 28)
    search_env_root: bool = False

    @property
    def files(self) -> list[str]:
        return list(_STEMS.values())


IDX_DATASETS = {
    "mnist": IdxDataset(
        "mnist", "MNIST handwritten digits (LeCun, Cortes, Burges), CC BY-SA 3.0",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        raw_md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        search_env_root=True,
    ),
    "fashion-mnist": IdxDataset(
        "fashion-mnist", "Fashion-MNIST, Zalando article images (Xiao et al. 2017), MIT",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}
DATASETS = ("digits", *IDX_DATASETS)


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


# ---------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The uncompressed bytes of an IDX file (gzip detected by content, not by name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from None
    return raw


def parse_idx(raw: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Parse IDX bytes, checking the header and the size.

    Format: two zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions, then
    one big-endian uint32 per dimension, then the data.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
    raw = bytes(raw)
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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip), checking its header and size."""
    return parse_idx(read_idx_bytes(path), path)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------
# finding and loading IDX datasets
# ---------------------------------------------------------------------------------------


def _spec(name: str) -> IdxDataset:
    if name not in IDX_DATASETS:
        raise ValueError(f"dataset {name!r} is not known; valid: {', '.join(DATASETS)}")
    return IDX_DATASETS[name]


def cache_dir(name: str) -> Path:
    """The user-cache folder of dataset ``name``: ``$XDG_CACHE_HOME/contractive/NAME``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "contractive" / name


def search_path(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the files of dataset ``name``, in order."""
    spec = _spec(name)
    folders: list[Path] = []
    if data_dir is not None:
        folders += [Path(data_dir), Path(data_dir) / name]
    env = os.environ.get("CONTRACTIVE_DATA_DIR")
    if env:
        folders += ([Path(env)] if spec.search_env_root else []) + [Path(env) / name]
    folders.append(cache_dir(name))
    return folders


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def find_dataset_files(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the four files of ``name``: the first searched folder that holds all four.

    Raises ``ValueError`` naming the missing files and the folders searched.
    """
    folders = search_path(name, data_dir)
    for folder in folders:
        found = {k: _idx_file(folder, stem) for k, stem in _STEMS.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    title = "MNIST" if name == "mnist" else name
    raise ValueError(
        f"{title} not found: need " + ", ".join(f"{s}[.gz]" for s in _STEMS.values())
        + " in one of: " + ", ".join(str(f) for f in folders)
        + f" (put them there, pass the folder that holds them, or run "
        f"'contractive datasets download {name}' where there is network)"
    )


def check_file(name: str, path: Path, raw: bytes) -> None:
    """Compare the uncompressed content of one file of ``name`` with its published MD5."""
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    expected = _spec(name).raw_md5.get(stem)
    digest = md5_hex(raw)
    mixed_up = [other for other, spec in IDX_DATASETS.items()
                if other != name and spec.raw_md5.get(stem) == digest]
    if mixed_up:  # the same file names, so easily confused: MNIST's files read as Fashion's
        raise ValueError(f"{path}: is the {mixed_up[0]} file {stem}, not {name}'s; name a "
                         f"folder that holds {name}'s files")
    if expected is not None and digest != expected:
        raise ValueError(
            f"{path}: checksum mismatch (MD5 of the content is not the published {name} one): "
            f"the file is corrupted or not the original; delete it and run "
            f"'contractive datasets download {name}', or put a good copy there"
        )


def load_idx_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
    verify: bool = True,
) -> Dataset:
    """An IDX dataset's 60,000 training and 10,000 test images as rows of floats in [0, 1].

    Missing files are downloaded into the cache when ``download`` (and
    ``$CONTRACTIVE_OFFLINE`` is unset); ``verify`` checks the published checksums.
    """
    try:
        paths = find_dataset_files(name, data_dir)
    except ValueError as missing:
        if not download or os.environ.get("CONTRACTIVE_OFFLINE"):
            raise
        from .download import download_dataset

        try:
            download_dataset(name)
        except ValueError as failed:
            raise ValueError(f"{missing}; download failed: {failed}") from None
        paths = find_dataset_files(name, data_dir)
    arrays = {}
    for key, path in paths.items():
        raw = read_idx_bytes(path)
        if verify:
            check_file(name, path, raw)
        arrays[key] = parse_idx(raw, path)
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
        name, flat(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
        flat(arrays["test_images"]), arrays["test_labels"].astype(np.int64),
        tuple(arrays["train_images"].shape[1:]),
    )


def mnist_search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the MNIST files, in order."""
    return search_path("mnist", data_dir)


def find_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the four MNIST files (see ``find_dataset_files``)."""
    return find_dataset_files("mnist", data_dir)


def load_mnist(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, verify: bool = True
) -> Dataset:
    """MNIST's 60,000 training and 10,000 test images as rows of 784 floats in [0, 1]."""
    return load_idx_dataset("mnist", data_dir, download=download, verify=verify)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Dataset:
    """A dataset by name: ``digits`` (bundled), ``mnist`` or ``fashion-mnist``."""
    if name == "digits":
        return load_digits()
    return load_idx_dataset(_spec(name).name, data_dir, download=download)
