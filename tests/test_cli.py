"""The command line: ``contractive train`` in-process, via ``python -m contractive`` and via
the console script; run folders, bad inputs (exit 2, one line, nothing left behind),
--overwrite, --help/--version and determinism."""

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
from contractive.cli import main
from contractive.data import MNIST_FILES

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {
    "model.json", "model.safetensors", "metrics.json", "config.json", "history.json",
    "history.csv", "reconstructions.png", "training_curves.png",
}
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


def check_run_folder(out: Path) -> dict:
    assert out.is_dir()
    assert {p.name for p in out.iterdir()} == RUN_FILES
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
    assert metrics["dataset"] == "digits"
    assert metrics["n_train"] == 1437 and metrics["n_test"] == 360
    assert metrics["n_features"] == 64 and metrics["epochs"] == 2
    assert metrics["device"] == "cpu"
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == "digits"
    assert config["params"]["max_epochs"] == 2 and config["params"]["random_state"] == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    csv_lines = (out / "history.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 3 and "epoch" in csv_lines[0].split(",")
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


def test_train_mnist_from_data_dir(work, capsys, no_mnist, tmp_path):
    data_dir = write_fake_mnist(tmp_path / "fake_mnist")
    out = work / "run"
    code, _, err = run_cli(
        ["train", "mnist", "--data-dir", str(data_dir), "--out", str(out), *FAST], capsys)
    assert code == 0, err
    metrics = check_run_folder(out)
    assert metrics["dataset"] == "mnist" and metrics["n_train"] == 20
    assert metrics["n_features"] == 16


def test_overwrite_replaces_existing_run(work, capsys):
    out = work / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "sub").mkdir()
    code, _, err = run_cli(["train", "digits", "--out", str(out), "--overwrite", *FAST], capsys)
    assert code == 0, err
    check_run_folder(out)  # exactly the run files: old ones are gone
    assert os.listdir(work) == ["run"]


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
