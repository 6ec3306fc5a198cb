"""Datasets: the bundled digits, IDX files, the MNIST search path and the real MNIST files."""

from __future__ import annotations

import dataclasses
import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from contractive import data
from contractive.data import (
    MNIST_FILES,
    find_mnist,
    load_dataset,
    load_digits,
    load_mnist,
    mnist_search_path,
    read_idx,
)

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = (REPO.parent / "shared" / "data" / "mnist").resolve()


# -- helpers ------------------------------------------------------------------------------

_TYPE_CODES = {
    np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E,
}


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of ``a``: 0, 0, type, ndim, big-endian uint32 dims, big-endian data."""
    dt = a.dtype.newbyteorder(">") if a.dtype.itemsize > 1 else a.dtype
    header = bytes([0, 0, _TYPE_CODES[dt], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(dt).tobytes()


def write_idx(path: Path, a: np.ndarray, *, compress: bool = False) -> Path:
    blob = idx_bytes(a)
    path.write_bytes(gzip.compress(blob, mtime=0) if compress else blob)
    return path


def write_fake_mnist(folder: Path, *, n_train: int = 3, n_test: int = 2, side: int = 2,
                     compress: bool = False, fill: int = 0) -> Path:
    """The four MNIST files, tiny: images ``fill`` everywhere, labels 0..n-1."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images = np.full((n, side, side), fill, dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        write_idx(folder / (MNIST_FILES[f"{split}_images"] + suffix), images, compress=compress)
        write_idx(folder / (MNIST_FILES[f"{split}_labels"] + suffix), labels, compress=compress)
    return folder


@pytest.fixture
def clean_env(monkeypatch, tmp_path_factory):
    """No $CONTRACTIVE_DATA_DIR; $XDG_CACHE_HOME and $HOME point at empty folders."""
    monkeypatch.delenv("CONTRACTIVE_DATA_DIR", raising=False)
    cache = tmp_path_factory.mktemp("xdg_cache")
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HOME", str(home))
    return cache


# -- digits -------------------------------------------------------------------------------


def test_load_digits_shapes_and_values():
    ds = load_digits()
    assert ds.name == "digits"
    assert ds.image_shape == (8, 8)
    assert ds.X_train.shape == (1437, 64) and ds.X_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    for X in (ds.X_train, ds.X_test):
        assert X.dtype == np.float32
        assert X.min() >= 0.0 and X.max() <= 1.0
        assert X.max() == 1.0
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))


def test_load_digits_is_the_whole_dataset_split():
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    ds = load_digits()
    full = np.concatenate([ds.X_train, ds.X_test])
    ref = (bunch.data / 16.0).astype(np.float32)
    # same multiset of rows (and labels): nothing lost, nothing duplicated
    key = np.lexsort(full.T[::-1])
    key_ref = np.lexsort(ref.T[::-1])
    np.testing.assert_array_equal(full[key], ref[key_ref])
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([ds.y_train, ds.y_test])), np.bincount(bunch.target)
    )


def test_load_digits_deterministic_split():
    a, b = load_digits(), load_digits()
    for name in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = load_digits(random_state=1)
    assert not np.array_equal(a.y_test, c.y_test)


def test_load_digits_stratified():
    ds = load_digits()
    n = len(ds.y_train) + len(ds.y_test)
    overall = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10) / n
    test_counts = np.bincount(ds.y_test, minlength=10)
    # each class's test count is within one sample of its share of the test set
    np.testing.assert_array_less(np.abs(test_counts - overall * len(ds.y_test)), 1.0 + 1e-9)


def test_load_digits_test_size():
    ds = load_digits(test_size=0.5)
    assert len(ds.X_test) in (898, 899) and len(ds.X_train) + len(ds.X_test) == 1797


