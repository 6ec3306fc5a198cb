"""Training checkpoints (``contractive.checkpoint``): exact round trips of a
``Trainer.state_dict()``, bitwise-identical resumes, detection of every corruption, atomic
writes."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from contractive import checkpoint
from contractive.checkpoint import load_checkpoint, save_checkpoint
from contractive.models import CAEConfig, ContractiveAutoencoderModule
from contractive.training import TrainConfig, Trainer

CPU = torch.device("cpu")
D = 6


def _module(**kw) -> ContractiveAutoencoderModule:
    cfg = dict(in_features=D, n_components=3, contractive_weight=0.1)
    cfg.update(kw)
    return ContractiveAutoencoderModule(CAEConfig(**cfg), seed=0)


def _data(n=48, seed=0) -> torch.Tensor:
    return torch.rand(n, D, generator=torch.Generator().manual_seed(seed))


SETUPS = {
    # name: (module config, train config)
    "adam-hutchinson-higher-order": (
        dict(hidden_layer_sizes=(5,), penalty_method="hutchinson", n_probes=2,
             higher_order_weight=0.05, higher_order_sigma=0.2, higher_order_copies=2),
        dict(optimizer="adam", learning_rate=1e-2),
    ),
    "sgd-momentum-closed-form": (
        dict(activation="tanh", tied_weights=True),
        dict(optimizer="sgd", learning_rate=5e-2, momentum=0.9, weight_decay=1e-4),
    ),
}


def _trainer(setup: str, max_epochs: int, *, early_stopping=False, seed=0) -> Trainer:
    mod_kw, train_kw = SETUPS[setup]
    config = TrainConfig(batch_size=16, max_epochs=max_epochs, seed=seed,
                         early_stopping=early_stopping, n_iter_no_change=100, **train_kw)
    return Trainer(_module(**mod_kw), config, CPU)


def assert_same(a, b, where="state") -> None:
    """Exact structural equality: types (tuple vs list, int vs str keys), tensors bitwise."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert type(k) is type(next(kk for kk in b if kk == k)), f"{where}: key {k!r}"
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def trained_states() -> dict[str, dict]:
    states = {}
    for setup in SETUPS:
        t = _trainer(setup, 3)
        t.fit(_data())
        states[setup] = t.state_dict()
    return states


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("setup", list(SETUPS))
def test_round_trip_of_a_trainer_state(tmp_path, trained_states, setup):
    state = trained_states[setup]
    # what makes this state hard to store: int keys, tuples, inf, tensors at every depth
    assert 0 in state["optimizer"]["state"]
    assert state["best_loss"] == math.inf
    p = tmp_path / "ckpt.safetensors"
    save_checkpoint(p, state, {"params": {"n": 3, "sizes": [5]}, "note": "x"})
    loaded, meta = load_checkpoint(p)
    assert_same(state, loaded)
    assert meta == {"params": {"n": 3, "sizes": [5]}, "note": "x"}
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_adam_betas_stay_a_tuple(tmp_path, trained_states):
    state = trained_states["adam-hutchinson-higher-order"]
    p = tmp_path / "c.safetensors"
    save_checkpoint(p, state)
    loaded, meta = load_checkpoint(p)
    assert meta == {}
    assert isinstance(loaded["optimizer"]["param_groups"][0]["betas"], tuple)
    assert set(loaded["optimizer"]["state"]) == set(range(len(state["optimizer"]["state"])))


def test_round_trip_of_awkward_values(tmp_path):
    state = {
        "inf": math.inf, "-inf": -math.inf, "nan": math.nan, "big": 2**62, "neg": -3,
        "f": 0.1, "none": None, "bools": [True, False], "nested": {1: (2, [3, (4,)]), "1": "s"},
        "empty": {}, "empty_tuple": (), "empty_list": [],
        "tensors": {
            "f64": torch.arange(5, dtype=torch.float64) / 3,
            "i64": torch.tensor([-(2**40), 7]), "u8": torch.arange(3, dtype=torch.uint8),
            "bool": torch.tensor([True, False]), "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 4), "bf16": torch.ones(2, dtype=torch.bfloat16),
            "view": torch.arange(12.0).reshape(3, 4)[:, 1],  # non-contiguous
        },
        "same tensor twice": [torch.ones(2)] * 2,
        "unicode key é/": {"a/b": 1},
    }
    p = tmp_path / "c.safetensors"
    save_checkpoint(p, state)
    loaded, _ = load_checkpoint(p)
    assert_same(state, loaded)


