"""The training loop: mini-batch optimisation of a module that returns its loss terms.

Design notes
------------
* The data live on the device as one tensor when they fit (always on the CPU); a batch is an
  index into it, so there is no per-sample ``DataLoader``. Larger-than-device data stay on
  the host and each batch is copied over.
* Batches come from ``epoch_batches``: a seeded permutation (drawn on the CPU, so the order
  is the same on every device) cut into batches. Its ``rank`` / ``world_size`` arguments
  shard the permutation for data-parallel training: every rank draws the same permutation
  and takes its own interleaved slice.
* The data are one tensor or a tuple of tensors with the same rows (inputs, then targets);
  a batch indexes all of them and the module is called as ``module(*batch, generator=)``.
* Loss terms are summed on the device and read back once per epoch (no host sync per step).
* ``Trainer.state_dict()`` holds everything needed to resume (module, optimizer, random
  generators, epoch, history, early-stopping state), and ``callbacks`` run after each epoch,
  which is where checkpoints (on rank 0) hook in.
* On CUDA, modules that declare ``graph_safe`` (no host syncs in a step, random draws only
  from the generator passed in) train through ``GraphedSteps``: ``GRAPH_STEPS`` whole steps
  (batch gather, forward, backward, optimizer) captured as one CUDA graph and replayed, the
  batch indices copied into a static buffer in between; the epoch's remainder (fewer than
  ``GRAPH_STEPS`` batches) replays a graph of its own. Eager steps: the first epoch's first
  step and warm-up (to a multiple of ``GRAPH_STEPS``, so every epoch leaves the same
  remainder) and a last batch smaller than the others. A module whose step
  ``draws_random`` (dropout, probes, noise) is graphed only where torch can register the
  trainer's generator with the graph, so each replay draws fresh numbers. Set
  ``CONTRACTIVE_CUDA_GRAPHS=0`` to train eagerly throughout.
* A non-finite loss ends training with ``NonFiniteLossError``; the module is restored to
  its weights after the last good epoch first.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import adam

Tensor = torch.Tensor
logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "plateau")
PRECISIONS = ("float32", "bf16")
_SHOWN = ("loss", "reconstruction", "penalty", "val_loss")  # on the progress bar


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the model holds the last good epoch's weights.

    ``cause``: what diverged and what to try, without what became of the model (a caller
    that saved checkpoints says where they are instead)."""

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = message if cause is None else cause


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: ``MemoryError`` (numpy), torch's
    ``OutOfMemoryError`` (a GPU) or its CPU allocator's RuntimeError."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                           or "not enough memory" in text
                                           or "out of memory" in text))


def memory_error_line(exc: BaseException) -> str:
    """The first line of an allocation failure's message, for a one-line error: torch's
    (a RuntimeError) cut to 200 characters, its allocator's internals being long."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:200] if isinstance(exc, RuntimeError) else first


@dataclass
class TrainConfig:
    """Optimisation settings (PyTorch vocabulary; the estimator translates to these)."""

    batch_size: int = 100
    max_epochs: int = 100
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    early_stopping: bool = False
    n_iter_no_change: int = 10
    tol: float = 1e-4
    monitor: str = "loss"
    lr_schedule: str = "constant"
    lr_factor: float = 0.5
    lr_patience: int = 3
    min_learning_rate: float = 1e-5
    precision: str = "float32"
    seed: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        """``monitor`` names the validation term (``val_<monitor>``) that early stopping and
        the ``plateau`` schedule watch; ``plateau`` multiplies the learning rate by
        ``lr_factor`` after ``lr_patience`` epochs without improvement (down to
        ``min_learning_rate``). ``precision='bf16'`` runs each training step's forward pass
        (and the hand-derived backward of the fast path) under ``torch.autocast`` in bfloat16;
        weights, gradients and optimizer state stay float32, and evaluation is float32."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={self.optimizer!r} is not known; valid: {', '.join(OPTIMIZERS)}"
            )
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} is not known; valid: {', '.join(SCHEDULES)}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision={self.precision!r} is not known; valid: {', '.join(PRECISIONS)}"
            )
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov=True needs optimizer='sgd' and momentum > 0")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; anything else must parse and be available."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not available on this machine (no CUDA); use 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} is not available: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    if dev.type == "mps" and not (torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} is not available on this machine; use 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def device_or_cpu(device: str | torch.device) -> torch.device:
    """``device`` where this machine has it, else the CPU."""
    try:
        return resolve_device(device)
    except ValueError:
        return torch.device("cpu")