# -- IDX files ----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path, compress, dtype):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    p = write_idx(tmp_path / "a.idx", a, compress=compress)
    b = read_idx(p)
    assert b.shape == (2, 3, 5)
    assert b.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_mnist_like(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([5, 0, 4, 1], dtype=np.uint8)
    pi = write_idx(tmp_path / "images", images, compress=compress)
    pl = write_idx(tmp_path / "labels", labels, compress=compress)
    raw = pi.read_bytes() if not compress else gzip.decompress(pi.read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03"  # the header MNIST's files carry
    np.testing.assert_array_equal(read_idx(pi), images)
    np.testing.assert_array_equal(read_idx(str(pl)), labels)


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    p = tmp_path / "no-suffix"
    p.write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(p), a)
    q = write_idx(tmp_path / "raw.gz", a)  # raw bytes under a .gz name
    np.testing.assert_array_equal(read_idx(q), a)


def _good_idx() -> bytes:
    return idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))


BAD_IDX = {
    "empty": b"",
    "one-byte": b"\x00",
    "bad-magic-first-byte": b"\x01" + _good_idx()[1:],
    "bad-magic-second-byte": b"\x00\x01" + _good_idx()[2:],
    "unknown-type": b"\x00\x00\x07" + _good_idx()[3:],
    "zero-dims": b"\x00\x00\x08\x00",
    "truncated-header": _good_idx()[:9],
    "truncated-data": _good_idx()[:-1],
    "trailing-bytes": _good_idx() + b"\x00",
    "text": b"hello, this is not an IDX file\n",
    "gzip-truncated": gzip.compress(_good_idx() * 10, mtime=0)[:30],
    "gzip-of-garbage": gzip.compress(b"\x07" * 50, mtime=0),
    "gzip-of-truncated": gzip.compress(_good_idx()[:-3], mtime=0),
}


@pytest.mark.parametrize("case", list(BAD_IDX))
def test_read_idx_rejects_bad_files(tmp_path, case):
    p = tmp_path / f"{case}-idx3-ubyte"
    p.write_bytes(BAD_IDX[case])
    with pytest.raises(ValueError, match=re.escape(str(p))):
        read_idx(p)


def test_read_idx_corrupt_gzip_stream(tmp_path):
    """A flipped byte inside the deflate stream (zlib.error from gzip.decompress) is a
    corrupt file too: one ValueError naming it."""
    blob = bytearray(gzip.compress(_good_idx() * 50, mtime=0))
    blob[12] ^= 0xFF
    p = tmp_path / "corrupt.gz"
    p.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=re.escape(str(p))):
        read_idx(p)


def test_read_idx_missing_file_and_folder(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "nope"))):
        read_idx(tmp_path / "nope")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        read_idx(tmp_path)


def test_read_idx_messages_say_what_is_wrong(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(_good_idx()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_idx(p)
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)


# -- finding MNIST ------------------------------------------------------------------------


def _folder_of(found: dict[str, Path]) -> Path:
    folders = {p.parent for p in found.values()}
    assert len(folders) == 1
    return folders.pop()


def test_find_mnist_explicit_dir(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "explicit")
    found = find_mnist(d)
    assert set(found) == set(MNIST_FILES)
    for key, stem in MNIST_FILES.items():
        assert found[key] == d / stem
    assert _folder_of(find_mnist(str(d))) == d


def test_find_mnist_explicit_dir_mnist_subfolder(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "data" / "mnist")
    assert _folder_of(find_mnist(tmp_path / "data")) == d


def test_find_mnist_gzip_files(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "gz", compress=True)
    found = find_mnist(d)
    for key, stem in MNIST_FILES.items():
        assert found[key] == d / (stem + ".gz")


def test_find_mnist_prefers_raw_over_gzip(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "both", compress=True)
    write_fake_mnist(d)
    assert all(p.suffix != ".gz" for p in find_mnist(d).values())


def test_find_mnist_order_explicit_then_env_then_cache(tmp_path, monkeypatch, clean_env):
    explicit = write_fake_mnist(tmp_path / "explicit")
    env = write_fake_mnist(tmp_path / "env")
    cache = write_fake_mnist(clean_env / "contractive" / "mnist")
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(env))
    assert _folder_of(find_mnist(explicit)) == explicit
    assert _folder_of(find_mnist()) == env
    monkeypatch.delenv("CONTRACTIVE_DATA_DIR")
    assert _folder_of(find_mnist()) == cache
    # an explicit folder without the files falls through to the next one
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(env))
    assert _folder_of(find_mnist(empty)) == env


