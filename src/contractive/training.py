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
* Loss terms are summed on the device and read back once per epoch (no host sync per step).
* ``Trainer.state_dict()`` holds everything needed to resume (module, optimizer, random
  generators, epoch, history, early-stopping state), and ``callbacks`` run after each epoch,
  which is where checkpoints (on rank 0) hook in.
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

Tensor = torch.Tensor
logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
_SHOWN = ("loss", "reconstruction", "penalty", "val_loss")  # on the progress bar


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the model holds the last good epoch's weights."""


@dataclass
class TrainConfig:
    """Optimisation settings (PyTorch vocabulary; the estimator translates to these)."""

    batch_size: int = 100
    max_epochs: int = 100
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    early_stopping: bool = False
    n_iter_no_change: int = 10
    tol: float = 1e-4
    seed: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={self.optimizer!r} is not known; valid: {', '.join(OPTIMIZERS)}"
            )


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


def place_data(x: Tensor, device: torch.device, *, max_fraction: float = 0.5) -> Tensor:
    """Move ``x`` to ``device`` when it takes at most ``max_fraction`` of its free memory.

    Otherwise ``x`` stays on the host and each batch is copied over when it is used.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if x.numel() * x.element_size() > max_fraction * free:
            return x.cpu()
    return x.to(device)


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


class Trainer:
    """Fits a module whose ``forward(x, generator)`` returns a dict with a ``"loss"`` term.

    After ``fit``, ``history`` holds one dict per epoch: every term's mean over the epoch's
    samples (training, and ``val_*`` with a validation set), ``epoch`` and ``time_s``.
    """

    def __init__(
        self, module: nn.Module, config: TrainConfig, device: torch.device,
        callbacks: Sequence[Callable[[Trainer], None]] = (),
    ) -> None:
        self.module = module.to(device)
        self.config = config
        self.device = device
        self.callbacks = list(callbacks)
        self.optimizer = self._make_optimizer()
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.best_loss = math.inf
        self.best_state: dict | None = None
        self.epochs_no_improve = 0
        self.stopped_early = False

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = self.module.parameters()
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=c.learning_rate, momentum=c.momentum, weight_decay=c.weight_decay
            )
        fused = self.device.type in ("cpu", "cuda")  # one kernel for the whole update
        return torch.optim.Adam(params, lr=c.learning_rate, weight_decay=c.weight_decay,
                                fused=fused)

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
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
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

    # -- the loop -----------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def _weights_finite(self) -> bool:
        return bool(torch.stack([p.isfinite().all() for p in self.module.parameters()]).all())

    def _train_epoch(self, x: Tensor) -> dict[str, Tensor]:
        self.module.train()
        names: list[str] = []
        acc: Tensor | None = None  # running sums of the terms, on the device
        c = self.config
        batches = epoch_batches(x.shape[0], c.batch_size, self.shuffle_gen, device=x.device)
        for idx in batches:
            batch = x[idx].to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            step = getattr(self.module, "forward_backward", None)
            if step is not None:
                terms = step(batch, generator=self.noise_gen)
            else:
                terms = self.module(batch, generator=self.noise_gen)
                terms["loss"].backward()
            self.optimizer.step()
            if acc is None:
                names = list(terms)
                acc = torch.zeros(len(names), device=self.device)
            acc.add_(torch.stack([terms[n].detach() for n in names]), alpha=batch.shape[0])
        return dict(zip(names, acc.unbind())) if acc is not None else {}

    @torch.no_grad()
    def evaluate(self, x: Tensor, chunk: int | None = None) -> dict[str, float]:
        """Mean loss terms over ``x`` (estimates drawn from a fixed seed, so comparable), in
        chunks of ``chunk`` rows (default: 4 batches, so memory stays as in training)."""
        chunk = chunk or 4 * self.config.batch_size
        self.module.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed + 2)
        sums: dict[str, Tensor] = {}
        for start in range(0, x.shape[0], chunk):
            batch = x[start : start + chunk].to(self.device, non_blocking=True)
            for name, value in self.module(batch, generator=gen).items():
                contrib = value * batch.shape[0]
                sums[name] = sums[name] + contrib if name in sums else contrib
        return {k: float(v) / x.shape[0] for k, v in sums.items()}

    def fit(self, x_train: Tensor, x_val: Tensor | None = None) -> list[dict[str, float]]:
        """Train until ``max_epochs`` (or early stopping); returns the history.

        x_train, x_val: ``(n, d)`` float tensors (placed on the device by ``place_data``).
        Continues from ``self.epoch``, so a trainer restored by ``load_state_dict`` resumes.
        """
        c = self.config
        if c.early_stopping and x_val is None:
            raise ValueError("early_stopping needs a validation set")
        x_train = place_data(x_train, self.device)
        x_val = None if x_val is None else place_data(x_val, self.device)
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
            record.update({k: float(v) / x_train.shape[0] for k, v in sums.items()})
            if x_val is not None:
                record.update({f"val_{k}": v for k, v in self.evaluate(x_val).items()})
            bad = [f"{k} became {v}" for k, v in record.items() if not math.isfinite(v)]
            if not bad and not self._weights_finite():
                bad = ["weights became non-finite"]
            if bad:
                self.module.load_state_dict(last_good[0])
                self.optimizer.load_state_dict(last_good[1])
                raise NonFiniteLossError(
                    f"training diverged in epoch {self.epoch + 1}: the {bad[0]}; try a lower "
                    f"learning_rate (now {c.learning_rate:g}) or contractive_weight; the model "
                    f"keeps the weights of the last good epoch ({self.epoch})"
                )
            record["time_s"] = time.perf_counter() - t0
            self.history.append(record)
            self.epoch += 1
            last_good = (self._snapshot(), copy.deepcopy(self.optimizer.state_dict()))
            if bar is not None:
                bar.set_postfix(
                    {k: f"{record[k]:.4g}" for k in _SHOWN if k in record}
                )
            logger.debug("epoch %d: %s", self.epoch, record)
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

    def _early_stopping_step(self, record: dict[str, float]) -> bool:
        """Track the best validation loss; True when it has not improved by ``tol`` lately."""
        loss = record["val_loss"]
        if loss < self.best_loss - self.config.tol:
            self.best_loss = loss
            self.best_state = self._snapshot()
            self.epochs_no_improve = 0
        else:
            self.epochs_no_improve += 1
        return self.epochs_no_improve >= self.config.n_iter_no_change

