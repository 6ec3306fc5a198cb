"""The training loop: batching, resumable state, divergence handling, early stopping."""

import math
from types import SimpleNamespace

import pytest
import torch

from contractive.models import CAEConfig, ContractiveAutoencoderModule
from contractive.training import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    _graphable,
    canonical_device,
    device_or_cpu,
    epoch_batches,
    gather,
    graphs_capture_generators,
    move_unpickled,
    resolve_device,
)

CPU = torch.device("cpu")


def _module(**kw) -> ContractiveAutoencoderModule:
    cfg = dict(in_features=6, n_components=3, contractive_weight=0.1)
    cfg.update(kw)
    return ContractiveAutoencoderModule(CAEConfig(**cfg), seed=0)


def _data(n=64, d=6, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def test_epoch_batches_cover_every_index_once():
    gen = torch.Generator().manual_seed(0)
    batches = epoch_batches(23, 5, gen)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(23))


def test_epoch_batches_are_seeded():
    a = epoch_batches(50, 7, torch.Generator().manual_seed(3))
    b = epoch_batches(50, 7, torch.Generator().manual_seed(3))
    c = epoch_batches(50, 7, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))


def test_epoch_batches_shard_disjointly_across_ranks():
    shards = [
        torch.cat(epoch_batches(31, 4, torch.Generator().manual_seed(1), rank=r, world_size=3))
        for r in range(3)
    ]
    together = torch.cat(shards).tolist()
    assert sorted(together) == list(range(31))  # disjoint and complete


