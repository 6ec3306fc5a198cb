"""The command line: ``contractive train`` in-process, via ``python -m contractive`` and via
the console script; run folders, bad inputs (exit 2, one line, nothing left behind),
--overwrite, --config, --resume, evaluate / encode / reconstruct, --help/--version and
determinism."""

from __future__ import annotations

import gzip
import json
import math
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import contractive
from contractive.checkpoint import load_checkpoint
from contractive.cli import main
from contractive.data import MNIST_FILES
from contractive.training import resolve_device

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {
    "model.json", "model.safetensors", "metrics.json", "config.json", "history.json",
    "history.csv", "reconstructions.png", "training_curves.png", "checkpoint.safetensors",
    "train.log",
}
MNIST_DIR = (REPO.parent / "shared" / "data" / "mnist").resolve()
FAST = ["--max-epochs", "2", "--seed", "0"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` as the shell sees it: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
        assert isinstance(code, int)
    except SystemExit as exc:  # argparse's --help, --version and usage errors
        code = 0 if exc.code is None else exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("contractive"), err
    assert "error" in lines[0]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", **extra)
    return env


def _console_script() -> Path:
    for candidate in (Path(sys.executable).parent / "contractive",
                      REPO / ".venv" / "bin" / "contractive"):
        if candidate.is_file():
            return candidate
    pytest.skip("the contractive console script is not installed next to this Python")


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty working folder, also the cwd (so a default runs/ would land here)."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.fixture
def no_mnist(monkeypatch, tmp_path_factory):
    """MNIST nowhere to be found: empty $CONTRACTIVE_DATA_DIR, $XDG_CACHE_HOME and $HOME."""
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(tmp_path_factory.mktemp("data_dir")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


def _idx(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.uint8)
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_fake_mnist(folder: Path, n_train: int = 20, n_test: int = 5, side: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, side, side))
        labels = rng.integers(0, 10, size=n)
        (folder / (MNIST_FILES[f"{split}_images"] + ".gz")).write_bytes(
            gzip.compress(_idx(images), mtime=0))
        (folder / (MNIST_FILES[f"{split}_labels"] + ".gz")).write_bytes(
            gzip.compress(_idx(labels), mtime=0))
    return folder


def check_run_folder(out: Path, extra: set[str] = frozenset()) -> dict:
    assert out.is_dir()
    assert {p.name for p in out.iterdir()} == RUN_FILES | extra
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_mse", "test_mean_jacobian_frobenius_sq"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
        assert metrics[key] >= 0
    for png in ("reconstructions.png", "training_curves.png"):
        blob = (out / png).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 2000
    return metrics


# -- training runs --------------------------------------------------------------------------


def test_train_digits_writes_run_folder(work, capsys):
    out = work / "run"
    code, stdout, err = run_cli(["train", "digits", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    metrics = check_run_folder(out)
    assert f"run folder: {out}" in stdout
    assert "Traceback" not in err
    assert metrics["data"] == "digits" and metrics["evaluated_on"] == "held-out"
    assert metrics["n_train"] == 1437 and metrics["n_eval"] == 360
    assert metrics["n_features"] == 64 and metrics["epochs"] == 2
    assert metrics["device"] == str(resolve_device("auto"))  # the default, "auto"
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["spec"] == "digits" and config["data"]["kind"] == "dataset"
    assert config["params"]["max_epochs"] == 2 and config["params"]["random_state"] == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    csv_lines = (out / "history.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 3 and "epoch" in csv_lines[0].split(",")
    log = (out / "train.log").read_text().splitlines()
    assert len(log) == 2 and "epoch 1/2" in log[0] and "epoch 2/2" in log[1]
    state, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert os.listdir(work) == ["run"]  # no temp folder left beside it

    # the model in the run folder loads and reproduces the reported metrics
    model = contractive.load(out)
    assert model.max_epochs == 2 and model.n_epochs_ == 2
    from contractive.data import load_digits

    ds = load_digits()
    rec = model.reconstruct(ds.X_test).astype(np.float64)
    assert np.mean((rec - ds.X_test) ** 2) == pytest.approx(metrics["test_mse"], rel=1e-6)
    assert float(np.mean(model.penalty(ds.X_test))) == pytest.approx(
        metrics["test_mean_jacobian_frobenius_sq"], rel=1e-5)


def test_train_json_output(work, capsys):
    out = work / "run"
    code, stdout, err = run_cli(
        ["train", "digits", "--out", str(out), "--json", "--n-components", "4", *FAST], capsys)
    assert code == 0, err
    payload = json.loads(stdout)
    assert Path(payload["run_dir"]) == out
    assert payload["n_components"] == 4
    assert math.isfinite(payload["test_mse"])
    assert math.isfinite(payload["test_mean_jacobian_frobenius_sq"])
    metrics = check_run_folder(out)
    assert metrics["test_mse"] == payload["test_mse"]


def test_train_default_out_is_under_runs(work, capsys):
    code, stdout, err = run_cli(["train", "digits", *FAST], capsys)
    assert code == 0, err
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("digits-")
    check_run_folder(runs[0])
    assert str(Path("runs") / runs[0].name) in stdout


def test_train_into_existing_empty_folder(work, capsys):
    (work / "run").mkdir()
    code, _, err = run_cli(["train", "digits", "--out", str(work / "run"), *FAST], capsys)
    assert code == 0, err
    check_run_folder(work / "run")


def test_train_two_layer_flags(work, capsys):
    out = work / "run"
    code, _, err = run_cli(
        ["train", "digits", "--out", str(out), "--hidden-layer-sizes", "16,8",
         "--n-components", "3", "--activation", "tanh", "--tied-weights",
         "--scaling", "standard", *FAST], capsys)
    assert code == 0, err
    check_run_folder(out)
    model = contractive.load(out)
    assert model.module_.config.hidden_layer_sizes == (16, 8)
    assert model.module_.config.tied_weights
    assert model.activation == "tanh" and model.scaling == "standard"


def test_train_mnist_from_data_dir(work, capsys, no_mnist):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not available: {MNIST_DIR} does not exist")
    out = work / "run"
    code, _, err = run_cli(
        ["train", "mnist", "--data-dir", str(MNIST_DIR), "--out", str(out), "--max-epochs", "1",
         "--seed", "0", "--n-components", "8", "--batch-size", "200"], capsys)
    assert code == 0, err
    metrics = check_run_folder(out)
    assert metrics["data"] == "mnist" and metrics["n_train"] == 60000
    assert metrics["n_eval"] == 10000 and metrics["n_features"] == 784
    assert metrics["test_mse"] < 0.1


def test_train_fake_mnist_fails_the_checksum(work, capsys, no_mnist, tmp_path):
    """Well-formed IDX files that are not the published MNIST: exit 2, one line naming the
    file, nothing written."""
    data_dir = write_fake_mnist(tmp_path / "fake_mnist")
    code, stdout, err = run_cli(
        ["train", "mnist", "--data-dir", str(data_dir), "--out", str(work / "run"), *FAST],
        capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "checksum mismatch" in err
    assert any(str(data_dir / (stem + ".gz")) in err for stem in MNIST_FILES.values())
    assert os.listdir(work) == []


def test_overwrite_replaces_existing_run(work, capsys):
    out = work / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a run folder (an old, unfinished one)
    (out / "old.txt").write_text("old")
    (out / "sub").mkdir()
    code, _, err = run_cli(["train", "digits", "--out", str(out), "--overwrite", *FAST], capsys)
    assert code == 0, err
    check_run_folder(out)  # exactly the run files: old ones are gone
    assert os.listdir(work) == ["run"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(work, capsys):
    out = work / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, _, err = run_cli(["train", "digits", "--out", str(out), "--overwrite", *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "not a run folder" in err
    assert os.listdir(out) == ["thesis.tex"]


@pytest.mark.parametrize("flags", [["--validation-fraction", "1.5"], ["--seed", "-5"],
                                   ["--loss", "bce", "--output-activation", "sigmoid",
                                    "--scaling", "standard"]])
def test_checks_that_need_the_data_run_before_anything_is_written(work, capsys, flags):
    out = work / "run"
    code, _, err = run_cli(["train", "digits", "--out", str(out), *FAST, *flags], capsys)
    assert code == 2, err
    assert_one_line_error(err)
    assert not out.exists() and os.listdir(work) == []


def test_unwritable_out_is_one_line(work, capsys):
    code, _, err = run_cli(["train", "digits", "--out", "/proc/forbidden/run", *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_overwrite_with_failing_run_keeps_existing(work, capsys):
    out = work / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, stdout, err = run_cli(
        ["train", "digits", "--out", str(out), "--overwrite", "--learning-rate", "0", *FAST],
        capsys)
    assert code == 2
    assert_one_line_error(err)
    assert os.listdir(out) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert os.listdir(work) == ["run"]


def test_same_seed_gives_identical_weights(work, capsys):
    for name in ("a", "b"):
        code, _, err = run_cli(["train", "digits", "--out", str(work / name), *FAST], capsys)
        assert code == 0, err
    a = (work / "a" / "model.safetensors").read_bytes()
    b = (work / "b" / "model.safetensors").read_bytes()
    assert a == b
    ma = json.loads((work / "a" / "metrics.json").read_text())
    mb = json.loads((work / "b" / "metrics.json").read_text())
    assert ma["test_mse"] == mb["test_mse"]
    code, _, err = run_cli(
        ["train", "digits", "--out", str(work / "c"), "--max-epochs", "2", "--seed", "1"], capsys)
    assert code == 0, err
    assert (work / "c" / "model.safetensors").read_bytes() != a


def test_run_folder_is_readable_like_ordinary_files(work, capsys):
    """The run folder and its files get the modes ordinary folders and files get under the
    umask (not mkdtemp's 0o700 / mkstemp's 0o600)."""
    umask = os.umask(0o022)
    try:
        code, _, err = run_cli(["train", "digits", "--out", str(work / "run"), *FAST], capsys)
        (work / "plain_dir").mkdir()
    finally:
        os.umask(umask)
    assert code == 0, err
    assert oct(stat.S_IMODE((work / "run").stat().st_mode)) == oct(
        stat.S_IMODE((work / "plain_dir").stat().st_mode))
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in (work / "run").iterdir()}
    assert set(modes.values()) == {oct(0o644)}, modes


# -- bad inputs -----------------------------------------------------------------------------

BAD_ARGS = {
    "unknown-dataset": ["train", "cifar10"],
    "n-components-0": ["train", "digits", "--n-components", "0"],
    "n-components-abc": ["train", "digits", "--n-components", "abc"],
    "hidden-sizes-3,x": ["train", "digits", "--hidden-layer-sizes", "3,x"],
    "hidden-sizes-0": ["train", "digits", "--hidden-layer-sizes", "0"],
    "contractive-weight--1": ["train", "digits", "--contractive-weight", "-1"],
    "contractive-weight-nan": ["train", "digits", "--contractive-weight", "nan"],
    "contractive-weight-inf": ["train", "digits", "--contractive-weight", "inf"],
    "learning-rate-0": ["train", "digits", "--learning-rate", "0"],
    "max-epochs-0": ["train", "digits", "--max-epochs", "0"],
    "batch-size-0": ["train", "digits", "--batch-size", "0"],
    "seed-abc": ["train", "digits", "--seed", "abc"],
    "device-cuda": ["train", "digits", "--device", "cuda"],
    "device-bogus": ["train", "digits", "--device", "bogus"],
    "activation-bogus": ["train", "digits", "--activation", "bogus"],
    "loss-bce-linear": ["train", "digits", "--loss", "bce"],
    "unknown-flag": ["train", "digits", "--bogus-flag"],
    "unknown-flag-top": ["--bogus-flag", "train", "digits"],
    "unknown-command": ["fly", "digits"],
    "missing-data": ["train"],
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_input_exit_2_one_line_nothing_left(work, capsys, case):
    if case == "device-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    out = work / "run"
    code, stdout, err = run_cli([*BAD_ARGS[case], "--out", str(out)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert stdout == ""
    assert os.listdir(work) == []  # no run folder, no hidden temp folder, no runs/


def test_bad_input_without_out_creates_no_runs_folder(work, capsys):
    code, _, err = run_cli(["train", "cifar10"], capsys)
    assert code == 2
    assert_one_line_error(err)
    code, _, err = run_cli(["train", "digits", "--learning-rate", "0", *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert not (work / "runs").exists() or os.listdir(work / "runs") == []


def test_existing_non_empty_out_without_overwrite(work, capsys):
    out = work / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    (out / ".hidden").write_bytes(b"\x00\x01")
    code, stdout, err = run_cli(["train", "digits", "--out", str(out), *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "--overwrite" in err
    assert sorted(os.listdir(out)) == [".hidden", "keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert (out / ".hidden").read_bytes() == b"\x00\x01"
    assert os.listdir(work) == ["run"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_is_a_regular_file(work, capsys, overwrite):
    target = work / "run"
    target.write_text("not a folder")
    code, _, err = run_cli(["train", "digits", "--out", str(target), *overwrite, *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert target.read_text() == "not a folder"
    assert os.listdir(work) == ["run"]


def test_mnist_with_empty_data_dir(work, capsys, no_mnist, tmp_path):
    empty = tmp_path / "empty_data"
    empty.mkdir()
    code, stdout, err = run_cli(
        ["train", "mnist", "--data-dir", str(empty), "--out", str(work / "run"), *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert str(empty) in err and "train-images-idx3-ubyte" in err
    assert os.listdir(work) == []
    assert os.listdir(empty) == []


def test_mnist_with_corrupt_gzip(work, capsys, no_mnist, tmp_path):
    """A corrupted (not merely truncated) .gz file is a bad input like any other: exit 2,
    one line naming the file, no traceback."""
    data_dir = write_fake_mnist(tmp_path / "fake_mnist", n_train=200)
    bad = data_dir / (MNIST_FILES["train_images"] + ".gz")
    blob = bytearray(bad.read_bytes())
    blob[12] ^= 0xFF
    bad.write_bytes(bytes(blob))
    code, _, err = run_cli(
        ["train", "mnist", "--data-dir", str(data_dir), "--out", str(work / "run"), *FAST],
        capsys)
    assert code == 2
    assert_one_line_error(err)
    assert str(bad) in err
    assert os.listdir(work) == []


# -- help, version, no arguments ------------------------------------------------------------


def test_no_arguments_exits_2(capsys):
    code, stdout, _ = run_cli([], capsys)
    assert code == 2
    assert "train" in stdout  # the usage names the command


@pytest.mark.parametrize("argv, prefix", [
    (["train", "digits", "--bogus"], "contractive train: error: unrecognized arguments: --bogus"),
    (["evaluate", "r", "d", "extra"], "contractive evaluate: error: unrecognized arguments: extra"),
    (["--bogus"], "contractive: error: unrecognized arguments: --bogus"),
])
def test_unknown_arguments_are_named_by_their_command(work, capsys, argv, prefix):
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert err.startswith(prefix) and "--help" in err
    assert os.listdir(work) == []


def test_version(capsys):
    code, stdout, _ = run_cli(["--version"], capsys)
    assert code == 0
    assert stdout.strip() == f"contractive {contractive.__version__}"


def test_train_help_shows_an_example(capsys):
    code, stdout, err = run_cli(["train", "--help"], capsys)
    assert code == 0
    assert "example" in stdout
    assert "contractive train digits" in stdout
    for flag in ("--out", "--overwrite", "--json", "--data-dir", "--n-components", "--seed",
                 "--hidden-layer-sizes", "--contractive-weight", "--learning-rate"):
        assert flag in stdout, flag
    assert err == ""


def test_top_level_help(capsys):
    code, stdout, _ = run_cli(["--help"], capsys)
    assert code == 0
    assert "train" in stdout and "example" in stdout


# -- as separate processes ------------------------------------------------------------------


def test_python_dash_m_train(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "contractive", "train", "digits", "--out", str(out), *FAST],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"run folder: {out}" in proc.stdout
    check_run_folder(out)
    assert sorted(os.listdir(tmp_path)) == ["run"]
    contractive.load(out)


def test_console_script(tmp_path):
    script = str(_console_script())
    run = lambda *args: subprocess.run(  # noqa: E731
        [script, *args], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)

    proc = run()
    assert proc.returncode == 2
    assert "train" in proc.stdout

    proc = run("train", "digits", "--contractive-weight", "nan", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr)
    assert "contractive_weight" in proc.stderr
    assert proc.stdout == ""
    assert os.listdir(tmp_path) == []


# -- training on files ----------------------------------------------------------------------


def write_csv(path: Path, n: int = 120, d: int = 7, seed: int = 0, label: bool = True) -> Path:
    """``n`` rows of ``d`` features (named f1..fd) and, third, a label column ``label``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.arange(1, d + 1) + 3
    y = (X[:, 0] > 3).astype(int) + (X[:, 1] > 3).astype(int)
    names = [f"f{i + 1}" for i in range(d)]
    lines = []
    if label:
        names.insert(2, "label")
    lines.append(",".join(names))
    for row, lab in zip(X, y):
        cells = [f"{v:.6f}" for v in row]
        if label:
            cells.insert(2, str(lab))
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _quiet_main(argv: list[str]) -> int:
    """``main(argv)`` outside a test's capsys (for module-scoped fixtures)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()
    return code


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data file): 3 epochs on a 120-row CSV with labels, standard scaling."""
    root = tmp_path_factory.mktemp("csv_run")
    data = write_csv(root / "data.csv")
    out = root / "run"
    _quiet_main(["train", str(data), "--label-column", "label", "--scaling", "standard",
                 "--out", str(out), "--n-components", "3", "--max-epochs", "3", "--seed", "0",
                 "--batch-size", "16"])
    return out, data


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits_run") / "run"
    _quiet_main(["train", "digits", "--out", str(out), "--n-components", "6", *FAST])
    return out


def test_train_csv_with_labels_and_scaling(csv_run):
    out, data = csv_run
    metrics = check_run_folder(out, {"heldout.npy"})
    assert metrics["n_train"] == 108 and metrics["n_eval"] == 12 and metrics["n_features"] == 7
    heldout = np.load(out / "heldout.npy", allow_pickle=False)
    assert heldout.shape == (12,) and heldout.dtype.kind == "i"
    assert list(heldout) == sorted(set(heldout)) and heldout.max() < 120
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["kind"] == "file" and config["data"]["label_column"] == "label"
    assert config["data"]["path"] == str(data.resolve())
    assert config["data"]["test_fraction"] == 0.1
    model = contractive.load(out)
    assert model.scaling == "standard" and model.n_features_in_ == 7
    # the scaling was fitted on the training rows only
    from contractive.files import read_data

    table = read_data(data, label_column="label")
    train_rows = np.setdiff1d(np.arange(120), heldout)
    np.testing.assert_allclose(model.scale_offset_, table.X[train_rows].mean(0), rtol=1e-10)


def test_train_figures_profile_when_not_square(work, capsys, monkeypatch):
    """Rows that are not square images get a profile plot; square ones an image grid."""
    from contractive.commands import train as train_cmd

    calls = []
    for name in ("reconstruction_grid", "reconstruction_profiles"):
        real = getattr(train_cmd, name)
        monkeypatch.setattr(train_cmd, name, lambda *a, _n=name, _r=real, **k: (
            calls.append(_n), _r(*a, **k))[1])
    data = write_csv(work / "d.csv", n=40, d=5)
    code, _, err = run_cli(["train", str(data), "--label-column", "label", "--out",
                            str(work / "csv"), *FAST], capsys)
    assert code == 0, err
    assert calls == ["reconstruction_profiles"]
    png = (work / "csv" / "reconstructions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    calls.clear()
    np.save(work / "img.npy", np.random.default_rng(0).random((30, 6, 6)))
    code, _, err = run_cli(["train", str(work / "img.npy"), "--out", str(work / "img"),
                            *FAST], capsys)
    assert code == 0, err
    assert calls == ["reconstruction_grid"]


def test_train_on_npz_and_tsv(work, capsys):
    X = np.random.default_rng(1).random((30, 5))
    np.savez(work / "d.npz", X=X, y=np.arange(30) % 2)
    code, _, err = run_cli(["train", str(work / "d.npz"), "--out", str(work / "a"),
                            "--test-fraction", "0.2", *FAST], capsys)
    assert code == 0, err
    assert len(np.load(work / "a" / "heldout.npy")) == 6
    (work / "d.tsv").write_text("\n".join("\t".join(f"{v:.4f}" for v in r) for r in X))
    code, _, err = run_cli(["train", str(work / "d.tsv"), "--out", str(work / "b"),
                            "--test-fraction", "0", *FAST], capsys)
    assert code == 0, err
    check_run_folder(work / "b")  # nothing held out: no heldout.npy
    assert json.loads((work / "b" / "metrics.json").read_text())["evaluated_on"] == (
        "training data")


# -- --config -------------------------------------------------------------------------------


def test_config_toml_dashes_underscores_and_flags_override(work, capsys):
    (work / "run.toml").write_text(
        'data = "digits"\n'
        'n-components = 4\n'
        'max_epochs = 3\n'
        'hidden-layer-sizes = [12]\n'
        'seed = 5\n'
        'contractive_weight = 0.01\n'
    )
    out = work / "run"
    code, _, err = run_cli(["train", "--config", str(work / "run.toml"), "--out", str(out),
                            "--max-epochs", "2"], capsys)
    assert code == 0, err
    params = json.loads((out / "config.json").read_text())["params"]
    assert params["n_components"] == 4 and params["max_epochs"] == 2  # the flag wins
    assert params["hidden_layer_sizes"] == [12] and params["random_state"] == 5
    assert params["contractive_weight"] == 0.01
    assert len(json.loads((out / "history.json").read_text())) == 2


def test_config_out_and_data_from_the_file(work, capsys):
    (work / "run.toml").write_text('data = "digits"\nout = "from_toml"\nmax-epochs = 1\n')
    code, _, err = run_cli(["train", "--config", "run.toml"], capsys)
    assert code == 0, err
    assert (work / "from_toml" / "model.safetensors").is_file()


def test_config_label_column_as_an_index_like_the_flag(work, capsys):
    rows = np.random.default_rng(0).random((40, 4))
    rows[:, 2] = np.arange(40) % 2
    np.savetxt(work / "lab.csv", rows, delimiter=",")
    (work / "run.toml").write_text('data = "lab.csv"\nlabel-column = 2\nmax-epochs = 1\n')
    code, _, err = run_cli(["train", "--config", "run.toml", "--out", "t"], capsys)
    assert code == 0, err
    assert run_cli(["train", "lab.csv", "--label-column", "2", "--out", "f", "--max-epochs",
                    "1"], capsys)[0] == 0
    for run in ("t", "f"):
        assert json.loads((work / run / "config.json").read_text())["data"]["label_column"] == "2"
        assert json.loads((work / run / "model.json").read_text())["module_config"][
            "in_features"] == 3


@pytest.mark.parametrize("content,words", [
    ('data = "digits"\nbogus-key = 1\n', ["'bogus-key'", "valid"]),
    ('data = "digits"\nlabel-column = true\n', ["label-column", "must be a string"]),
    ('data = "digits"\nn_components = \n', ["not valid TOML"]),
    ('data = "digits"\nn-components = "four"\n', []),
    ('data = "digits"\nhidden-layer-sizes = "a,b"\n', []),
    ("", ["DATA is missing"]),
])
def test_config_errors(work, capsys, content, words):
    (work / "run.toml").write_text(content)
    code, stdout, err = run_cli(["train", "--config", str(work / "run.toml"), "--out",
                                 str(work / "run"), *FAST], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    for w in words:
        assert w in err
    assert os.listdir(work) == ["run.toml"]


def test_config_missing_file(work, capsys):
    code, _, err = run_cli(["train", "digits", "--config", "nope.toml", "--out", "r"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "nope.toml" in err
    assert os.listdir(work) == []


# -- --resume -------------------------------------------------------------------------------


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def test_resume_finished_run_with_more_epochs(work, capsys, digits_run):
    import shutil

    import torch

    out = work / "run"
    shutil.copytree(digits_run, out)
    code, stdout, err = run_cli(["train", "--out", str(out), "--resume", "--max-epochs", "4"],
                                capsys)
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    log = (out / "train.log").read_text().splitlines()
    assert [ln.split()[2] for ln in log] == ["1/2", "2/2", "3/4", "4/4"]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    assert "4 epochs" in stdout
    # the same weights as 4 epochs in one go
    code, _, err = run_cli(["train", "digits", "--out", str(work / "straight"),
                            "--n-components", "6", "--seed", "0", "--max-epochs", "4"], capsys)
    assert code == 0, err
    a, b = _tensors(out / "model.safetensors"), _tensors(work / "straight" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_the_same_data_and_params_is_allowed(work, capsys, digits_run):
    import shutil

    out = work / "run"
    shutil.copytree(digits_run, out)
    code, _, err = run_cli(["train", "digits", "--out", str(out), "--resume",
                            "--n-components", "6", "--seed", "0", "--max-epochs", "2"], capsys)
    assert code == 0, err
    assert len(json.loads((out / "history.json").read_text())) == 2  # nothing left to do


@pytest.mark.parametrize("argv,words", [
    (["--n-components", "7"], ["--n-components", "7", "6"]),
    (["--seed", "1"], ["random-state"]),
    (["--learning-rate", "0.5"], ["--learning-rate"]),
    (["--hidden-layer-sizes", "5"], ["--hidden-layer-sizes"]),
    (["mnist"], ["'mnist'", "'digits'"]),
])
def test_resume_with_conflicting_settings(work, capsys, digits_run, argv, words):
    import shutil

    out = work / "run"
    shutil.copytree(digits_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = [a for a in argv if not a.startswith("-") and not a[0].isdigit()]
    flags = [a for a in argv if a not in data]
    code, stdout, err = run_cli(["train", *data, "--out", str(out), "--resume", *flags], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    for w in words:
        assert w in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_resume_without_a_run_starts_afresh(work, capsys, state):
    out = work / "run"
    if state == "empty":
        out.mkdir()
    code, _, err = run_cli(["train", "digits", "--out", str(out), "--resume", *FAST], capsys)
    assert code == 0, err
    check_run_folder(out)
    assert len(json.loads((out / "history.json").read_text())) == 2


def test_resume_without_data_nor_run(work, capsys):
    code, _, err = run_cli(["train", "--out", str(work / "run"), "--resume"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "DATA" in err and os.listdir(work) == []


def test_resume_with_a_corrupted_checkpoint_is_refused(work, capsys, digits_run):
    import shutil

    out = work / "run"
    shutil.copytree(digits_run, out)
    ckpt = out / "checkpoint.safetensors"
    blob = bytearray(ckpt.read_bytes())
    blob[-3] ^= 0x10
    ckpt.write_bytes(bytes(blob))
    code, _, err = run_cli(["train", "--out", str(out), "--resume", "--max-epochs", "3"],
                           capsys)
    assert code == 2
    assert_one_line_error(err)
    assert str(ckpt) in err and "checksum" in err
    assert ckpt.read_bytes() == bytes(blob)  # left for the user to look at


def test_resume_of_a_file_run_keeps_its_held_out_rows(work, capsys, csv_run):
    import shutil

    src, data = csv_run
    out = work / "run"
    shutil.copytree(src, out)
    before = np.load(out / "heldout.npy")
    code, _, err = run_cli(["train", "--out", str(out), "--resume", "--max-epochs", "4"],
                           capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(out / "heldout.npy"), before)
    assert len(json.loads((out / "history.json").read_text())) == 4


# -- evaluate -------------------------------------------------------------------------------


def test_evaluate_table(csv_run, capsys):
    out, _ = csv_run
    code, stdout, err = run_cli(["evaluate", str(out)], capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert "12 samples" in lines[0] and "held out" in lines[0]
    assert "recon. MSE" in lines[1] and "linear probe" in lines[1] and "5-NN" in lines[1]
    assert lines[2].startswith("CAE (k=3)") and lines[3].startswith("PCA (k=3)")
    assert err == ""


def test_evaluate_json_with_labels(csv_run, capsys):
    out, data = csv_run
    code, stdout, err = run_cli(["evaluate", str(out), str(data), "--label-column", "label",
                                 "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_samples"] == 120 and result["n_components"] == 3
    assert set(result["results"]) == {"CAE", "PCA"}
    for row in result["results"].values():
        assert math.isfinite(row["reconstruction_mse"]) and row["reconstruction_mse"] >= 0
        assert 0 <= row["linear_probe_accuracy"] <= 1 and 0 <= row["knn_accuracy"] <= 1
    assert result["results"]["PCA"]["mean_jacobian_frobenius_sq"] == 3.0


def test_evaluate_without_labels(work, capsys):
    data = write_csv(work / "nolabel.csv", n=60, d=5, label=False)
    out = work / "run"
    code, _, err = run_cli(["train", str(data), "--out", str(out), *FAST], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["evaluate", str(out), "--json"], capsys)
    assert code == 0, err
    rows = json.loads(stdout)["results"]
    assert set(rows) == {"CAE", "PCA"}
    for row in rows.values():
        assert set(row) == {"reconstruction_mse", "mean_jacobian_frobenius_sq"}
    code, stdout, _ = run_cli(["evaluate", str(out)], capsys)
    assert code == 0 and "no labels" in stdout and "linear probe" not in stdout


def test_evaluate_dataset_run(digits_run, capsys):
    code, stdout, err = run_cli(["evaluate", str(digits_run), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_samples"] == 360 and result["data"] == "digits (held out)"
    assert result["results"]["CAE"]["linear_probe_accuracy"] > 0.5
    code, stdout, err = run_cli(["evaluate", str(digits_run), "digits", "--split", "train",
                                 "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["n_samples"] == 1437


def test_evaluate_feature_count_differs(csv_run, capsys, tmp_path):
    out, _ = csv_run
    other = write_csv(tmp_path / "wide.csv", n=20, d=9)
    code, stdout, err = run_cli(["evaluate", str(out), str(other), "--label-column", "label"],
                                capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "9 features" in err and "7" in err and str(other) in err


def test_evaluate_run_without_model(work, capsys, digits_run):
    import shutil

    out = work / "run"
    shutil.copytree(digits_run, out)
    for name in ("model.json", "model.safetensors"):
        (out / name).unlink()
    code, _, err = run_cli(["evaluate", str(out)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "no model" in err and "--resume" in err


# -- encode / reconstruct -------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".npy", ".csv", ".tsv"])
def test_encode_and_reconstruct_outputs(csv_run, capsys, work, ext):
    out, data = csv_run
    codes = work / f"codes{ext}"
    code, stdout, err = run_cli(["encode", str(out), str(data), "--label-column", "label",
                                 "-o", str(codes)], capsys)
    assert code == 0, err
    assert str(codes) in stdout and "120 rows x 3 columns" in stdout
    recon = work / f"recon{ext}"
    code, _, err = run_cli(["reconstruct", str(out), str(data), "--label-column", "label",
                            "-o", str(recon)], capsys)
    assert code == 0, err
    model = contractive.load(out)
    from contractive.files import read_data

    X = read_data(data, label_column="label").X
    if ext == ".npy":
        c, r = np.load(codes), np.load(recon)
        np.testing.assert_allclose(c, model.transform(X), rtol=1e-6)
    else:
        delim = "," if ext == ".csv" else "\t"
        header = codes.read_text().splitlines()[0].split(delim)
        assert len(header) == 3 and not any(h.replace(".", "").isdigit() for h in header)
        assert len(recon.read_text().splitlines()[0].split(delim)) == 7
        c, r = read_data(codes).X, read_data(recon).X
        np.testing.assert_allclose(c, model.transform(X), rtol=1e-6, atol=1e-7)
    assert c.shape == (120, 3) and r.shape == (120, 7)
    np.testing.assert_allclose(r, model.reconstruct(X), rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(work)) == sorted([codes.name, recon.name])


def test_encode_dataset_split(digits_run, capsys, work):
    code, _, err = run_cli(["encode", str(digits_run), "digits", "--split", "train", "-o",
                            "c.npy"], capsys)
    assert code == 0, err
    assert np.load(work / "c.npy").shape == (1437, 6)
    # the run's model.json named instead of the run, as contractive.load takes it
    code, _, err = run_cli(["encode", str(digits_run / "model.json"), "digits", "-o",
                            "t.npy"], capsys)
    assert code == 0, err
    assert np.load(work / "t.npy").shape == (360, 6)


def test_encode_and_reconstruct_take_a_saved_model_or_stack(tmp_path, capsys, work):
    from contractive import ContractiveAutoencoder, StackedContractiveAutoencoder

    rows = np.random.default_rng(0).random((30, 5))
    data = tmp_path / "rows.npy"
    np.save(data, rows)
    cae = ContractiveAutoencoder(n_components=3, max_epochs=2, device="cpu").fit(rows)
    stack = StackedContractiveAutoencoder(
        (4, 2), base=ContractiveAutoencoder(max_epochs=2, device="cpu"), random_state=0
    ).fit(rows)
    for model, folder in ((cae, cae.save(tmp_path / "m")), (stack, stack.save(tmp_path / "s"))):
        for command, expected in (("encode", model.transform(rows)),
                                  ("reconstruct", model.inverse_transform(model.transform(rows)))):
            code, stdout, err = run_cli([command, folder, str(data), "-o", "o.npy"], capsys)
            assert code == 0, err
            np.testing.assert_allclose(np.load(work / "o.npy"), expected, rtol=1e-5, atol=1e-6)
        code, _, err = run_cli(["encode", folder, str(data), "-o", f"{folder}/c.npy"], capsys)
        assert code == 2 and "inside the model folder" in err
        own = f"{folder}/{'model' if model is cae else 'stack'}.json"  # as contractive.load
        code, _, err = run_cli(["encode", own, str(data), "-o", f"{folder}/c.npy"], capsys)
        assert code == 2 and "inside the model folder" in err
        assert run_cli(["encode", own, str(data), "-o", "o.npy"], capsys)[0] == 0
        for argv in (["evaluate", folder, str(data)], ["analyze", folder, str(data)],
                     ["finetune", folder, str(data)]):
            code, stdout, err = run_cli(argv, capsys)
            assert code == 2 and stdout == "", argv
            assert_one_line_error(err)
            assert "a model saved by save(), not a run folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["encode", str(tmp_path / "empty"), str(data), "-o", "e.npy"],
                           capsys)
    assert code == 2 and "neither a run folder (no config.json) nor a model folder" in err
    assert sorted(os.listdir(work)) == ["o.npy"]


def test_columns_in_another_order_are_refused(tmp_path, capsys, work):
    """Columns are taken by position: a file whose header orders or names them otherwise
    than the training file's (a run's) or the DataFrame's (a saved model's) is refused."""
    pd = pytest.importorskip("pandas")
    from contractive import ContractiveAutoencoder

    rows = np.random.default_rng(0).random((40, 4))
    data, swapped = tmp_path / "rows.csv", tmp_path / "swapped.csv"
    np.savetxt(data, rows, delimiter=",", header="a,b,c,d", comments="")
    np.savetxt(swapped, rows[:, [1, 0, 2, 3]], delimiter=",", header="b,a,c,d", comments="")
    run = tmp_path / "r"
    assert run_cli(["train", str(data), "--out", str(run), *FAST], capsys)[0] == 0
    frame = pd.DataFrame(rows, columns=list("abcd"))
    saved = ContractiveAutoencoder(n_components=2, max_epochs=1, device="cpu").fit(frame)
    saved = saved.save(tmp_path / "m")
    for folder in (str(run), saved):
        for argv in (["encode", folder, str(swapped), "-o", "c.npy"],
                     ["reconstruct", folder, str(swapped), "-o", "c.npy"],
                     *([["evaluate", folder, str(swapped)]] if folder == str(run) else [])):
            code, stdout, err = run_cli(argv, capsys)
            assert code == 2 and stdout == "", argv
            assert_one_line_error(err)
            assert "column 1 is 'b' where the model" in err and "'a'" in err
        code, _, err = run_cli(["encode", folder, str(data), "-o", "c.npy"], capsys)
        assert code == 0 and err == ""  # the training columns: no warning either
    assert os.listdir(work) == ["c.npy"]


@pytest.mark.parametrize("command", ["encode", "reconstruct"])
@pytest.mark.parametrize("output", ["codes.txt", "codes", "codes.npz", "no/such/dir/c.npy"])
def test_encode_bad_output(csv_run, capsys, work, command, output):
    out, data = csv_run
    code, stdout, err = run_cli([command, str(out), str(data), "--label-column", "label",
                                 "-o", output], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert output in err
    assert os.listdir(work) == []


@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_encode_never_writes_over_its_data_or_into_the_run(tmp_path, capsys, command):
    rows = np.random.default_rng(0).random((40, 4))
    data = tmp_path / "rows.csv"
    np.savetxt(data, rows, delimiter=",", header="a,b,c,d", comments="")
    run = tmp_path / "r"
    assert run_cli(["train", str(data), "--out", str(run), *FAST], capsys)[0] == 0
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    text = data.read_text()
    copy = tmp_path / "copy.csv"
    copy.write_text(data.read_text())
    code, _, err = run_cli([command, str(run), str(copy), "-o", str(data)], capsys)
    assert code == 2 and "the data file the run" in err  # the run's own data, named as -o
    for output, words in ((data, "is DATA itself"), (run / "heldout.npy", "inside the run"),
                          (run / "new.csv", "inside the run"), (run, "unknown output format"),
                          (tmp_path / "adir.npy", "is a folder")):
        if output.name == "adir.npy":
            output.mkdir()
        code, stdout, err = run_cli([command, str(run), str(data), "-o", str(output)], capsys)
        assert code == 2 and stdout == "", output
        assert_one_line_error(err)
        assert words in err
    assert data.read_text() == text
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    other = tmp_path / "old.npy"  # an existing output elsewhere is replaced, as -o says
    np.save(other, np.zeros(3))
    assert run_cli([command, str(run), str(data), "-o", str(other)], capsys)[0] == 0
    assert np.load(other).shape[0] == 40


# -- bad inputs to every command ------------------------------------------------------------


def _bad_files(d: Path) -> dict[str, Path]:
    (d / "nan.csv").write_text("a,b\n1,2\n3,nan\n")
    (d / "abc.csv").write_text("a,b\n1,2\n3,abc\n")
    (d / "ragged.csv").write_text("1,2\n3\n")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("a,b\n")
    np.save(d / "one_d.npy", np.zeros(5))
    np.save(d / "zero.npy", np.zeros((0, 4)))
    (d / "trunc.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fo")
    np.savez_compressed(d / "corrupt.npz", X=np.random.default_rng(0).random((200, 10)))
    blob = bytearray((d / "corrupt.npz").read_bytes())
    for i in range(200, 260):
        blob[i] ^= 0xA5
    (d / "corrupt.npz").write_bytes(bytes(blob))
    np.savez(d / "labels.npz", X=np.zeros((4, 2)), y=np.zeros(5))
    (d / "data.xlsx").write_text("1,2\n")
    (d / "folder.csv").mkdir()
    return {p.name: p for p in d.iterdir()}


BAD_TRAIN = {
    "nan": (["nan.csv"], ["row 3", "'b'"]),
    "abc": (["abc.csv"], ["row 3", "'abc'"]),
    "ragged": (["ragged.csv"], ["row 2"]),
    "empty": (["empty.csv"], ["empty"]),
    "header-only": (["header.csv"], ["no data"]),
    "1-d": (["one_d.npy"], ["1-D"]),
    "0-rows": (["zero.npy"], ["no samples"]),
    "truncated-npy": (["trunc.npy"], []),
    "corrupted-npz": (["corrupt.npz"], []),
    "labels-length": (["labels.npz"], ["labels"]),
    "unknown-extension": (["data.xlsx"], ["unknown data format"]),
    "folder": (["folder.csv"], ["folder"]),
    "missing-file": (["missing.csv"], ["no such file"]),
    "label-column-missing": (["abc.csv", "--label-column", "zz"], ["'zz'"]),
    "label-column-range": (["ragged.csv", "--label-column", "5"], ["out of range"]),
    "test-fraction-1.5": (["nan.csv", "--test-fraction", "1.5"], ["test-fraction"]),
    "test-fraction-neg": (["nan.csv", "--test-fraction", "-0.1"], ["test-fraction"]),
    "test-fraction-abc": (["nan.csv", "--test-fraction", "abc"], ["test-fraction"]),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_train_bad_data_files(work, capsys, tmp_path, case):
    files_dir = tmp_path / "files"
    files_dir.mkdir()
    _bad_files(files_dir)
    argv, words = BAD_TRAIN[case]
    argv = [str(files_dir / argv[0]), *argv[1:]]
    code, stdout, err = run_cli(["train", *argv, "--out", str(work / "run"), *FAST], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    if "test-fraction" not in case:
        assert argv[0] in err  # the file is named
    for w in words:
        assert w in err, err
    assert os.listdir(work) == []


@pytest.mark.parametrize("argv", [
    ["evaluate", "{missing}"],
    ["evaluate", "{work}"],
    ["evaluate", "{run}", "cifar10"],
    ["evaluate", "{run}", "{work}/missing.csv"],
    ["evaluate", "{run}", "{data}"],  # the label column left among the features
    ["evaluate", "{run}", "--split", "valid"],
    ["encode", "{missing}", "{data}", "-o", "{work}/c.npy"],
    ["encode", "{run}", "{data}", "--label-column", "zz", "-o", "{work}/c.npy"],
    ["encode", "{run}", "{data}"],
    ["reconstruct", "{run}", "digits", "-o", "{work}/c.npy"],
    ["reconstruct", "{run}", "{data}", "--label-column", "label", "-o", "{work}"],
])
def test_bad_inputs_to_other_commands(work, capsys, csv_run, argv):
    run, data = csv_run
    fill = dict(run=run, data=data, work=work, missing=work / "missing_run")
    argv = [a.format(**fill) for a in argv]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert os.listdir(work) == []


@pytest.mark.parametrize("command", ["train", "evaluate", "encode", "reconstruct", "datasets"])
def test_every_command_help_has_an_example(capsys, command):
    code, stdout, err = run_cli([command, "--help"], capsys)
    assert code == 0 and err == ""
    assert "example" in stdout and f"contractive {command}" in stdout


def test_output_that_is_an_existing_folder(work, capsys, csv_run):
    """``-o codes.npy`` where codes.npy is a folder: one line, exit 2, the folder intact."""
    run, data = csv_run
    (work / "codes.npy").mkdir()
    code, stdout, err = run_cli(["encode", str(run), str(data), "--label-column", "label",
                                 "-o", str(work / "codes.npy")], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert str(work / "codes.npy") in err
    assert os.listdir(work) == ["codes.npy"] and os.listdir(work / "codes.npy") == []


def test_out_below_a_regular_file(work, capsys):
    (work / "file").write_text("x")
    code, stdout, err = run_cli(["train", "digits", "--out", str(work / "file" / "run"),
                                 *FAST], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert str(work / "file") in err
    assert os.listdir(work) == ["file"] and (work / "file").read_text() == "x"


def test_ctrl_c_during_checkpoint_write_names_saved_epoch(work, capsys, monkeypatch):
    """Ctrl-C while the checkpoint of epoch 3 is being written: exit 130, one line that
    names the epoch the checkpoint on disk holds (2), and that checkpoint intact."""
    from contractive.commands import train as train_cmd

    real = train_cmd.save_checkpoint

    def save(path, state, meta=None):
        if state["epoch"] == 3:
            raise KeyboardInterrupt
        real(path, state, meta)

    monkeypatch.setattr(train_cmd, "save_checkpoint", save)
    out = work / "run"
    code, stdout, err = run_cli(["train", "digits", "--out", str(out), "--max-epochs", "5",
                                 "--seed", "0"], capsys)
    assert code == 130 and stdout == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--resume" in err
    state, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert state["epoch"] == 2
    message = err
    monkeypatch.undo()
    code, _, err = run_cli(["train", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert len(json.loads((out / "history.json").read_text())) == 5
    assert "epoch 2 " in message, message  # not 3: epoch 3 was never saved


def test_run_on_a_relative_data_path_works_from_another_folder(work, capsys, monkeypatch):
    """A run trained on ``data.csv`` (relative to the folder it was started in) still finds
    its data when evaluated or resumed from elsewhere: config.json records the absolute
    path, and that is what later commands must use."""
    write_csv(work / "d.csv", n=40, d=5)
    code, _, err = run_cli(["train", "d.csv", "--label-column", "label", "--out", "run",
                            *FAST], capsys)
    assert code == 0, err
    elsewhere = work.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = str(work / "run")
    code, _, err = run_cli(["evaluate", run], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--out", run, "--resume", "--max-epochs", "3"], capsys)
    assert code == 0, err
    assert len(json.loads((work / "run" / "history.json").read_text())) == 3


def test_reconstruct_csv_keeps_the_data_files_column_names(csv_run, work, capsys):
    out, data = csv_run
    target = work / "rec.csv"
    code, _, err = run_cli(["reconstruct", str(out), str(data), "--label-column", "label",
                            "-o", str(target)], capsys)
    assert code == 0, err
    header = target.read_text().splitlines()[0].split(",")
    with open(data) as f:
        columns = f.readline().strip().split(",")
    assert header == [c for c in columns if c != "label"]


def test_forgotten_label_column_gets_a_hint(csv_run, work, capsys):
    out, data = csv_run
    code, _, err = run_cli(["evaluate", str(out), str(data)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "--label-column label" in err


def test_diverged_new_run_leaves_no_folder(work, capsys):
    code, out, err = run_cli(["train", "digits", "--out", "dv", "--learning-rate", "1e30",
                              *FAST], capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "diverged" in err and "no run was written" in err
    assert not (work / "dv").exists()


def test_huge_finite_weight_is_refused_before_anything_is_written(work, capsys):
    code, _, err = run_cli(["train", "digits", "--out", "big", "--contractive-weight", "1e300",
                            *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "contractive_weight" in err and "float32" in err
    assert not (work / "big").exists()


def test_resume_refuses_a_folder_that_is_not_a_run(work, capsys):
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep")
    code, _, err = run_cli(["train", "digits", "--out", "mine", "--resume", *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "not a run folder" in err
    assert [p.name for p in (work / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("config, words", [
    ({"data": 5, "params": {}}, "'data' must be an object"),
    ({"data": {"kind": "file"}, "params": {}}, "data.spec"),
    ({"data": {"kind": "dataset", "spec": "digits"}, "params": "x"}, "'params'"),
    ({"data": {"kind": "web", "spec": "digits"}, "params": {}}, "data.kind"),
    ({"data": {"kind": "dataset", "spec": "nope"}, "params": {}}, "data.spec"),
])
@pytest.mark.parametrize("command", [["evaluate"], ["train", "--resume", "--out"]])
def test_edited_run_config_is_one_line(work, capsys, config, words, command):
    assert run_cli(["train", "digits", "--out", "r", *FAST], capsys)[0] == 0
    (work / "r" / "config.json").write_text(json.dumps(config))
    argv = [command[0], *command[1:], "r"] if command[0] == "train" else ["evaluate", "r"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "not a valid run config" in err and words in err


@pytest.mark.parametrize("command, extra, words", [
    ("evaluate", ["--split", "train"], "--split train applies to a dataset name"),
    ("evaluate", ["--label-column", "0"], "--label-column 0 applies to a data file"),
    ("evaluate", ["digits", "--label-column", "0"], "--label-column 0 applies to a data file"),
    ("evaluate", ["rows.csv", "--split", "test"], "not to the file rows.csv"),
    ("encode", ["digits", "--label-column", "0"], "--label-column 0 applies to a data file"),
    ("encode", ["rows.csv", "--split", "test"], "not to the file rows.csv"),
])
def test_options_that_do_not_apply_to_data_are_refused(work, capsys, command, extra, words):
    assert run_cli(["train", "digits", "--out", "r", *FAST], capsys)[0] == 0
    np.savetxt(work / "rows.csv", np.zeros((3, 64)), delimiter=",")
    argv = [command, "r", *extra] + (["-o", "codes.npy"] if command == "encode" else [])
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert words in err
    assert not (work / "codes.npy").exists()


def test_resume_with_fewer_epochs_than_done_is_refused(work, capsys):
    assert run_cli(["train", "digits", "--out", "r", "--max-epochs", "3"], capsys)[0] == 0
    before = (work / "r" / "config.json").read_text()
    code, _, err = run_cli(["train", "--out", "r", "--resume", "--max-epochs", "2"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "--max-epochs 2 is below the 3 epochs" in err
    assert (work / "r" / "config.json").read_text() == before


def test_diverged_run_removes_the_parent_folders_it_made(work, capsys):
    code, _, err = run_cli(["train", "digits", "--out", "nest/sub/run", "--learning-rate",
                            "1e30", *FAST], capsys)
    assert code == 1 and "no run was written" in err
    assert list(work.iterdir()) == []


def test_run_config_of_an_older_version_with_an_integer_label_column(work, capsys):
    rows = np.random.default_rng(0).random((40, 4))
    rows[:, 0] = np.arange(40) % 2
    np.savetxt(work / "lab.csv", rows, delimiter=",")
    assert run_cli(["train", "lab.csv", "--label-column", "0", "--out", "r", "--test-fraction",
                    "0.25", *FAST], capsys)[0] == 0
    config = json.loads((work / "r" / "config.json").read_text())
    config["data"]["label_column"] = 0  # as a TOML config's integer was stored before
    (work / "r" / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli(["evaluate", "r"], capsys)
    assert code == 0, err
    assert "10 samples" in out


@pytest.mark.parametrize("argv, words", [
    (["train", "digits", "--out", ""], "--out is empty"),
    (["train", "digits", "--out", "   "], "--out is empty"),
    (["train", "--out", "r", "--resume", "--overwrite"], "contradict"),
])
def test_train_flags_that_cannot_be_meant(work, capsys, argv, words):
    assert run_cli(["train", "digits", "--out", "r", *FAST], capsys)[0] == 0
    before = sorted(p.name for p in work.rglob("*"))
    code, _, err = run_cli([*argv, *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert words in err
    assert sorted(p.name for p in work.rglob("*")) == before


ALLOC_FAIL = ("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate "
              "memory: you tried to allocate 40000000000 bytes")


@pytest.mark.parametrize("exists", [False, True])
def test_out_of_memory_is_one_line_and_leaves_no_run(work, capsys, monkeypatch, exists):
    if exists:
        (work / "om").mkdir()

    def fail(self, *args, **kwargs):
        raise RuntimeError(ALLOC_FAIL)

    monkeypatch.setattr(contractive.ContractiveAutoencoder, "_fit", fail)
    code, out, err = run_cli(["train", "digits", "--out", "om", *FAST], capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "out of memory" in err and "can't allocate memory" in err
    assert not (work / "om").exists() or list((work / "om").iterdir()) == []


def test_other_runtime_errors_keep_their_traceback_and_leave_no_run(work, capsys, monkeypatch):
    def fail(self, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(contractive.ContractiveAutoencoder, "_fit", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "digits", "--out", "bug", *FAST])
    assert not (work / "bug").exists()


@pytest.mark.parametrize("exc, expected", [
    (RuntimeError(ALLOC_FAIL), True), (MemoryError("x"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("size mismatch"), False), (ValueError("can't allocate memory"), False),
])
def test_out_of_memory_recognised(exc, expected):
    from contractive.training import out_of_memory

    assert out_of_memory(exc) is expected


def _file_run(work, capsys) -> Path:
    rows = np.random.default_rng(0).random((60, 5))
    np.save(work / "rows.npy", rows)
    assert run_cli(["train", "rows.npy", "--out", "fr", *FAST], capsys)[0] == 0
    return work / "fr"


def test_the_run_records_its_data_file_and_refuses_a_changed_one(work, capsys):
    import hashlib

    run = _file_run(work, capsys)
    source = json.loads((run / "config.json").read_text())["data"]
    assert source["sha256"] == hashlib.sha256((work / "rows.npy").read_bytes()).hexdigest()
    np.save(work / "rows.npy", np.random.default_rng(1).random((80, 5)))  # replaced
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    for argv in (["train", "--out", "fr", "--resume", "--max-epochs", "3"],
                 ["evaluate", "fr"], ["analyze", "fr", "--no-baseline"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "", argv
        assert_one_line_error(err)
        assert "rows.npy" in err and "changed since the run was trained" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.unlink(), "heldout.npy: missing"),
    (lambda p: p.write_bytes(b"junk"), "no .npy header"),
    (lambda p: np.save(p, np.array([0.5])), "not a list of row numbers"),
])
def test_a_damaged_heldout_list_is_one_line(work, capsys, damage, words):
    run = _file_run(work, capsys)
    damage(run / "heldout.npy")
    for argv in (["evaluate", "fr"], ["train", "--out", "fr", "--resume", "--max-epochs", "3"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2, argv
        assert_one_line_error(err)
        assert words in err and "pickle" not in err


def test_failure_cleanup_never_touches_a_folder_it_did_not_make(work, capsys, monkeypatch):
    (work / "existing").mkdir()
    (work / "existing" / "precious.txt").write_text("keep")

    def fail(self, *args, **kwargs):
        raise RuntimeError(ALLOC_FAIL)

    monkeypatch.setattr(contractive.ContractiveAutoencoder, "_fit", fail)
    code, _, err = run_cli(["train", "digits", "--out", "newdir/../existing", *FAST], capsys)
    assert code == 2 and "not empty" in err  # "newdir/../existing" is "existing"
    assert (work / "existing" / "precious.txt").read_text() == "keep"
    assert not (work / "newdir").exists()


def test_out_of_memory_after_a_checkpoint_says_how_to_resume(work, capsys, monkeypatch):
    assert run_cli(["train", "digits", "--out", "r", *FAST], capsys)[0] == 0
    before = sorted(p.name for p in (work / "r").iterdir())

    def fail(self, *args, **kwargs):
        raise RuntimeError(ALLOC_FAIL)

    monkeypatch.setattr(contractive.ContractiveAutoencoder, "_fit", fail)
    code, _, err = run_cli(["train", "--out", "r", "--resume", "--max-epochs", "4"], capsys)
    assert code == 1
    assert_one_line_error(err)
    assert "out of memory" in err and "checkpoint of epoch 2" in err and "--resume" in err
    assert sorted(p.name for p in (work / "r").iterdir()) == before


def test_resume_does_not_read_an_unchanged_data_file_again(work, capsys, monkeypatch):
    from contractive import runs

    _file_run(work, capsys)
    calls = []
    digest = runs.file_digest
    monkeypatch.setattr(runs, "file_digest", lambda p: calls.append(p) or digest(p))
    code, _, err = run_cli(["train", "--out", "fr", "--resume", "--max-epochs", "3"], capsys)
    assert code == 0, err
    assert calls == []


def test_overwrite_refuses_a_run_folder_holding_its_data(work, capsys):
    (work / "r").mkdir()
    np.save(work / "r" / "rows.npy", np.random.default_rng(0).random((30, 4)))
    assert run_cli(["train", "r/rows.npy", "--out", "r2", *FAST], capsys)[0] == 0
    (work / "r" / "config.json").write_text((work / "r2" / "config.json").read_text())
    code, _, err = run_cli(["train", "r/rows.npy", "--out", "r", "--overwrite", *FAST], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "would delete DATA" in err
    assert (work / "r" / "rows.npy").is_file()
