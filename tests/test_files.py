"""User data files (``contractive.files``): every supported format read back correctly, and
every bad input one ``ValueError`` naming the file (and the row and column where they apply:
rows as a text editor counts lines, header included; columns by name under a header)."""

from __future__ import annotations

import gzip
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from contractive.files import TableData, read_data, write_array


def _err(path: Path | str, *parts: str):
    """``pytest.raises(ValueError)`` whose message names ``path`` and contains ``parts``."""
    pattern = re.escape(str(path)) + "".join(".*" + re.escape(p) for p in parts)
    return pytest.raises(ValueError, match=pattern)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _is_memory_mapped(a: np.ndarray) -> bool:
    """True when ``a`` is (a view of) a ``np.memmap``: its data were not copied into RAM."""
    while a is not None:
        if isinstance(a, np.memmap) or getattr(a, "filename", None):
            return True
        a = a.base if isinstance(a.base, np.ndarray) else None
    return False


# -- .npy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_2d_is_memory_mapped(tmp_path, dtype):
    a = np.random.default_rng(0).random((50, 7)).astype(dtype)
    p = tmp_path / "a.npy"
    np.save(p, a)
    t = read_data(p)
    assert isinstance(t, TableData) and t.path == str(p)
    assert t.X.shape == (50, 7) and t.X.dtype == dtype
    np.testing.assert_array_equal(t.X, a)
    assert t.y is None and t.feature_names is None and t.image_shape is None
    assert _is_memory_mapped(t.X)
    assert not t.X.flags.writeable  # opened read-only: the file cannot be changed through it


def test_npy_3d_image_stack_flattened(tmp_path):
    a = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)
    p = tmp_path / "images.npy"
    np.save(p, a)
    t = read_data(p)
    assert t.X.shape == (4, 15) and t.image_shape == (3, 5)
    np.testing.assert_array_equal(t.X, a.reshape(4, 15))
    assert _is_memory_mapped(t.X)  # reshaping a C-contiguous memmap copies nothing