def test_resolve_device():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == CPU
    with pytest.raises(ValueError, match="device='tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            resolve_device("cuda")


def test_device_or_cpu_falls_back_to_the_cpu_where_the_device_is_missing():
    assert device_or_cpu("cpu") == CPU
    cuda = torch.device("cuda") if torch.cuda.is_available() else CPU
    assert device_or_cpu("cuda") == cuda
    assert device_or_cpu(f"cuda:{torch.cuda.device_count()}") == CPU  # one past the last
    mps = getattr(torch.backends, "mps", None)
    assert device_or_cpu("mps").type == ("mps" if mps is not None and mps.is_available()
                                         else "cpu")


def test_move_unpickled_goes_to_the_device_named_where_there_is_one():
    module = torch.nn.Linear(3, 2)
    assert move_unpickled(module, "cpu") == CPU and module.weight.device == CPU
    where = move_unpickled(module, "cuda:0")
    assert where.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert module.weight.device.type == where.type


def test_move_unpickled_stays_on_the_cpu_where_the_move_fails(monkeypatch):
    # a full card, or a process forked from one that used CUDA: a warning, not an error
    import contractive.training as training

    module = torch.nn.Linear(3, 2)
    monkeypatch.setattr(training, "device_or_cpu", lambda device: torch.device("meta"))
    original = torch.nn.Module.to

    def to(self, *args, **kwargs):
        if args and str(args[0]) == "meta":
            raise RuntimeError("CUDA error: out of memory")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    with pytest.warns(RuntimeWarning, match="stays on the CPU: moving it to meta failed.*"
                                            "out of memory"):
        assert move_unpickled(module, "cuda:0") == CPU
    assert module.weight.device == CPU


def test_canonical_device_names_the_cuda_index(monkeypatch):
    # a bare "cuda" compared unequal to the tensors' "cuda:0", so CUDA graphs never engaged
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert canonical_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert canonical_device("cuda:0") == torch.device("cuda", 0)
    assert canonical_device(CPU) == CPU
    assert torch.device("cuda") != torch.device("cuda", 0)  # why it is needed


def test_graphable_needs_cuda_data_on_the_trainer_device_and_a_graph_safe_module(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    on = SimpleNamespace(device=torch.device("cuda", 0))
    trainer = SimpleNamespace(device=canonical_device("cuda"),
                              module=SimpleNamespace(graph_safe=True, draws_random=False))
    assert _graphable(trainer, (on,))
    assert not _graphable(trainer, (on, SimpleNamespace(device=CPU)))  # host-resident data
    assert not _graphable(SimpleNamespace(device=trainer.device,
                                          module=SimpleNamespace(graph_safe=False)), (on,))
    random = SimpleNamespace(device=trainer.device,
                             module=SimpleNamespace(graph_safe=True, draws_random=True))
    assert _graphable(random, (on,)) == graphs_capture_generators()
    undeclared = SimpleNamespace(device=trainer.device, module=SimpleNamespace(graph_safe=True))
    assert _graphable(undeclared, (on,)) == graphs_capture_generators()  # taken to draw
    monkeypatch.setattr(torch.cuda, "CUDAGraph", type("OldGraph", (), {}))  # an older torch
    assert not graphs_capture_generators() and not _graphable(random, (on,))
    assert _graphable(trainer, (on,))  # no draws: graphed all the same
    monkeypatch.setenv("CONTRACTIVE_CUDA_GRAPHS", "0")
    assert not _graphable(trainer, (on,))
    assert not _graphable(SimpleNamespace(device=CPU, module=trainer.module),
                          (SimpleNamespace(device=CPU),))


def test_captured_graphs_are_dropped_when_the_learning_rate_or_data_change():
    from contractive.training import GraphedSteps

    trainer = Trainer(_module(), TrainConfig(), CPU)
    data = (_data(),)
    graphs = GraphedSteps({}, None, [], GraphedSteps._key(trainer, data))
    assert graphs.matches(trainer, data)
    assert not graphs.matches(trainer, (_data(),))  # other tensors
    trainer.optimizer.param_groups[0]["lr"] *= 0.5  # a plateau schedule's step
    assert not graphs.matches(trainer, data)


class _FakeGraph:
    """Stands in for a captured CUDA graph: each replay records the batch indices it got."""

    def __init__(self, index, log):
        self.index, self.log = index, log

    def replay(self):
        self.log.append(self.index.clone())


def _fake_captures(monkeypatch, log, fail=()):
    from contractive.training import GraphedSteps

    def capture(trainer, data, k, names, acc):
        if k in fail:
            return None
        index = torch.empty((k, trainer.config.batch_size), dtype=torch.int64)
        return _FakeGraph(index, log), index

    monkeypatch.setattr(GraphedSteps, "_capture_steps", staticmethod(capture))
    return capture


def test_graph_replay_takes_every_full_batch_once_in_order(monkeypatch):
    from contractive.training import GraphedSteps

    log = []
    capture = _fake_captures(monkeypatch, log)
    trainer = Trainer(_module(), TrainConfig(batch_size=10), CPU)
    data = (_data(n=2055),)
    batches = epoch_batches(2055, 10, torch.Generator().manual_seed(0))  # 205 full, one of 5
    graphs = GraphedSteps({8: capture(trainer, data, 8, [], None)}, None, [], ())
    for done, remainder in ((8, 5), (0, 5), (203, 2), (205, None)):
        log.clear()
        assert graphs.replay(trainer, data, batches, done) == 205  # the 5-row batch: eager
        replayed = torch.cat([torch.empty(0, 10, dtype=torch.int64), *log]).view(-1)
        assert torch.equal(replayed, torch.cat([torch.empty(0, dtype=torch.int64),
                                                *batches[done:205]]))
        if remainder:  # the last replay is the remainder's own graph
            assert log[-1].shape == (remainder, 10)
    assert sorted(graphs.graphs) == [2, 5, 8]  # a remainder's graph is captured once


def test_a_failed_remainder_capture_leaves_the_epoch_to_eager_steps(monkeypatch):
    from contractive.training import GraphedSteps

    log = []
    capture = _fake_captures(monkeypatch, log, fail=(5,))
    trainer = Trainer(_module(), TrainConfig(batch_size=10), CPU)
    data = (_data(n=2050),)
    batches = epoch_batches(2050, 10, torch.Generator().manual_seed(0))
    trainer._graphs = graphs = GraphedSteps({8: capture(trainer, data, 8, [], None)}, None,
                                            [], ())
    assert graphs.replay(trainer, data, batches, 0) == 0 and log == []
    assert trainer._graphs is None and trainer._graphs_failed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trainer_captures_graphs_and_matches_eager(monkeypatch):
    # 205 full batches and one of 5 rows: the first epoch captures after 8 eager steps, so
    # both epochs end with 5 steps left over, replayed through one graph of 5 steps
    data = _data(n=2055, d=6)
    weights = []
    for flag in ("1", "0"):
        monkeypatch.setenv("CONTRACTIVE_CUDA_GRAPHS", flag)
        trainer = Trainer(_module(), TrainConfig(batch_size=10, max_epochs=2), "cuda")
        trainer.fit(data)
        assert (trainer._graphs is not None) == (flag == "1")
        if flag == "1":
            assert sorted(trainer._graphs.graphs) == [5, 8]
        weights.append([p.detach().cpu() for p in trainer.module.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kw", [
    {"dropout": 0.5, "input_dropout": 0.2},
    # adversarial training: a gradient inside the step, and a second forward pass with
    # masks of its own (an L2 step: a sign step would turn the last bit of a gradient entry
    # near 0 into a step of 2 eps)
    {"dropout": 0.5, "adversarial_weight": 0.5, "adversarial_epsilon": 0.3,
     "adversarial_norm": "l2"},
])
def test_cuda_graphs_draw_dropout_masks_as_eager_steps_do(monkeypatch, kw):
    from contractive.classifier import ClassifierModule

    x, y = _data(n=2000, d=6), torch.randint(0, 3, (2000,), generator=torch.Generator())
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("CONTRACTIVE_CUDA_GRAPHS", flag)
        module = ClassifierModule([6, 16], 3, "sigmoid", seed=0, **kw)
        trainer = Trainer(module, TrainConfig(batch_size=10, max_epochs=2, optimizer="sgd",
                                              learning_rate=0.1), "cuda")
        trainer.fit((x.cuda(), y.cuda()))
        assert (trainer._graphs is not None) == (flag == "1" and graphs_capture_generators())
        results.append(([p.detach().cpu() for p in module.parameters()],
                        trainer.noise_gen.get_state()))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    assert torch.equal(results[0][1], results[1][1])  # the generator advanced alike


def test_gather_takes_the_same_rows_of_every_tensor():
    x, y = _data(n=50, d=4), torch.arange(50)
    idx = torch.tensor([7, 3, 3, 49])
    gx, gy = gather((x, y), idx)
    assert torch.equal(gx, x[idx]) and torch.equal(gy, y[idx]) and gx.is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gather_moves_the_indices_to_each_tensor():
    # inputs too large for the GPU stay on the host while the targets move to it
    x, y = _data(n=50, d=4), torch.arange(50, device="cuda")
    gx, gy = gather((x, y), torch.tensor([7, 3]))
    assert gx.device.type == "cpu" and gy.device.type == "cuda"
    assert torch.equal(gy.cpu(), torch.tensor([7, 3]))


def test_train_config_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer='rmsprop'.*adam, sgd"):
        TrainConfig(optimizer="rmsprop")


def test_history_has_every_term_and_loss_decreases():
    x = _data()
    trainer = Trainer(_module(), TrainConfig(batch_size=16, max_epochs=15, learning_rate=1e-2), CPU)
    history = trainer.fit(x)
    assert len(history) == 15 and trainer.epoch == 15
    assert {"epoch", "loss", "reconstruction", "penalty", "time_s"} <= set(history[0])
    assert history[-1]["loss"] < history[0]["loss"]
    for h in history:  # the logged loss is the logged terms combined
        assert h["loss"] == pytest.approx(h["reconstruction"] + 0.1 * h["penalty"], rel=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"hidden_layer_sizes": (5,), "penalty_method": "hutchinson", "n_probes": 2,
         "higher_order_weight": 0.1},
    ],
)
def test_resume_from_state_dict_equals_uninterrupted_run(kw):
    x = _data()
    cfg = dict(batch_size=10, learning_rate=1e-2, seed=5)
    straight = Trainer(_module(**kw), TrainConfig(max_epochs=4, **cfg), CPU)
    straight.fit(x)

    first = Trainer(_module(**kw), TrainConfig(max_epochs=2, **cfg), CPU)
    first.fit(x)
    state = first.state_dict()
    resumed = Trainer(_module(**kw), TrainConfig(max_epochs=4, **cfg), CPU)
    resumed.load_state_dict(state)
    resumed.fit(x)

    assert resumed.epoch == 4
    for a, b in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_callbacks_run_after_each_epoch():
    seen = []
    trainer = Trainer(_module(), TrainConfig(batch_size=32, max_epochs=3), CPU,
                      callbacks=[lambda t: seen.append(t.epoch)])
    trainer.fit(_data())
    assert seen == [1, 2, 3]