def test_unsupported_values_are_refused_before_writing(tmp_path):
    p = tmp_path / "c.safetensors"
    with pytest.raises(TypeError, match="set"):
        save_checkpoint(p, {"a": {1, 2}})
    with pytest.raises((TypeError, ValueError)):
        save_checkpoint(p, {"a": 1}, metadata={"x": object()})
    assert os.listdir(tmp_path) == []


def test_early_stopping_state_round_trip(tmp_path):
    t = _trainer("sgd-momentum-closed-form", 3, early_stopping=True)
    t.fit(_data(), _data(16, seed=1))
    state = t.state_dict()
    assert state["best_state"] is not None and math.isfinite(state["best_loss"])
    save_checkpoint(tmp_path / "c", state)
    assert_same(state, load_checkpoint(tmp_path / "c")[0])


# -- resuming -------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("early_stopping", [False, True], ids=["plain", "early-stopping"])
def test_resume_from_checkpoint_is_bitwise_identical(tmp_path, setup, early_stopping):
    x = _data()
    val = _data(16, seed=1) if early_stopping else None
    full = _trainer(setup, 6, early_stopping=early_stopping)
    full.fit(x, val)

    first = _trainer(setup, 3, early_stopping=early_stopping)
    first.fit(x, val)
    save_checkpoint(tmp_path / "c", first.state_dict())
    del first
    # a fresh trainer (other initial weights) restored from the file, run to the end
    resumed = _trainer(setup, 6, early_stopping=early_stopping, seed=0)
    with torch.no_grad():
        for p in resumed.module.parameters():
            p.add_(1.0)
    state, _ = load_checkpoint(tmp_path / "c")
    resumed.load_state_dict(state)
    resumed.fit(x, val)

    assert resumed.epoch == full.epoch == 6
    for (name, a), (_, b) in zip(full.module.state_dict().items(),
                                 resumed.module.state_dict().items()):
        assert torch.equal(a, b), name
    assert_same(full.optimizer.state_dict(), resumed.optimizer.state_dict())
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "time_s"} for h in resumed.history]


def test_resume_checkpointing_every_epoch_via_callback(tmp_path):
    """The callback hook (how ``contractive train`` checkpoints): stop after any epoch,
    resume from the file, the result is the uninterrupted one's."""
    x = _data()
    full = _trainer("adam-hutchinson-higher-order", 5)
    full.fit(x)
    p = tmp_path / "c.safetensors"
    saved = []

    def hook(trainer):
        save_checkpoint(p, trainer.state_dict(), {"epoch": trainer.epoch})
        saved.append(trainer.epoch)
        if trainer.epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C after the checkpoint of epoch 2

    t = _trainer("adam-hutchinson-higher-order", 5)
    t.callbacks.append(hook)
    with pytest.raises(KeyboardInterrupt):
        t.fit(x)
    state, meta = load_checkpoint(p)
    assert meta == {"epoch": 2} and state["epoch"] == 2 and saved == [1, 2]
    t2 = _trainer("adam-hutchinson-higher-order", 5)
    t2.load_state_dict(state)
    t2.fit(x)
    for a, b in zip(full.module.parameters(), t2.module.parameters()):
        assert torch.equal(a, b)


# -- corruption -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained_states) -> tuple[Path, bytes, int]:
    p = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    save_checkpoint(p, trained_states["adam-hutchinson-higher-order"], {"k": 1})
    blob = p.read_bytes()
    data_start = 8 + int.from_bytes(blob[:8], "little")
    return p, blob, data_start


def test_flipped_byte_in_tensor_data_is_a_checksum_error(tmp_path, saved):
    _, blob, start = saved
    assert len(blob) - start > 100
    p = tmp_path / "bad.safetensors"
    # the first and last 32 bytes and every 16th between, flipping a different bit each time
    n = len(blob) - start
    positions = sorted({*range(start, start + 32), *range(len(blob) - 32, len(blob)),
                        *range(start, len(blob), 16)})
    assert len(positions) < 0.2 * n
    for i, pos in enumerate(positions):
        bad = bytearray(blob)
        bad[pos] ^= 1 << (i % 8)
        p.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="checksum") as info:
            load_checkpoint(p)
        assert str(p) in str(info.value), pos