def test_find_mnist_env_mnist_subfolder(tmp_path, monkeypatch, clean_env):
    d = write_fake_mnist(tmp_path / "datasets" / "mnist")
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(tmp_path / "datasets"))
    assert _folder_of(find_mnist()) == d


def test_find_mnist_empty_env_is_ignored(tmp_path, monkeypatch, clean_env):
    cache = write_fake_mnist(clean_env / "contractive" / "mnist")
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", "")
    assert _folder_of(find_mnist()) == cache


def test_find_mnist_home_cache_without_xdg(tmp_path, monkeypatch, clean_env):
    home = tmp_path / "home"
    d = write_fake_mnist(home / ".cache" / "contractive" / "mnist")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(home))
    assert _folder_of(find_mnist()) == d


def test_find_mnist_skips_incomplete_folders(tmp_path, monkeypatch, clean_env):
    partial = write_fake_mnist(tmp_path / "partial")
    (partial / MNIST_FILES["test_labels"]).unlink()
    full = write_fake_mnist(tmp_path / "full")
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(full))
    assert _folder_of(find_mnist(partial)) == full


def test_mnist_search_path_order(tmp_path, monkeypatch, clean_env):
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(tmp_path / "env"))
    assert mnist_search_path(tmp_path / "x") == [
        tmp_path / "x", tmp_path / "x" / "mnist", tmp_path / "env", tmp_path / "env" / "mnist",
        clean_env / "contractive" / "mnist",
    ]


def test_find_mnist_missing_names_files_and_folders(tmp_path, monkeypatch, clean_env):
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    env = tmp_path / "env"
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(env))
    with pytest.raises(ValueError) as info:
        find_mnist(explicit)
    msg = str(info.value)
    for stem in MNIST_FILES.values():
        assert stem in msg
    for folder in (explicit, explicit / "mnist", env, env / "mnist",
                   clean_env / "contractive" / "mnist"):
        assert str(folder) in msg
    with pytest.raises(ValueError, match="MNIST not found"):
        load_mnist(explicit, download=False)


# -- loading MNIST-shaped files -----------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_load_mnist_fake(tmp_path, clean_env, compress):
    d = write_fake_mnist(tmp_path / "m", n_train=3, n_test=2, side=4, compress=compress,
                         fill=51)
    ds = load_mnist(d, download=False, verify=False)
    assert ds.name == "mnist" and ds.image_shape == (4, 4)
    assert ds.X_train.shape == (3, 16) and ds.X_test.shape == (2, 16)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.X_train, 0.2)
    np.testing.assert_array_equal(ds.y_train, [0, 1, 2])
    np.testing.assert_array_equal(ds.y_test, [0, 1])


def test_load_mnist_full_range(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "m", n_train=2, n_test=1, fill=255)
    write_idx(d / MNIST_FILES["train_images"], np.array([[[0, 255]], [[128, 1]]], np.uint8))
    ds = load_mnist(d, download=False, verify=False)
    np.testing.assert_allclose(ds.X_train, [[0, 1], [128 / 255, 1 / 255]], rtol=1e-6)
    assert ds.X_test.max() == 1.0


def test_load_mnist_mismatched_counts(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "m", n_train=3)
    write_idx(d / MNIST_FILES["train_labels"], np.arange(4, dtype=np.uint8))
    with pytest.raises(ValueError, match=re.escape(str(d / MNIST_FILES["train_images"]))):
        load_mnist(d, download=False, verify=False)


def test_load_mnist_corrupt_file_is_named(tmp_path, clean_env):
    d = write_fake_mnist(tmp_path / "m")
    bad = d / MNIST_FILES["test_images"]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_mnist(d, download=False, verify=False)


# -- load_dataset -------------------------------------------------------------------------


def test_load_dataset_unknown_name_lists_valid():
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10")
    msg = str(info.value)
    assert "cifar10" in msg
    for name in data.DATASETS:
        assert name in msg


def accept_files(monkeypatch, name: str, folder: Path) -> None:
    """Make the checksums of dataset ``name`` those of the (fake) files in ``folder``."""
    raw_md5 = {}
    for stem in data.IDX_DATASETS[name].files:
        path = folder / stem if (folder / stem).is_file() else folder / f"{stem}.gz"
        raw_md5[stem] = data.md5_hex(data.read_idx_bytes(path))
    monkeypatch.setitem(data.IDX_DATASETS, name,
                        dataclasses.replace(data.IDX_DATASETS[name], raw_md5=raw_md5))