class _Diverging(torch.nn.Module):
    """Wraps a module; its loss turns NaN from the given epoch's first batch on."""

    def __init__(self, inner, steps_per_epoch, bad_epoch):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.bad_after = steps_per_epoch * (bad_epoch - 1)

    def forward(self, x, generator=None):
        terms = self.inner(x, generator)
        self.calls += 1
        if self.calls > self.bad_after:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def test_non_finite_loss_stops_with_last_good_weights():
    x = _data(n=40)
    wrapped = _Diverging(_module(), steps_per_epoch=4, bad_epoch=3)
    snapshots = []
    trainer = Trainer(
        wrapped, TrainConfig(batch_size=10, max_epochs=10), CPU,
        callbacks=[lambda t: snapshots.append(
            {k: v.clone() for k, v in t.module.state_dict().items()})],
    )
    with pytest.raises(NonFiniteLossError,
                       match=r"epoch 3.*learning_rate.*contractive_weight") as info:
        trainer.fit(x)
    # the cause alone, for callers that say where their checkpoints are instead
    assert str(info.value).startswith(info.value.cause + "; the model keeps")
    assert "epoch 3" in info.value.cause and "model keeps" not in info.value.cause
    assert trainer.epoch == 2 and len(trainer.history) == 2
    state = trainer.module.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    for k, v in snapshots[-1].items():  # the weights after epoch 2
        assert torch.equal(state[k], v)


