"""Run folders and the data a command names (``contractive.runs``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contractive.runs import (
    CONFIG_NAME,
    HELDOUT_NAME,
    check_same_data,
    file_digest,
    file_fingerprint,
    image_shape_for,
    is_dataset_name,
    load_data,
    read_heldout,
    read_run_config,
    write_json,
)


@pytest.fixture
def csv_file(tmp_path):
    """20 rows: features (i, 2i, -i) and a label column i % 3."""
    p = tmp_path / "d.csv"
    rows = ["a,b,label,c"] + [f"{i},{2 * i},{i % 3},{-i}" for i in range(20)]
    p.write_text("\n".join(rows) + "\n")
    return p


def test_dataset_names():
    assert all(is_dataset_name(n) for n in ("digits", "mnist", "fashion-mnist"))
    assert not is_dataset_name("digits.csv") and not is_dataset_name("cifar10")


def test_load_dataset_by_name():
    d = load_data("digits")
    assert d.X.shape == (1437, 64) and d.X_heldout.shape == (360, 64)
    assert d.y.shape == (1437,) and d.y_heldout.shape == (360,)
    assert d.image_shape == (8, 8)
    assert d.source == {"kind": "dataset", "name": "digits", "data_dir": None}
    assert d.heldout_rows is None


def test_load_file_without_held_out_rows(csv_file):
    d = load_data(str(csv_file), label_column="label")
    assert d.X.shape == (20, 3) and d.X_heldout is None and d.y_heldout is None
    np.testing.assert_array_equal(d.y, np.arange(20) % 3)
    assert d.feature_names == ["a", "b", "c"]
    assert d.source["kind"] == "file" and d.source["path"] == str(csv_file.resolve())
    assert d.source["label_column"] == "label" and d.source["test_fraction"] == 0.0


def test_held_out_rows_are_seeded_and_disjoint(csv_file):
    d = load_data(str(csv_file), label_column="label", test_fraction=0.25, seed=3)
    assert d.X.shape == (15, 3) and d.X_heldout.shape == (5, 3)
    rows = d.heldout_rows
    assert rows.dtype.kind == "i" and list(rows) == sorted(rows) and len(set(rows)) == 5
    # the held-out rows are those rows of the file; the rest are the training rows, in order
    np.testing.assert_array_equal(d.X_heldout[:, 0], rows)
    np.testing.assert_array_equal(d.y_heldout, rows % 3)
    train_rows = np.setdiff1d(np.arange(20), rows)
    np.testing.assert_array_equal(d.X[:, 0], train_rows)
    np.testing.assert_array_equal(d.y, train_rows % 3)
    # deterministic by seed
    again = load_data(str(csv_file), label_column="label", test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.heldout_rows, rows)
    others = {tuple(load_data(str(csv_file), test_fraction=0.25, seed=s).heldout_rows)
              for s in range(4, 9)}
    assert len(others | {tuple(rows)}) > 1


def test_given_held_out_rows_reproduce_the_split(csv_file):
    d = load_data(str(csv_file), label_column="label", test_fraction=0.3, seed=0)
    again = load_data(str(csv_file), label_column="label", heldout=d.heldout_rows)
    for name in ("X", "y", "X_heldout", "y_heldout", "heldout_rows"):
        np.testing.assert_array_equal(getattr(again, name), getattr(d, name))
    # the rows given win over a fraction and a seed
    other = load_data(str(csv_file), heldout=np.array([0, 19]), test_fraction=0.5, seed=9)
    assert other.X_heldout.shape == (2, 4)
    np.testing.assert_array_equal(other.X_heldout[:, 0], [0, 19])


def test_held_out_rows_beyond_the_file(csv_file):
    with pytest.raises(ValueError, match=str(csv_file) + ".*20 rows"):
        load_data(str(csv_file), heldout=np.array([3, 20]))


def test_npy_file_keeps_image_shape_and_splits(tmp_path):
    p = tmp_path / "imgs.npy"
    np.save(p, np.arange(10 * 4 * 4, dtype=np.float32).reshape(10, 4, 4))
    d = load_data(str(p), test_fraction=0.2, seed=0)
    assert d.image_shape == (4, 4)
    assert d.X.shape == (8, 16) and d.X_heldout.shape == (2, 16)
    assert d.y is None and d.y_heldout is None


@pytest.mark.parametrize("fraction", [0.01, 0.99, 1.0, 1.5])
def test_bad_test_fraction(csv_file, fraction):
    with pytest.raises(ValueError, match="test.fraction") as info:
        load_data(str(csv_file), test_fraction=fraction)
    assert "20 rows" in str(info.value)


def test_neither_dataset_nor_file(tmp_path):
    with pytest.raises(ValueError, match="'cifar10'.*neither.*digits"):
        load_data("cifar10")
    with pytest.raises(ValueError, match="no such file"):
        load_data(str(tmp_path / "missing.csv"))


# -- run configs ----------------------------------------------------------------------------


def test_read_run_config(tmp_path):
    config = {"data": {"kind": "dataset", "name": "digits", "spec": "digits"},
              "params": {"n_components": 4}}
    write_json(tmp_path / CONFIG_NAME, config)
    assert read_run_config(tmp_path) == config
    assert read_run_config(str(tmp_path)) == config
    assert (tmp_path / CONFIG_NAME).read_text().endswith("\n")


def test_write_json_refuses_nan_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case,message", [
    ("missing-folder", "no such run folder"),
    ("no-config", "not a run folder"),
    ("bad-json", "unreadable run config"),
    ("binary", "unreadable run config"),
    ("a-list", "not a contractive run config"),
    ("no-params", "not a contractive run config"),
    ("config-is-a-folder", "unreadable run config"),
])
def test_read_run_config_errors(tmp_path, case, message):
    run = tmp_path / "run"
    if case != "missing-folder":
        run.mkdir()
    cfg = run / CONFIG_NAME
    if case == "bad-json":
        cfg.write_text('{"data": {"spec": "digits"}, "params": {')
    elif case == "binary":
        cfg.write_bytes(b"\xff\xfe\x00\x81")
    elif case == "a-list":
        cfg.write_text("[1, 2]")
    elif case == "no-params":
        cfg.write_text(json.dumps({"data": {}}))
    elif case == "config-is-a-folder":
        cfg.mkdir()
    with pytest.raises(ValueError, match=message) as info:
        read_run_config(run)
    assert str(run) in str(info.value) and "\n" not in str(info.value)


# -- image shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("d,known,expected", [
    (64, None, (8, 8)),
    (784, (28, 28), (28, 28)),
    (12, (3, 4), (3, 4)),
    (16, None, (4, 4)),
    (16, (3, 3), (4, 4)),  # a stale shape that does not fit is ignored
    (7, None, None),
    (12, (2, 2), None),
    (9, None, None),  # 3x3 is too small to be worth drawing as an image
    (1, None, None),
])
def test_image_shape_for(d, known, expected):
    assert image_shape_for(d, known) == expected


# -- held-out rows and the data's fingerprint -----------------------------------------------


def test_read_heldout(tmp_path):
    file_source = {"kind": "file", "path": "x.csv", "test_fraction": 0.2}
    with pytest.raises(ValueError, match="heldout.npy: missing.*--test-fraction 0.2"):
        read_heldout(tmp_path, file_source)
    assert read_heldout(tmp_path, {**file_source, "test_fraction": 0.0}) is None
    assert read_heldout(tmp_path, {"kind": "dataset", "spec": "digits"}) is None
    np.save(tmp_path / HELDOUT_NAME, np.array([3, 1, 7]))
    np.testing.assert_array_equal(read_heldout(tmp_path, file_source), [3, 1, 7])
    for bad in (np.array([0.5, 1.0]), np.array([[1, 2]]), np.array([-1, 2])):
        np.save(tmp_path / HELDOUT_NAME, bad)
        with pytest.raises(ValueError, match="not a list of row numbers"):
            read_heldout(tmp_path, file_source)
    (tmp_path / HELDOUT_NAME).write_bytes(b"junk")
    with pytest.raises(ValueError, match="no .npy header"):
        read_heldout(tmp_path, file_source)


def test_file_digest_and_check_same_data(csv_file, tmp_path):
    import hashlib

    digest = file_digest(csv_file)
    assert digest == hashlib.sha256(csv_file.read_bytes()).hexdigest()
    source = {"kind": "file", "path": str(csv_file), "sha256": digest}
    check_same_data(source, tmp_path)  # unchanged: nothing raised
    check_same_data({**source, "sha256": None}, tmp_path)  # older runs recorded none
    check_same_data({"kind": "dataset", "spec": "digits"}, tmp_path)
    csv_file.write_text(csv_file.read_text() + "99,198,0,-99\n")
    with pytest.raises(ValueError, match="changed since the run was trained"):
        check_same_data(source, tmp_path)
    csv_file.unlink()
    with pytest.raises(ValueError, match="is gone"):
        check_same_data(source, tmp_path)


def test_check_same_data_reads_the_file_again_only_when_size_or_time_moved(csv_file, tmp_path,
                                                                           monkeypatch):
    import os

    from contractive import runs

    source = {"kind": "file", "path": str(csv_file), **file_fingerprint(csv_file)}
    assert source["size"] == csv_file.stat().st_size
    calls = []
    digest = runs.file_digest
    monkeypatch.setattr(runs, "file_digest", lambda p: calls.append(p) or digest(p))
    check_same_data(source, tmp_path)
    assert calls == []  # same size and time: not read
    os.utime(csv_file, ns=(0, source["mtime_ns"] + 10**9))  # touched, same bytes: read, fine
    check_same_data(source, tmp_path)
    assert len(calls) == 1
    text = csv_file.read_text()
    csv_file.write_text(text.replace("1,2,1,-1", "1,2,1,-7"))  # same size, other bytes
    with pytest.raises(ValueError, match="changed since"):
        check_same_data(source, tmp_path)