def move_unpickled(module: torch.nn.Module, device: str) -> torch.device:
    """Move ``module``, just unpickled onto the CPU, back to the ``device`` it was pickled
    from (``"cuda:0"``, say) where this machine has it, so that the copy computes what the
    original did, to the bit; else leave it on the CPU: a machine without that device, or
    one where the move fails (a process forked from one that used CUDA, a full card; with
    a warning). Returns where the module is."""
    dev = device_or_cpu(device)
    if dev.type != "cpu":
        try:
            module.to(dev)
        except RuntimeError as exc:
            module.to("cpu")  # whatever had moved
            warnings.warn(f"the unpickled model stays on the CPU: moving it to {dev} failed "
                          f"({exc})", RuntimeWarning, stacklevel=3)
            return torch.device("cpu")
    return dev


def canonical_device(device: torch.device) -> torch.device:
    """``cuda`` with its index made explicit (``cuda:N``, the current device), so that it
    compares equal to the ``.device`` of the tensors placed on it; others unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def place_data(x: Tensor, device: torch.device, *, max_fraction: float = 0.5) -> Tensor:
    """Move ``x`` to ``device`` when it takes at most ``max_fraction`` of its free memory.

    Otherwise ``x`` stays on the host and each batch is copied over when it is used.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if x.numel() * x.element_size() > max_fraction * free:
            return x.cpu()
    return x.to(device)


def as_tuple(data: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """One tensor or several with the same number of rows, as a tuple."""
    parts = (data,) if isinstance(data, Tensor) else tuple(data)
    if not parts or any(p.shape[0] != parts[0].shape[0] for p in parts):
        raise ValueError(
            f"training data must be tensors with the same number of rows; got shapes "
            f"{[tuple(p.shape) for p in parts]}"
        )
    return parts


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, *, device: torch.device | None = None,
    rank: int = 0, world_size: int = 1,
) -> tuple[Tensor, ...]:
    """Index batches of one epoch: a seeded permutation of ``range(n)``, cut in order.

    The permutation is drawn on the CPU (same order on every device) and moved to
    ``device`` once. With ``world_size > 1`` every rank draws the same permutation (same
    generator state) and keeps positions ``rank, rank + world_size, ...``: disjoint shards.
    """
    perm = torch.randperm(n, generator=generator)[rank::world_size].to(device)
    return torch.split(perm, batch_size)


def gather(data: tuple[Tensor, ...], idx: Tensor) -> list[Tensor]:
    """The rows ``idx`` (int64, on the data's device) of every tensor of ``data``.
    ``index_select``, not ``t[idx]``: on a CPU it copies a batch of 100 MNIST rows in about
    10 us against 77 us for advanced indexing; on a GPU both are one kernel. The indices
    follow each tensor (inputs may stay on the host while small targets go to the GPU)."""
    return [t.index_select(0, idx.to(t.device, non_blocking=True)) for t in data]