def test_early_stopping_stops_and_restores_best_weights():
    x, x_val = _data(seed=0), _data(n=16, seed=1)
    best = {}

    def remember(t):
        if t.epochs_no_improve == 0:
            best.update({k: v.clone() for k, v in t.module.state_dict().items()})

    trainer = Trainer(
        _module(), TrainConfig(batch_size=16, max_epochs=50, early_stopping=True,
                               n_iter_no_change=2, tol=1e9), CPU, callbacks=[remember],
    )
    history = trainer.fit(x, x_val)
    # with tol huge, only the first epoch counts as an improvement
    assert trainer.stopped_early and trainer.epoch == 3 and len(history) == 3
    assert "val_loss" in history[0] and math.isfinite(history[0]["val_loss"])
    for k, v in trainer.module.state_dict().items():
        assert torch.equal(v, best[k])


def test_early_stopping_needs_validation_data():
    trainer = Trainer(_module(), TrainConfig(early_stopping=True), CPU)
    with pytest.raises(ValueError, match="validation"):
        trainer.fit(_data())


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose step poisons the weights."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class _PoisonedStep(torch.nn.Module):
    def __init__(self, inner, step):
        super().__init__()
        self.inner, self.step, self.calls = inner, step, 0

    def forward(self, x, generator=None):
        terms = self.inner(x, generator)
        self.calls += 1
        if self.calls == self.step:
            terms["loss"] = _NanGrad.apply(terms["loss"])
        return terms


def test_nan_weights_after_a_finite_epoch_are_not_kept():
    """The last step of epoch 2 has a finite loss but NaN gradients: epoch 2 is the bad one,
    and the model and optimizer go back to their state after epoch 1."""
    x = _data(n=40)
    wrapped = _PoisonedStep(_module(), step=8)  # 4 steps per epoch: last step of epoch 2
    after_epoch_1 = {}
    trainer = Trainer(wrapped, TrainConfig(batch_size=10, max_epochs=5), CPU,
                      callbacks=[lambda t: after_epoch_1.setdefault("s", t.state_dict())])
    with pytest.raises(NonFiniteLossError, match="epoch 2.*weights became non-finite"):
        trainer.fit(x)
    assert trainer.epoch == 1
    for k, v in trainer.module.state_dict().items():
        assert torch.equal(v, after_epoch_1["s"]["module"][k])
    for group in trainer.optimizer.state_dict()["state"].values():
        assert all(torch.isfinite(t).all() for t in group.values() if torch.is_tensor(t))


def test_state_dict_is_a_snapshot():
    trainer = Trainer(_module(), TrainConfig(batch_size=16, max_epochs=1), CPU)
    trainer.fit(_data())
    state = trainer.state_dict()
    before = {k: v.clone() for k, v in state["module"].items()}
    trainer.config.max_epochs = 3
    trainer.fit(_data())
    for k, v in state["module"].items():
        assert torch.equal(v, before[k])