def test_flipped_byte_in_header_is_never_loaded_as_other_state(tmp_path, saved):
    """A flip in the header (lengths, names, shapes, dtypes, the JSON structure, the
    checksums) gives a ValueError naming the file, or at worst loads the very same state."""
    original, blob, start = saved
    reference, ref_meta = load_checkpoint(original)
    p = tmp_path / "bad.safetensors"
    positions = list(range(0, min(start, 64))) + list(range(64, start, 7))
    for pos in positions:
        for mask in (0x01, 0x10, 0x80):
            bad = bytearray(blob)
            bad[pos] ^= mask
            p.write_bytes(bytes(bad))
            try:
                state, meta = load_checkpoint(p)
            except ValueError as exc:
                assert str(p) in str(exc), (pos, mask, str(exc))
            else:
                assert_same(reference, state, f"byte {pos} ^ {mask:#x}")
                assert meta == ref_meta


@pytest.mark.parametrize("keep", ["0", "4", "8", "16", "mid-header", "header", "mid-data",
                                  "all-but-one"])
def test_truncated_checkpoint(tmp_path, saved, keep):
    _, blob, start = saved
    n = {"mid-header": start // 2, "header": start, "mid-data": (start + len(blob)) // 2,
         "all-but-one": len(blob) - 1}.get(keep) or int(keep)
    p = tmp_path / "checkpoint.safetensors"
    p.write_bytes(blob[:n])
    with pytest.raises(ValueError, match="truncated|corrupted|checksum") as info:
        load_checkpoint(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_appended_bytes(tmp_path, saved):
    _, blob, _ = saved
    p = tmp_path / "c"
    p.write_bytes(blob + b"\x00" * 8)
    with pytest.raises(ValueError, match=str(p)):
        load_checkpoint(p)


def test_model_file_is_not_a_checkpoint(tmp_path):
    from contractive import ContractiveAutoencoder

    X = _data(30).numpy()
    ContractiveAutoencoder(n_components=2, max_epochs=1, random_state=0).fit(X).save(tmp_path)
    p = tmp_path / "model.safetensors"
    assert p.is_file()
    with pytest.raises(ValueError, match=str(p) + ".*not a contractive checkpoint"):
        load_checkpoint(p)


def test_foreign_files(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, p)
    with pytest.raises(ValueError, match="not a contractive checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "text.safetensors"
    q.write_text("hello")
    with pytest.raises(ValueError, match=str(q)):
        load_checkpoint(q)
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_checkpoint(tmp_path)


def _with_metadata(blob: bytes, start: int, **changes) -> bytes:
    """The checkpoint ``blob`` with entries of its safetensors metadata replaced."""
    header = json.loads(blob[8:start])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return len(text).to_bytes(8, "little") + text + blob[start:]


def test_newer_format_is_refused(tmp_path, saved):
    _, blob, start = saved
    p = tmp_path / "new.safetensors"
    p.write_bytes(_with_metadata(blob, start,
                                 format_version=str(checkpoint.FORMAT_VERSION + 1)))
    with pytest.raises(ValueError, match=re.escape(str(p)) + ".*not supported"):
        load_checkpoint(p)


@pytest.mark.parametrize("changes", [
    {"format_version": "!"}, {"format_version": ""}, {"structure": "{"},
    {"structure": "[]"}, {"sha256": "0" * 64},
], ids=["version-not-a-number", "version-empty", "structure-bad-json", "structure-list",
        "sha256-wrong"])
def test_damaged_metadata_names_the_file(tmp_path, saved, changes):
    """Whatever is wrong in the metadata, the error is a ValueError that names the file."""
    _, blob, start = saved
    p = tmp_path / "damaged.safetensors"
    p.write_bytes(_with_metadata(blob, start, **changes))
    with pytest.raises(ValueError) as info:
        load_checkpoint(p)
    assert str(p) in str(info.value), str(info.value)


# -- atomic writes --------------------------------------------------------------------------


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path, trained_states):
    p = tmp_path / "checkpoint.safetensors"
    for setup in SETUPS:
        save_checkpoint(p, trained_states[setup])
        assert os.listdir(tmp_path) == ["checkpoint.safetensors"]
    assert_same(trained_states["sgd-momentum-closed-form"], load_checkpoint(p)[0])


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, trained_states, monkeypatch):
    p = tmp_path / "checkpoint.safetensors"
    save_checkpoint(p, trained_states["sgd-momentum-closed-form"])
    before = p.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, trained_states["adam-hutchinson-higher-order"])
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.safetensors"]
    load_checkpoint(p)