def test_load_dataset_by_name(tmp_path, clean_env, monkeypatch):
    assert load_dataset("digits").X_train.shape == (1437, 64)
    d = write_fake_mnist(tmp_path / "m")
    accept_files(monkeypatch, "mnist", d)
    assert load_dataset("mnist", d).X_train.shape == (3, 4)
    with pytest.raises(ValueError, match="MNIST not found"):
        load_dataset("mnist", tmp_path / "nothing")


def test_load_dataset_fashion_mnist_files(tmp_path, clean_env):
    """Fashion-MNIST publishes no checksums of the raw content: files are checked
    structurally only, so tiny fake ones load; its search path has no bare env folder."""
    d = write_fake_mnist(tmp_path / "fm", compress=True)
    ds = load_dataset("fashion-mnist", d)
    assert ds.name == "fashion-mnist" and ds.X_train.shape == (3, 4)
    assert data.search_path("fashion-mnist", d) == [
        d, d / "fashion-mnist", clean_env / "contractive" / "fashion-mnist"]


def test_mnist_files_are_not_taken_for_fashion_mnist(tmp_path, clean_env, monkeypatch):
    """The two share file names: a file whose content is MNIST's (by its published MD5) is
    refused as Fashion-MNIST, naming it."""
    d = write_fake_mnist(tmp_path / "m", compress=True)
    raw = data.read_idx_bytes(d / "train-labels-idx1-ubyte.gz")
    mnist = data.IDX_DATASETS["mnist"]
    monkeypatch.setitem(mnist.raw_md5, "train-labels-idx1-ubyte", data.md5_hex(raw))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: is the mnist file "
                       "train-labels-idx1-ubyte, not fashion-mnist's"):
        load_dataset("fashion-mnist", d)


# -- checksums ----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_load_mnist_verifies_checksums_by_default(tmp_path, clean_env, compress):
    """Well-formed files that are not the published MNIST: one error naming the file."""
    d = write_fake_mnist(tmp_path / "m", compress=compress)
    with pytest.raises(ValueError, match="checksum mismatch") as info:
        load_mnist(d, download=False)
    msg = str(info.value)
    assert str(d) in msg
    assert any(stem in msg for stem in MNIST_FILES.values())
    assert "\n" not in msg
    assert load_mnist(d, download=False, verify=False).X_train.shape == (3, 4)


def test_checksum_accepts_matching_content_compressed_or_not(tmp_path, clean_env, monkeypatch):
    raw = write_fake_mnist(tmp_path / "raw")
    accept_files(monkeypatch, "mnist", raw)
    gz = write_fake_mnist(tmp_path / "gz", compress=True)
    # recompress one file differently: same content, different archive bytes
    p = gz / (MNIST_FILES["train_images"] + ".gz")
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1, mtime=12345))
    a, b = load_mnist(raw, download=False), load_mnist(gz, download=False)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    # one changed pixel: same size and header, wrong content
    q = raw / MNIST_FILES["test_images"]
    blob = bytearray(q.read_bytes())
    blob[-1] ^= 0x01
    q.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=re.escape(str(q)) + ".*checksum mismatch"):
        load_mnist(raw, download=False)


# -- the real MNIST files -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not available: {MNIST_DIR} does not exist")
    return load_mnist(MNIST_DIR)


def test_real_mnist(real_mnist):
    ds = real_mnist
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.image_shape == (28, 28)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for X in (ds.X_train, ds.X_test):
        assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(ds.y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(ds.y_test[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(np.unique(ds.y_train), np.arange(10))
    # well-known MNIST facts: class 1 is the largest, class 5 the smallest in training
    counts = np.bincount(ds.y_train)
    assert counts.argmax() == 1 and counts.argmin() == 5 and counts.sum() == 60000


def test_parse_idx_wants_bytes():
    with pytest.raises(TypeError, match="raw must be bytes, not str"):
        data.parse_idx("abc")