class _Softmax(torch.nn.Module):
    """A linear classifier: ``forward(x, y)`` returns its cross-entropy and error."""

    def __init__(self, d=4, k=3):
        super().__init__()
        self.lin = torch.nn.Linear(d, k)

    def forward(self, x, y, generator=None):
        logits = self.lin(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, y),
                "error": (logits.argmax(1) != y).float().mean()}


def _labelled(n=90, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 4, generator=gen) * 0.3
    x[:, :3] += 2 * torch.nn.functional.one_hot(y, 3)
    return x, y


def test_trainer_takes_inputs_and_targets_batched_together():
    x, y = _labelled()
    trainer = Trainer(_Softmax(), TrainConfig(batch_size=16, max_epochs=20, learning_rate=0.05),
                      CPU)
    history = trainer.fit((x, y), (x, y))
    assert history[-1]["error"] < history[0]["error"] or history[0]["error"] == 0
    assert history[-1]["val_error"] == pytest.approx(trainer.evaluate((x, y))["error"])
    assert history[-1]["val_error"] < 0.05  # separable: a batch mixing rows would not learn it
    with pytest.raises(ValueError, match="same number of rows"):
        trainer.fit((x, y[:-1]))


def test_plateau_schedule_lowers_the_learning_rate_and_resumes():
    x, y = _labelled()
    y_shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    cfg = dict(batch_size=30, max_epochs=12, learning_rate=0.1, lr_schedule="plateau",
               lr_patience=1, monitor="loss", optimizer="sgd", momentum=0.9, nesterov=True)
    torch.manual_seed(0)
    trainer = Trainer(_Softmax(), TrainConfig(**cfg), CPU)
    trainer.fit((x, y), (x, y_shuffled))  # validation labels are noise: no progress there
    rates = [h["learning_rate"] for h in trainer.history]
    assert rates[0] == 0.1 and rates[-1] < 0.1
    assert all(b <= a for a, b in zip(rates, rates[1:]))
    # resuming carries the scheduler's state: equal to an uninterrupted run
    torch.manual_seed(0)
    first = Trainer(_Softmax(), TrainConfig(**{**cfg, "max_epochs": 5}), CPU)
    first.fit((x, y), (x, y_shuffled))
    resumed = Trainer(_Softmax(), TrainConfig(**cfg), CPU)
    resumed.load_state_dict(first.state_dict())
    resumed.fit((x, y), (x, y_shuffled))
    assert [h["learning_rate"] for h in resumed.history] == rates


def test_schedule_and_monitor_are_validated():
    with pytest.raises(ValueError, match="lr_schedule='cosine'"):
        TrainConfig(lr_schedule="cosine")
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(optimizer="adam", nesterov=True)
    x, y = _labelled()
    trainer = Trainer(_Softmax(), TrainConfig(early_stopping=True, monitor="accuracy"), CPU)
    with pytest.raises(ValueError, match="monitor='accuracy'.*error"):
        trainer.fit((x, y), (x, y))
    with pytest.raises(ValueError, match="validation set"):
        Trainer(_Softmax(), TrainConfig(lr_schedule="plateau"), CPU).fit((x, y))


@pytest.mark.parametrize("kw", [
    {},  # the one-layer fast path (hand-derived backward under autocast)
    {"hidden_layer_sizes": (5,), "penalty_method": "exact"},  # autograd
])
def test_bf16_autocast_trains_close_to_float32_and_keeps_float32_state(kw):
    x = _data(n=96)
    runs = {}
    for precision in ("float32", "bf16"):
        module = _module(**kw)
        trainer = Trainer(module, TrainConfig(batch_size=32, max_epochs=8, learning_rate=1e-2,
                                              precision=precision), CPU)
        runs[precision] = trainer.fit(x)
        assert all(p.dtype == torch.float32 for p in module.parameters())
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in module.parameters())
        state = trainer.optimizer.state_dict()["state"]
        assert all(v.dtype == torch.float32 for s in state.values() for k, v in s.items()
                   if k != "step")
    first = runs["float32"][0]["loss"]
    for a, b in zip(runs["float32"], runs["bf16"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05, abs=0.02 * first)
    assert runs["bf16"][-1]["loss"] < runs["bf16"][0]["loss"]
    assert runs["bf16"][0]["loss"] != runs["float32"][0]["loss"]  # autocast took effect
    with pytest.raises(ValueError, match="precision='fp8'"):
        TrainConfig(precision="fp8")
