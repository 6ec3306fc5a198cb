"""Crash safety with real processes: ``contractive train`` killed with SIGKILL at random
moments (or stopped with Ctrl-C) and continued with ``--resume`` ends with the very weights
of an uninterrupted run, and never leaves an unloadable checkpoint behind.

Every process runs with one thread (``OMP_NUM_THREADS=1``), the reference run too, so the
results are bitwise comparable. An epoch takes some tens of milliseconds and a checkpoint
is written after each, so the kills land in computation and in checkpoint writes alike."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contractive.checkpoint import CHECKPOINT_NAME, load_checkpoint

N_EPOCHS = 40
ARGS = ["train", "digits", "--max-epochs", str(N_EPOCHS), "--seed", "0", "--batch-size", "32",
        "--n-components", "8"]
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _default_sigint() -> None:
    """A suite started in the background (``nohup ... &``) inherits SIGINT ignored, and so
    would the child: Python then installs no KeyboardInterrupt handler. Ctrl-C as a user's
    terminal delivers it needs the default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "contractive", *ARGS, "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        cwd=out.parent, preexec_fn=_default_sigint,
    )


def _epochs_logged(out: Path) -> int:
    try:
        return len((out / "train.log").read_text().splitlines())
    except FileNotFoundError:
        return 0


def _wait_for_progress(proc: subprocess.Popen, out: Path, after: int) -> bool:
    """Wait until the log shows more than ``after`` epochs; False if the process ended."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if _epochs_logged(out) > after:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no progress in {TIMEOUT_S} s")


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def _assert_same_model(a: Path, b: Path) -> None:
    import torch

    ta, tb = _tensors(a / "model.safetensors"), _tensors(b / "model.safetensors")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), key


def _check_loadable(out: Path, last_epoch: int) -> int:
    """The checkpoint, if any, loads and is no older than the last one seen."""
    ckpt = out / CHECKPOINT_NAME
    if not ckpt.exists():
        assert last_epoch == 0, "a checkpoint disappeared"
        return 0
    state, meta = load_checkpoint(ckpt)  # raises if damaged
    assert 1 <= state["epoch"] <= N_EPOCHS and len(state["history"]) == state["epoch"]
    assert state["epoch"] >= last_epoch
    assert meta["params"]["random_state"] == 0
    if (out / "config.json").exists():
        json.loads((out / "config.json").read_text())
    return state["epoch"]


def _finish(out: Path) -> subprocess.CompletedProcess:
    proc = _start(out, "--resume")
    stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, stderr
    return subprocess.CompletedProcess(proc.args, 0, stdout, stderr)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, started at once and run alongside the tests that need it."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = _start(out)

    def result() -> Path:
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, stderr
        return out

    yield result
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigkill_at_random_moments_then_resume(tmp_path, reference):
    rng = random.Random(20240601)
    out = tmp_path / "run"
    # "early": a random moment from the start (imports, data, config, first epochs);
    # "epoch": a random moment shortly after an epoch's checkpoint and log line
    plan = ["early", "epoch", "early", "epoch"]
    last_epoch, kills, seen = 0, 0, []
    for i, kind in enumerate(plan):
        before = _epochs_logged(out)
        proc = _start(out, *(["--resume"] if i else []))
        if kind == "early":  # a random delay, but never more than a few epochs of progress
            deadline = time.monotonic() + rng.uniform(0.3, 5.0)
            while (time.monotonic() < deadline and proc.poll() is None
                   and _epochs_logged(out) <= before + 3):
                time.sleep(0.002)
        elif not _wait_for_progress(proc, out, before):
            break
        else:
            time.sleep(rng.uniform(0.0, 0.12))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=TIMEOUT_S)
        if proc.returncode == 0:
            break  # it finished first
        assert proc.returncode == -signal.SIGKILL
        last_epoch = _check_loadable(out, last_epoch)
        seen.append(last_epoch)
    assert kills >= 3, seen
    assert 0 < max(seen) < N_EPOCHS, seen  # some kills landed mid-training

    done = _finish(out)
    assert "run folder" in done.stdout
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, N_EPOCHS + 1))
    assert [n for n in os.listdir(out) if n.startswith(".") or n.endswith(".tmp")] == []
    _assert_same_model(out, reference())


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    """(Resuming after Ctrl-C is test_cli.py::test_ctrl_c_during_checkpoint_write_...)"""
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        proc = _start(out)
        assert _wait_for_progress(proc, out, 2), "finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        finished = proc.returncode == 0 and (out / "model.safetensors").exists()
        if not finished:
            break
        # on a loaded machine the whole run can end before the signal lands: again
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "--resume" in lines[0] and str(out) in lines[0]
    assert stdout == ""
    epoch = _check_loadable(out, 1)
    assert 3 <= epoch < N_EPOCHS
    # the epoch it names is the checkpoint's, even when the signal stopped the write of the
    # next checkpoint (test_cli.py::test_ctrl_c_during_checkpoint_write_names_saved_epoch)
    assert f"epoch {epoch} " in lines[0]
    assert not (out / "model.safetensors").exists()