class Trainer:
    """Fits a module whose ``forward(x, generator)`` returns a dict with a ``"loss"`` term.

    After ``fit``, ``history`` holds one dict per epoch: every term's mean over the epoch's
    samples (training, and ``val_*`` with a validation set), ``epoch`` and ``time_s``.
    """

    def __init__(
        self, module: nn.Module, config: TrainConfig, device: torch.device,
        callbacks: Sequence[Callable[[Trainer], None]] = (),
    ) -> None:
        device = canonical_device(device)
        self.module = module.to(device)
        self.config = config
        self.device = device
        self.callbacks = list(callbacks)
        self.optimizer = self._make_optimizer()
        # torch's fused Adam kernel, its parameters cut into pieces (``adam.py``), inside CUDA
        # graphs: 22 us of the seed configuration's 108 us graphed step was the update on 4
        # thread blocks. Eager steps keep torch's step: cutting costs the host about 100 us.
        # Whether a capture splits is decided when it starts (``adam.splits``).
        self.split_adam = device.type == "cuda"
        self._split_step = False
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.best_loss = math.inf
        self.best_state: dict | None = None
        self.epochs_no_improve = 0
        self.stopped_early = False
        self._graphs: GraphedSteps | None = None
        self._graphs_failed = False
        self.scheduler = None
        if config.lr_schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=config.lr_factor, patience=config.lr_patience,
                min_lr=config.min_learning_rate,
            )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = self.module.parameters()
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=c.learning_rate, momentum=c.momentum, nesterov=c.nesterov,
                weight_decay=c.weight_decay, foreach=True,
            )
        fused = self.device.type in ("cpu", "cuda")  # one kernel for the whole update
        return torch.optim.Adam(params, lr=c.learning_rate, weight_decay=c.weight_decay,
                                fused=fused, capturable=self.device.type == "cuda")

    # -- resumable state ----------------------------------------------------------------

    def state_dict(self) -> dict:
        """A snapshot (copies, not live references) of everything a resume needs."""
        return {
            "module": self._snapshot(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "epoch": self.epoch,
            "history": copy.deepcopy(self.history),
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "epochs_no_improve": self.epochs_no_improve,
            "stopped_early": self.stopped_early,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self._load_optimizer(state["optimizer"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.epoch = state["epoch"]
        try:
            self.noise_gen.set_state(state["noise_gen"])
        except RuntimeError:  # saved on another device type: its generator state differs
            warnings.warn(
                f"the training state comes from another device type than {self.device.type}: "
                "the estimate's probes and the CAE+H noise are re-seeded, so the run will not "
                "repeat an uninterrupted one exactly", RuntimeWarning, stacklevel=2,
            )
            self.noise_gen.manual_seed(self.config.seed + 1 + self.epoch)
        self.history = copy.deepcopy(state["history"])
        self.best_loss = state["best_loss"]
        self.best_state = state["best_state"]
        self.epochs_no_improve = state["epochs_no_improve"]
        self.stopped_early = state.get("stopped_early", False)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def _load_optimizer(self, state: dict) -> None:
        """Load ``state`` with this trainer's own implementation flags: a state saved on
        another device (a CPU run resumed on CUDA, say) carries its ``fused`` / ``capturable``
        / ``foreach``, and torch would take them over (then no CUDA graph could capture the
        step). With this device's flags, torch moves the step counts where they belong."""
        own = [{k: g[k] for k in ("fused", "capturable", "foreach") if k in g}
               for g in self.optimizer.param_groups]
        groups = state.get("param_groups", [])
        if isinstance(groups, list) and len(groups) == len(own):
            state = {**state, "param_groups": [{**saved, **mine} if isinstance(saved, dict)
                                               else saved for saved, mine in zip(groups, own)]}
        self.optimizer.load_state_dict(state)
        self._graphs = None  # captured graphs point at the optimizer's old state tensors

    # -- the loop -----------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def _weights_finite(self) -> bool:
        return bool(torch.stack([p.isfinite().all() for p in self.module.parameters()]).all())

    def _step(self, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """One optimisation step on ``batch`` (tensors on the device); the terms, detached."""
        self.optimizer.zero_grad(set_to_none=True)
        step = getattr(self.module, "forward_backward", None)
        # cache off: autocast's weight cache must not outlive a step inside a CUDA graph
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False,
                                  enabled=self.config.precision == "bf16")
        if step is not None:
            with autocast:
                terms = step(*batch, generator=self.noise_gen)
        else:
            with autocast:
                terms = self.module(*batch, generator=self.noise_gen)
            terms["loss"].backward()
        if self._split_step:
            adam.step(self.optimizer)
        else:
            self.optimizer.step()
        return {k: v.detach().float() for k, v in terms.items()}

    def _train_epoch(self, data: tuple[Tensor, ...]) -> dict[str, Tensor]:
        self.module.train()
        c = self.config
        n = data[0].shape[0]
        batches = epoch_batches(n, c.batch_size, self.shuffle_gen, device=data[0].device)
        graphs = self._graphs if self._graphs is not None and self._graphs.matches(self, data) \
            else None
        self._graphs = graphs  # graphs of another learning rate or data: freed before capture
        done = 0
        if graphs is None:  # the first step, eager, names the terms
            terms = self._step([b.to(self.device, non_blocking=True)
                                for b in gather(data, batches[0])])
            names = list(terms)
            acc = torch.zeros(len(names), device=self.device)
            acc.add_(torch.stack([terms[k] for k in names]), alpha=batches[0].shape[0])
            done = 1
            if _graphable(self, data):
                graphs, done = GraphedSteps.capture(self, data, batches, done, names, acc)
        else:
            names, acc = graphs.names, graphs.acc.zero_()
        if graphs is not None:
            done = graphs.replay(self, data, batches, done)
        for idx in batches[done:]:
            terms = self._step([b.to(self.device, non_blocking=True) for b in gather(data, idx)])
            acc.add_(torch.stack([terms[k] for k in names]), alpha=idx.shape[0])
        return dict(zip(names, acc.unbind()))

    @torch.no_grad()
    def evaluate(self, data: Tensor | Sequence[Tensor], chunk: int | None = None
                 ) -> dict[str, float]:
        """Mean loss terms over ``data`` (estimates drawn from a fixed seed, so comparable),
        in chunks of ``chunk`` rows (default: 4 batches, so memory stays as in training)."""
        data = as_tuple(data)
        chunk = chunk or 4 * self.config.batch_size
        self.module.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed + 2)
        sums: dict[str, Tensor] = {}
        n = data[0].shape[0]
        for start in range(0, n, chunk):
            batch = [t[start : start + chunk].to(self.device, non_blocking=True) for t in data]
            for name, value in self.module(*batch, generator=gen).items():
                contrib = value * batch[0].shape[0]
                sums[name] = sums[name] + contrib if name in sums else contrib
        return {k: float(v) / n for k, v in sums.items()}

    def fit(self, x_train: Tensor | Sequence[Tensor],
            x_val: Tensor | Sequence[Tensor] | None = None) -> list[dict[str, float]]:
        """Train until ``max_epochs`` (or early stopping); returns the history.

        x_train, x_val: ``(n, d)`` float tensors, or tuples of tensors with ``n`` rows
        (inputs and targets), placed on the device by ``place_data``. Continues from
        ``self.epoch``, so a trainer restored by ``load_state_dict`` resumes.
        """
        c = self.config
        if (c.early_stopping or self.scheduler is not None) and x_val is None:
            raise ValueError(f"early_stopping and lr_schedule={c.lr_schedule!r} need a "
                             "validation set")
        x_train = tuple(place_data(t, self.device) for t in as_tuple(x_train))
        if x_val is not None:
            x_val = tuple(place_data(t, self.device) for t in as_tuple(x_val))
        n_train = x_train[0].shape[0]
        epochs = range(self.epoch, self.epoch if self.stopped_early else c.max_epochs)
        bar = None
        if c.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(
                epochs, desc="training", unit="epoch", initial=self.epoch, total=c.max_epochs
            )
            epochs = bar
        last_good = (self._snapshot(), copy.deepcopy(self.optimizer.state_dict()))
        for _ in epochs:
            t0 = time.perf_counter()
            sums = self._train_epoch(x_train)
            record = {"epoch": self.epoch + 1}
            record.update({k: float(v) / n_train for k, v in sums.items()})
            if x_val is not None:
                record.update({f"val_{k}": v for k, v in self.evaluate(x_val).items()})
            bad = [f"{k} became {v}" for k, v in record.items() if not math.isfinite(v)]
            if not bad and not self._weights_finite():
                bad = ["weights became non-finite"]
            if bad:
                self.module.load_state_dict(last_good[0])
                self._load_optimizer(last_good[1])
                cause = (f"training diverged in epoch {self.epoch + 1}: the {bad[0]}; try a "
                         f"lower learning_rate (now {c.learning_rate:g}) or contractive_weight")
                raise NonFiniteLossError(
                    f"{cause}; the model keeps the weights of the last good epoch ({self.epoch})",
                    cause=cause,
                )
            record["time_s"] = time.perf_counter() - t0
            record["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
            self.history.append(record)
            self.epoch += 1
            last_good = (self._snapshot(), copy.deepcopy(self.optimizer.state_dict()))
            if bar is not None:
                bar.set_postfix(
                    {k: f"{record[k]:.4g}" for k in _SHOWN if k in record}
                )
            logger.debug("epoch %d: %s", self.epoch, record)
            if self.scheduler is not None:
                self.scheduler.step(record[self._monitored(record)])
            stop = self._early_stopping_step(record) if c.early_stopping else False
            for callback in self.callbacks:
                callback(self)
            if stop:
                self.stopped_early = True
                break
        if c.early_stopping and self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        if bar is not None:
            bar.close()
        return self.history

    def _monitored(self, record: dict[str, float]) -> str:
        key = f"val_{self.config.monitor}"
        if key not in record:
            raise ValueError(
                f"monitor={self.config.monitor!r}: the module returns no such term; it has "
                f"{', '.join(k[4:] for k in record if k.startswith('val_'))}"
            )
        return key

    def _early_stopping_step(self, record: dict[str, float]) -> bool:
        """Track the best validation loss; True when it has not improved by ``tol`` lately."""
        loss = record[self._monitored(record)]
        if loss < self.best_loss - self.config.tol:
            self.best_loss = loss
            self.best_state = self._snapshot()
            self.epochs_no_improve = 0
        else:
            self.epochs_no_improve += 1
        return self.epochs_no_improve >= self.config.n_iter_no_change



# -- CUDA graphs ---------------------------------------------------------------------------

GRAPH_STEPS = 8
#: At least this many eager steps on a side stream before capture (torch's advice).
_WARMUP_STEPS = 3


def graphs_capture_generators() -> bool:
    """Whether this torch's CUDA graphs can capture draws from a generator of our own
    (``CUDAGraph.register_generator_state``): then a replay draws fresh numbers, as eager
    steps would, and the generator's state advances with it."""
    return hasattr(torch.cuda.CUDAGraph, "register_generator_state")


def _graphable(trainer: Trainer, data: tuple[Tensor, ...]) -> bool:
    import os

    module = trainer.module
    return (trainer.device.type == "cuda" and bool(getattr(module, "graph_safe", False))
            and not getattr(trainer, "_graphs_failed", False)
            and (not getattr(module, "draws_random", True) or graphs_capture_generators())
            and all(t.device == trainer.device for t in data)
            and os.environ.get("CONTRACTIVE_CUDA_GRAPHS", "1") != "0")


class GraphedSteps:
    """Training steps captured as CUDA graphs: ``GRAPH_STEPS`` per graph, replayed over an
    epoch's full batches, and one graph for the remainder of the epoch (fewer steps,
    captured the first time an epoch ends with that many), so that after the first epoch's
    warm-up only a last batch smaller than the others runs eagerly.

    A graph gathers its batches from the resident data through ``index`` (``(k, B)`` int64,
    static), runs each step (forward, backward, optimizer) and adds the terms, times ``B``,
    into ``acc``; the trainer's noise generator is registered with it, so random draws
    advance at each replay as they would eagerly. The graphs are tied to the data tensors,
    the batch size and the learning rates they were captured with (``matches``), and dropped
    when the optimizer's state is replaced. Capture failing is not fatal: training goes on
    eagerly, with a warning.
    """

    def __init__(self, graphs: dict[int, tuple], acc: Tensor, names: list[str],
                 key: tuple) -> None:
        self.graphs, self.acc, self.names, self.key = graphs, acc, names, key

    @staticmethod
    def _key(trainer: Trainer, data: tuple[Tensor, ...]) -> tuple:
        return (tuple(t.data_ptr() for t in data), data[0].shape[0], trainer.config.batch_size,
                tuple(float(g["lr"]) for g in trainer.optimizer.param_groups))

    def matches(self, trainer: Trainer, data: tuple[Tensor, ...]) -> bool:
        return self.key == self._key(trainer, data)

    @staticmethod
    def _capture_steps(trainer: Trainer, data: tuple[Tensor, ...], k: int, names: list[str],
                       acc: Tensor) -> tuple | None:
        """``(graph, index)`` for ``k`` steps, or None (with a warning) where capture fails.
        Capturing runs nothing: the steps run when the graph is replayed."""
        index = torch.empty((k, trainer.config.batch_size), dtype=torch.int64,
                            device=trainer.device)
        graph = torch.cuda.CUDAGraph()
        draws = bool(getattr(trainer.module, "draws_random", True))
        saved_gen = trainer.noise_gen.get_state()
        try:
            if draws:  # dropout masks, probes, noise: fresh numbers at each replay
                graph.register_generator_state(trainer.noise_gen)
            trainer._split_step = trainer.split_adam and adam.splits(trainer.optimizer)
            with torch.cuda.graph(graph):
                for j in range(k):
                    terms = trainer._step(gather(data, index[j]))
                    acc.add_(torch.stack([terms[n] for n in names]), alpha=index.shape[1])
        except (RuntimeError, TypeError) as exc:  # an op that cannot be captured: stay eager
            warnings.warn(f"CUDA graph capture failed ({exc}); training eagerly",
                          RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize(trainer.device)
            trainer.module.zero_grad(set_to_none=True)
            if draws:  # a generator left registered with a failed capture cannot draw again
                trainer.noise_gen = torch.Generator(device=trainer.device)
                trainer.noise_gen.set_state(saved_gen)
            return None
        finally:
            trainer._split_step = False
        return graph, index

    @classmethod
    def capture(cls, trainer: Trainer, data: tuple[Tensor, ...], batches: Sequence[Tensor],
                done: int, names: list[str], acc: Tensor) -> tuple[GraphedSteps | None, int]:
        """Warm up eagerly on a side stream (real steps on the next batches), then capture
        ``GRAPH_STEPS`` steps. Returns the graphs (or None) and the batches used so far.
        The warm-up ends on a multiple of ``GRAPH_STEPS`` batches, so this epoch leaves the
        same remainder as the next ones and one remainder graph serves them all (a second
        one cost an H200 6 ms of capture in the second epoch)."""
        B, K = trainer.config.batch_size, GRAPH_STEPS
        full = sum(1 for b in batches if b.shape[0] == B)
        warmup = -done % K
        if warmup < _WARMUP_STEPS:
            warmup += K
        if full - done - warmup < K:  # too few batches to align: the least warm-up
            warmup = _WARMUP_STEPS
        if full - done - warmup < K:
            return None, done
        side = torch.cuda.Stream(trainer.device)
        side.wait_stream(torch.cuda.current_stream(trainer.device))
        with torch.cuda.stream(side):
            for idx in batches[done : done + warmup]:
                terms = trainer._step(gather(data, idx))
                acc.add_(torch.stack([terms[k] for k in names]), alpha=B)
        torch.cuda.current_stream(trainer.device).wait_stream(side)
        done += warmup
        captured = cls._capture_steps(trainer, data, K, names, acc)
        if captured is None:
            # an op that cannot be captured fails every epoch: train eagerly from now on
            # (a transient failure, such as memory, also ends graphing for this trainer)
            trainer._graphs_failed = True
            return None, done
        graphs = cls({K: captured}, acc, names, cls._key(trainer, data))
        trainer._graphs = graphs
        return graphs, done

    def replay(self, trainer: Trainer, data: tuple[Tensor, ...], batches: Sequence[Tensor],
               done: int) -> int:
        """Replay over the full batches from ``done`` on, ``GRAPH_STEPS`` at a time, then the
        remainder through a graph of that many steps; returns how many batches are done
        (the rest, a last batch smaller than the others, runs eagerly)."""
        B, K = trainer.config.batch_size, GRAPH_STEPS
        full = sum(1 for b in batches if b.shape[0] == B)
        if full <= done:
            return done
        flat = torch.cat(list(batches[done:full])).view(-1, B)  # (full - done, B)
        rest = flat.shape[0] % K
        if rest and rest not in self.graphs:
            captured = self._capture_steps(trainer, data, rest, self.names, self.acc)
            if captured is None:  # the generator may have been replaced: all eager now
                trainer._graphs, trainer._graphs_failed = None, True
                return done
            self.graphs[rest] = captured
        pos = 0
        for k in (K, rest):
            if k and k in self.graphs:
                graph, index = self.graphs[k]
                while flat.shape[0] - pos >= k:
                    index.copy_(flat[pos : pos + k], non_blocking=True)
                    graph.replay()
                    pos += k
        return done + pos