def test_npy_integers_become_floats(tmp_path):
    p = tmp_path / "ints.npy"
    np.save(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    t = read_data(p)
    assert t.X.dtype.kind == "f"
    np.testing.assert_array_equal(t.X, [[0, 1, 2], [3, 4, 5]])


def test_npy_nan_and_inf_named_by_row_and_column(tmp_path):
    a = np.zeros((5, 3))
    a[3, 1] = np.nan
    p = tmp_path / "nan.npy"
    np.save(p, a)
    with _err(p, "row 4", "column 2", "finite"):
        read_data(p)
    a[3, 1] = 0
    a[0, 2] = -np.inf
    np.save(p, a)
    with _err(p, "row 1", "column 3", "finite"):
        read_data(p)


def test_values_beyond_float32_named_by_row_and_column(tmp_path):
    a = np.zeros((4, 3))
    a[2, 0] = -1e300
    p = tmp_path / "huge.npy"
    np.save(p, a)
    with _err(p, "row 3", "column 1", "float32"):
        read_data(p)
    c = _write(tmp_path / "huge.csv", "a,b\n1,2\n3,1e39\n")
    with _err(c, "row 3", "column 'b'", "float32"):
        read_data(c)


def test_a_label_column_named_twice_is_refused(tmp_path):
    c = _write(tmp_path / "dup.csv", "a,label,c,label\n1,0,2,1\n3,1,4,0\n")
    with _err(c, "label column 'label' 2 times"):
        read_data(c, label_column="label")
    assert read_data(c, label_column="a").X.shape == (2, 3)  # other repeats are features
    assert read_data(c).X.shape == (2, 4)


BAD_NPY = {
    "1-d": (lambda p: np.save(p, np.zeros(5)), "1-D"),
    "object": (lambda p: np.save(p, np.array([{"a": 1}, None], dtype=object)), ""),
    "strings": (lambda p: np.save(p, np.array([["a", "b"]])), "dtype"),
    "complex": (lambda p: np.save(p, np.ones((2, 2), dtype=complex)), "dtype"),
    "0-rows": (lambda p: np.save(p, np.zeros((0, 3))), "no samples"),
    "0-columns": (lambda p: np.save(p, np.zeros((3, 0))), "no features"),
    "truncated": (lambda p: (np.save(p, np.ones((20, 5))),
                             p.write_bytes(p.read_bytes()[:-17])), ""),
    "header-only": (lambda p: (np.save(p, np.ones((20, 5))),
                               p.write_bytes(p.read_bytes()[:60])), ""),
    "garbage": (lambda p: p.write_bytes(b"this is not an npy file at all\n" * 3),
                "no .npy header"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
}


@pytest.mark.parametrize("case", list(BAD_NPY))
def test_npy_bad_inputs(tmp_path, case):
    make, words = BAD_NPY[case]
    p = tmp_path / f"{case}.npy"
    make(p)
    with _err(p, words) as info:
        read_data(p)
    assert "\n" not in str(info.value)


def test_object_npy_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    def boom(*args, **kwargs):  # pragma: no cover - must not run
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    p = tmp_path / "obj.npy"
    np.save(p, np.array([[1, "a"]], dtype=object))
    with _err(p, "Python objects") as info:
        read_data(p)
    assert "allow_pickle" not in str(info.value)  # numpy's advice to unpickle is not passed on


# -- .npz -----------------------------------------------------------------------------------


def test_npz_X_and_y(tmp_path):
    X = np.random.default_rng(0).random((6, 4))
    y = np.array([0, 1, 0, 1, 2, 2])
    p = tmp_path / "d.npz"
    np.savez(p, X=X, y=y)
    t = read_data(p)
    np.testing.assert_array_equal(t.X, X)
    np.testing.assert_array_equal(t.y, y)


@pytest.mark.parametrize("xkey,ykey", [("data", "target"), ("x", "labels")])
def test_npz_other_key_names(tmp_path, xkey, ykey):
    p = tmp_path / "d.npz"
    np.savez_compressed(p, **{xkey: np.ones((3, 2)), ykey: np.array([1, 2, 3])})
    t = read_data(p)
    assert t.X.shape == (3, 2)
    np.testing.assert_array_equal(t.y, [1, 2, 3])


def test_npz_single_array_any_name(tmp_path):
    p = tmp_path / "single.npz"
    np.savez(p, np.arange(12.0).reshape(4, 3))
    t = read_data(p)
    assert t.X.shape == (4, 3) and t.y is None


def test_npz_image_stack_and_named_label_array(tmp_path):
    p = tmp_path / "imgs.npz"
    np.savez(p, X=np.zeros((5, 4, 4)), digit=np.arange(5))
    t = read_data(p, label_column="digit")
    assert t.X.shape == (5, 16) and t.image_shape == (4, 4)
    np.testing.assert_array_equal(t.y, np.arange(5))
    with _err(p, "'nope'"):
        read_data(p, label_column="nope")


def test_npz_labels_of_wrong_length(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X=np.zeros((3, 2)), y=np.zeros(4))
    with _err(p, "labels", "(4,)", "3 rows"):
        read_data(p)
    np.savez(p, X=np.zeros((3, 2)), y=np.zeros((3, 2)))
    with _err(p, "labels"):
        read_data(p)


def test_npz_ambiguous_arrays(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with _err(p, "'a'", "'b'"):
        read_data(p)


@pytest.mark.parametrize("case", ["corrupted", "truncated", "not-zip", "empty-archive", "nan"])
def test_npz_bad_inputs(tmp_path, case):
    p = tmp_path / f"{case}.npz"
    if case == "corrupted":
        np.savez_compressed(p, X=np.random.default_rng(0).random((100, 10)))
        blob = bytearray(p.read_bytes())
        for i in range(200, 260):
            blob[i] ^= 0xA5
        p.write_bytes(bytes(blob))
    elif case == "truncated":
        np.savez(p, X=np.ones((100, 10)))
        p.write_bytes(p.read_bytes()[:500])
    elif case == "not-zip":
        p.write_bytes(b"PK\x03\x04 but then garbage")
    elif case == "empty-archive":
        np.savez(p)
    else:
        a = np.ones((4, 3))
        a[2, 0] = np.nan
        np.savez(p, X=a)
    with _err(p) as info:
        read_data(p)
    assert "\n" not in str(info.value)
    if case == "nan":
        assert "row 3" in str(info.value) and "column 1" in str(info.value)


# -- .csv / .tsv ------------------------------------------------------------------------------


def test_csv_with_header(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,c\n1,2,3\n4.5,-6e-1,7\n")
    t = read_data(p)
    assert t.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(t.X, [[1, 2, 3], [4.5, -0.6, 7]])
    assert t.y is None and t.X.dtype == np.float64


def test_csv_without_header(tmp_path):
    p = _write(tmp_path / "d.csv", "1,2,3\n4,5,6\n")
    t = read_data(p)
    assert t.feature_names is None
    np.testing.assert_array_equal(t.X, [[1, 2, 3], [4, 5, 6]])


def test_tsv_and_whitespace_bom_crlf_blank_lines(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_bytes("\ufeffx\t y \n 1\t2 \r\n\r\n3\t4\r\n\n".encode())
    t = read_data(p)
    assert t.feature_names == ["x", "y"]
    np.testing.assert_array_equal(t.X, [[1, 2], [3, 4]])


@pytest.mark.parametrize("label", ["label", 1, "1", -2, "-2"])
def test_csv_label_column_by_name_and_index(tmp_path, label):
    p = _write(tmp_path / "d.csv", "a,label,b\n1,0,2\n3,1,4\n5,1,6\n")
    t = read_data(p, label_column=label)
    np.testing.assert_array_equal(t.X, [[1, 2], [3, 4], [5, 6]])
    assert t.feature_names == ["a", "b"]
    assert t.y.dtype == np.int64
    np.testing.assert_array_equal(t.y, [0, 1, 1])


def test_csv_label_column_last_by_negative_index_no_header(tmp_path):
    p = _write(tmp_path / "d.csv", "1,2,7.0\n3,4,8\n")
    t = read_data(p, label_column=-1)
    np.testing.assert_array_equal(t.X, [[1, 2], [3, 4]])
    assert t.y.dtype == np.int64  # 7.0 and 8: whole numbers are integer labels
    np.testing.assert_array_equal(t.y, [7, 8])


def test_csv_string_and_fractional_labels(tmp_path):
    p = _write(tmp_path / "d.tsv", "f1\tf2\tkind\n1\t2\tcat\n3\t4\tdog\n5\t6\tcat\n")
    t = read_data(p, label_column="kind")
    assert t.y.dtype.kind == "U"
    assert list(t.y) == ["cat", "dog", "cat"]
    p = _write(tmp_path / "f.csv", "1,0.5\n2,1.5\n")
    t = read_data(p, label_column=1)
    assert t.y.dtype.kind == "f"
    np.testing.assert_array_equal(t.y, [0.5, 1.5])


def test_csv_label_text_column_allows_non_numeric_cells(tmp_path):
    """A non-numeric label column does not make a row a header or a bad row."""
    p = _write(tmp_path / "d.csv", "x,y,name\n1,2,a\n3,4,b\n")
    t = read_data(p, label_column="name")
    assert t.X.shape == (2, 2)


BAD_TEXT = {
    # name: (content, label_column, fragments the message must contain, in order)
    "nan": ("a,b\n1,2\n3,nan\n", None, ["row 3", "column 'b'", "finite"]),
    "inf": ("a,b\n1,2\n-inf,4\n", None, ["row 3", "column 'a'", "finite"]),
    "inf-no-header": ("1,2\n3,4\n5,inf\n", None, ["row 3", "column 2", "finite"]),
    "abc": ("a,b,c\n1,2,3\n4,abc,6\n", None, ["row 3", "column 'b'", "'abc'", "not a number"]),
    "abc-no-header": ("1,2,3\n4,5,6\n7,8,abc\n", None, ["row 3", "column 3", "'abc'"]),
    "empty-cell": ("a,b\n1,2\n3,\n", None, ["row 3", "column 'b'", "empty"]),
    "blank-cell": ("1,2\n 3 ,  \n", None, ["row 2", "column 2", "empty"]),
    "ragged-short": ("a,b,c\n1,2,3\n4,5\n", None, ["row 3", "2 columns", "expected 3"]),
    "ragged-long": ("1,2\n3,4\n5,6,7\n", None, ["row 3", "3 columns", "expected 2"]),
    "row-after-blank-lines": ("a,b\n\n1,2\n\n\n3,x\n", None, ["row 6", "column 'b'", "'x'"]),
    "empty": ("", None, ["empty"]),
    "blank-lines-only": ("\n\n  \n", None, ["empty"]),
    "header-only": ("a,b,c\n", None, ["header", "no data"]),
    "label-missing": ("a,b\n1,2\n", "label", ["'label'"]),
    "label-missing-no-header": ("1,2\n3,4\n", "label", ["'label'", "no header"]),
    "label-out-of-range": ("1,2\n3,4\n", 2, ["label column 2", "out of range"]),
    "label-out-of-range-negative": ("1,2\n3,4\n", -3, ["label column -3", "out of range"]),
    "label-only-column": ("1\n2\n", 0, ["label column", "no feature"]),
}


@pytest.mark.parametrize("ext", [".csv", ".tsv"])
@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_text_bad_inputs(tmp_path, case, ext):
    text, label, parts = BAD_TEXT[case]
    if ext == ".tsv":
        text = text.replace(",", "\t")
    p = _write(tmp_path / f"{case}{ext}", text)
    with _err(p, *parts) as info:
        read_data(p, label_column=label)
    assert "\n" not in str(info.value)


def test_text_not_utf8(tmp_path):
    p = tmp_path / "binary.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 10)
    with _err(p):
        read_data(p)


def test_csv_first_row_with_an_empty_cell_is_not_a_header(tmp_path):
    """A numeric first row with an empty cell is a data row with a missing value, not a
    header named '1', '2', '' (which would silently drop the row)."""
    p = _write(tmp_path / "d.csv", "1,2,\n3,4,5\n")
    with _err(p, "row 1", "column 3", "empty"):
        read_data(p)


def test_csv_empty_label_cell_is_an_error(tmp_path):
    """A missing label is reported like a missing feature, not read as the label ''."""
    p = _write(tmp_path / "d.csv", "a,b,label\n1,2,0\n3,4,\n5,6,1\n")
    with _err(p, "row 3", "'label'", "empty"):
        read_data(p, label_column="label")


# -- IDX --------------------------------------------------------------------------------------


def _idx(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.uint8)
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz", "imgs.idx"])
def test_idx_files(tmp_path, name):
    a = np.arange(3 * 4 * 2, dtype=np.uint8).reshape(3, 4, 2)
    blob = _idx(a)
    p = tmp_path / name
    p.write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
    t = read_data(p)
    assert t.X.shape == (3, 8) and t.image_shape == (4, 2) and t.X.dtype.kind == "f"
    np.testing.assert_array_equal(t.X, a.reshape(3, 8))


def test_idx_bad_inputs(tmp_path):
    p = tmp_path / "labels-idx1-ubyte"
    p.write_bytes(_idx(np.arange(5)))
    with _err(p, "1-D"):
        read_data(p)
    q = tmp_path / "trunc-idx3-ubyte"
    q.write_bytes(_idx(np.zeros((2, 3, 3)))[:-1])
    with _err(q, "truncated"):
        read_data(q)


# -- .parquet ---------------------------------------------------------------------------------


def test_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    p = tmp_path / "d.parquet"
    p.write_bytes(b"PAR1 not really PAR1")
    with _err(p, "pyarrow") as info:
        read_data(p)
    assert "\n" not in str(info.value)


def _parquet(path: Path, columns: dict) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_round_trip(tmp_path):
    p = _parquet(tmp_path / "d.parquet", {
        "a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "label": ["x", "y", "x"]})
    t = read_data(p, label_column="label")
    np.testing.assert_array_equal(t.X, [[1, 4], [2, 5], [3, 6]])
    assert t.feature_names == ["a", "b"]
    assert list(t.y) == ["x", "y", "x"]
    t = read_data(p, label_column=-1)
    assert t.X.shape == (3, 2)


def test_parquet_bad_inputs(tmp_path):
    p = _parquet(tmp_path / "text.parquet", {"a": [1.0, 2.0], "name": ["x", "y"]})
    with _err(p, "'name'", "numbers"):
        read_data(p)
    q = _parquet(tmp_path / "nan.parquet", {"a": [1.0, 2.0], "b": [0.0, float("nan")]})
    with _err(q, "row 2", "'b'", "finite"):
        read_data(q)
    r = _parquet(tmp_path / "label.parquet", {"a": [1.0, 2.0]})
    with _err(r, "'label'"):
        read_data(r, label_column="label")
    s = tmp_path / "garbage.parquet"
    s.write_bytes(b"not a parquet file" * 10)
    with _err(s, "parquet"):
        read_data(s)


# -- files that are not data files ------------------------------------------------------------


def test_missing_file_folder_unknown_extension(tmp_path):
    with _err(tmp_path / "nope.csv", "no such file"):
        read_data(tmp_path / "nope.csv")
    (tmp_path / "folder.npy").mkdir()
    with _err(tmp_path / "folder.npy", "folder"):
        read_data(tmp_path / "folder.npy")
    p = _write(tmp_path / "data.xlsx", "1,2\n")
    with _err(p, "unknown data format", ".csv"):
        read_data(p)
    q = _write(tmp_path / "noext", "1,2\n")
    with _err(q, "unknown data format"):
        read_data(q)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".npy", ".npz", ".parquet", "-idx3-ubyte"])
def test_empty_file_of_every_format(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.write_bytes(b"")
    with _err(p, "empty"):
        read_data(p)


def test_compressed_text_is_read_or_refused_clearly(tmp_path):
    """``.csv.gz`` is recognised by its name: it is read, or refused naming the file."""
    p = tmp_path / "d.csv.gz"
    p.write_bytes(gzip.compress(b"1,2\n3,4\n"))
    try:
        t = read_data(p)
    except ValueError as exc:
        assert str(p) in str(exc) and "\n" not in str(exc)
    else:
        np.testing.assert_array_equal(t.X, [[1, 2], [3, 4]])


@pytest.mark.parametrize("ext", [".npy", "-idx3-ubyte"])
def test_label_column_on_a_format_without_columns_is_not_ignored(tmp_path, ext):
    """--label-column on a format that cannot hold one is refused (or honoured): a flag the
    user gave is never silently dropped, leaving the labels among the features."""
    p = tmp_path / f"d{ext}"
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    if ext == ".npy":
        np.save(p, a)
    else:
        p.write_bytes(_idx(a))
    try:
        t = read_data(p, label_column=0)
    except ValueError as exc:
        assert str(p) in str(exc) and "label" in str(exc)
    else:
        assert t.y is not None and t.X.shape == (3, 3)


# -- write_array ------------------------------------------------------------------------------


def _no_temp_files(folder: Path) -> None:
    leftovers = [n for n in os.listdir(folder) if n.startswith(".") or n.endswith(".tmp")]
    assert leftovers == []


def test_write_npy_round_trip(tmp_path):
    X = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    write_array(tmp_path / "out.npy", X)
    b = np.load(tmp_path / "out.npy")
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, X)
    write_array(tmp_path / "f.npy", np.asfortranarray(X))
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), X)
    _no_temp_files(tmp_path)


@pytest.mark.parametrize("ext", [".csv", ".tsv"])
def test_write_text_round_trip_with_header(tmp_path, ext):
    X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    p = tmp_path / f"out{ext}"
    write_array(p, X, header=["h0", "h1", "h2"])
    lines = p.read_text().splitlines()
    delim = "," if ext == ".csv" else "\t"
    assert lines[0] == delim.join(["h0", "h1", "h2"])
    assert len(lines) == 7 and all(len(ln.split(delim)) == 3 for ln in lines)
    t = read_data(p)
    assert t.feature_names == ["h0", "h1", "h2"]
    np.testing.assert_array_equal(t.X.astype(np.float32), X)  # %.9g: float32 round-trips
    write_array(p, X)
    t = read_data(p)
    assert t.feature_names is None and t.X.shape == (6, 3)
    _no_temp_files(tmp_path)


def test_write_float64_text_is_close(tmp_path):
    X = np.random.default_rng(1).normal(size=(4, 2))
    write_array(tmp_path / "o.csv", X)
    np.testing.assert_allclose(read_data(tmp_path / "o.csv").X, X, rtol=1e-8)


def test_write_replaces_existing_file(tmp_path):
    p = tmp_path / "o.npy"
    p.write_bytes(b"old")
    write_array(p, np.ones((2, 2)))
    np.testing.assert_array_equal(np.load(p), np.ones((2, 2)))
    _no_temp_files(tmp_path)


def test_write_errors_leave_nothing(tmp_path):
    with _err(tmp_path / "o.txt", "unknown output format", ".npy"):
        write_array(tmp_path / "o.txt", np.ones((2, 2)))
    with _err(tmp_path / "noext", "unknown output format"):
        write_array(tmp_path / "noext", np.ones((2, 2)))
    missing = tmp_path / "no" / "such" / "o.npy"
    with _err(missing, "does not exist"):
        write_array(missing, np.ones((2, 2)))
    assert os.listdir(tmp_path) == []


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    """A failure in the middle of the write leaves the old file and no temporary file."""
    p = tmp_path / "o.npy"
    write_array(p, np.zeros((2, 2)))
    before = p.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_array(p, np.ones((3, 3)))
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["o.npy"]


@pytest.mark.parametrize("X, header, words", [
    (np.ones((2, 2)), ["a"], "header must be a list of 2"),
    (np.ones((2, 2)), "ab", "header must be a list of 2"),
    (np.array([[1.0, np.nan]]), None, "NaN or inf"),
    (np.array([["a", "b"]]), None, "2-D numeric array"),
    (np.array([[None, 1]], dtype=object), None, "2-D numeric array"),
    (np.ones(3), None, "2-D numeric array"),
])
@pytest.mark.parametrize("ext", [".csv", ".npy"])
def test_write_array_refuses_what_read_data_would_refuse(tmp_path, X, header, words, ext):
    with pytest.raises(ValueError, match=words):
        write_array(tmp_path / f"out{ext}", X, header=header)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [1.5, True, None.__class__])
def test_label_column_must_be_a_name_or_an_index(tmp_path, bad):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(TypeError, match="label_column=.* must be a column name or an integer"):
        read_data(path, label_column=bad)
