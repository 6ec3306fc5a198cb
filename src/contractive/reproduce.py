"""The paper's MNIST experiment (Rifai et al., ICML 2011, Table 1), end to end and resumable.

Protocol (``Protocol`` holds every number; ``Protocol.quick()`` a small one for CI):

* MNIST: the first 50,000 training images to train, the last 10,000 to validate, the
  10,000 test images to test. Pixels in [0, 1].
* Pre-training: one hidden layer of 1000 sigmoid units, tied weights, sigmoid decoder,
  cross-entropy. Families: CAE (grid over the contractive weight lambda), CAE+H (lambda fixed
  at the CAE's choice, grid over gamma), AE with weight decay (grid), plain AE. Beside
  Table 1, CAE-2, the paper's stacked CAE (its Table 2, there on other data): a second CAE
  of the same kind trained on the codes of the chosen CAE (grid over its weight lambda2),
  fine-tuned as a 784-1000-1000-10 MLP (``stacked_weights``, default none: with adversarial
  fine-tuning it would add about 70-90 minutes on a 2-core CPU, estimated). And MTC, the
  Manifold Tangent Classifier (Rifai et al., NIPS 2011): the chosen CAE fine-tuned as the
  CAE is, with the term ``beta * sum_i ||(dp/dx) u_i||^2`` over its ``n_tangents`` leading
  tangents at each training image (``classifier.FineTunedClassifier(tangent_weight=)``;
  estimated from ``tangent_probes`` random combinations of them); grid over beta
  (``tangent_weights``, default none: it adds about 40 minutes a value on a 2-core CPU
  without adversarial fine-tuning, more with it).
* Fine-tuning: the encoder initialises a 784-1000-10 MLP (softmax head) trained on the
  labels (``classifier.FineTunedClassifier``: SGD, Nesterov momentum, the learning rate
  halved on a validation plateau, early stopping on the validation error, dropout on the
  hidden layer and, not in the paper, adversarial training: ``finetune_adversarial_weight``
  0.5 of the cross-entropy at an L2 step of ``finetune_adversarial_epsilon`` 1.0 (pixel
  units) from each image; weight 0 leaves it out: dropout only, the paper used neither);
  "random" is the same MLP from random weights, trained the same way.
* Selection: in each family, the configuration with the lowest validation error after
  fine-tuning; its test error is reported (the test set is used for nothing else). With
  ``finetune_seeds`` N > 1, each configuration is fine-tuned N times (seeds ``seed`` ..
  ``seed + N - 1``; one pre-training), and its valid and test errors are the means: the
  selection uses the mean validation error, and the table gives the mean test error with
  the range.

Weights are on the paper's scale, i.e. against the cross-entropy summed over the d = 784
pixels. The library's reconstruction loss is the mean over pixels, so each is divided by
d before training: ``contractive_weight = lambda / d`` (likewise gamma and weight decay).

Processes: ``Experiment(jobs=N)`` runs up to N configurations at a time, each in its own
process (started with ``spawn``; each loads the data itself and uses ``usable_cpus() // N``
torch threads on a CPU). The CAE grid goes first; the configurations that need the chosen CAE
(CAE-2, MTC, CAE+H, longest first) start as soon as it is known, the others fill the free
processes. Every configuration is seeded on its own, so with the same threads per process
the results do not depend on N. A failed configuration stops the others (their finished
stages are kept for a resume). A script that runs an experiment with ``jobs > 1`` needs the
``if __name__ == "__main__":`` guard that ``spawn`` asks for (notebooks and the command line
need nothing).

Resuming: each configuration's pre-trained model (``models/NAME``) and its results
(``stages/NAME.json``, after each fine-tuning seed) are written when done; a rerun into the
same folder skips them, and keeps the fine-tunings of a stage done with other seeds. A
rerun whose protocol differs only in what comes after pre-training (``FINETUNE_FIELDS``:
fine-tuning settings, the validation and test sizes, the grids, the read-outs) keeps the
pre-trained models and redoes only the stages whose results depend on what changed
(``STAGE_FIELDS``); any other difference is refused.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import analysis as A
from .classifier import FineTunedClassifier
from .data import load_dataset
from .estimator import ContractiveAutoencoder
from .io import atomic_write_bytes, figure_png
from .readouts import readout_errors
from .runs import write_json
from .stacking import StackedContractiveAutoencoder
from .validation import check_choice, check_float, check_int

#: Rifai et al. 2011, Table 1 (MNIST): test error (%), mean squared Jacobian entry, SAT.
PAPER = {
    "CAE": {"test_error": 1.14, "mean_squared_jacobian_entry": 0.73e-4, "saturation": 0.86},
    "CAE+H": {},
    "CAE-2": {},
    "MTC": {},
    "AE+wd": {"test_error": 1.68},
    "AE": {"test_error": 1.78, "saturation": 0.50},
    "random init": {},
}
FAMILIES = tuple(PAPER)


@dataclass
class Protocol:
    """Every number of the experiment (stored with the run; a resume must match it)."""

    n_train: int = 50_000
    n_valid: int = 10_000
    n_test: int = 10_000
    n_hidden: int = 1000
    contractive_weights: tuple[float, ...] = (0.1, 0.3)
    #: gamma 1, not 0.1: at 0.1 the higher-order term is about 7% of the contractive one at the
    #: end of pre-training, so CAE+H is a CAE (README, "The CAE+H weight")
    higher_order_weights: tuple[float, ...] = (1.0,)
    higher_order_sigma: float = 0.1
    weight_decays: tuple[float, ...] = (0.01,)
    stacked_weights: tuple[float, ...] = ()
    tangent_weights: tuple[float, ...] = ()
    n_tangents: int = 15
    tangent_probes: int = 1
    pretrain_epochs: int = 50
    pretrain_learning_rate: float = 1e-3
    pretrain_batch_size: int = 100
    finetune_epochs: int = 250
    finetune_learning_rate: float = 0.05
    finetune_batch_size: int = 100
    finetune_patience: int = 40
    finetune_lr_patience: int = 20
    finetune_dropout: float = 0.5
    finetune_input_dropout: float = 0.0
    #: adversarial training in every fine-tuning (``FineTunedClassifier``'s parameters; not
    #: the paper's); recorded in the run only when the weight is above 0
    finetune_adversarial_weight: float = 0.5
    finetune_adversarial_epsilon: float = 1.0
    finetune_adversarial_norm: str = "l2"
    #: fine-tunings of each configuration, with seeds ``seed``, ``seed + 1``, ...: its valid
    #: and test errors are their means (the selection included); recorded only above 1
    finetune_seeds: int = 1
    readout_rows: int = 10_000
    analysis_points: int = 300
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_protocol(cls, **overrides: Any) -> Protocol:
        """A few minutes' pipeline check: small subsets, a small layer, few epochs."""
        base = dict(n_train=2000, n_valid=500, n_test=1000, n_hidden=100,
                    contractive_weights=(0.1, 0.3), higher_order_weights=(1.0,),
                    weight_decays=(0.01,), stacked_weights=(0.1,), tangent_weights=(0.3,),
                    pretrain_epochs=3,
                    finetune_epochs=4, finetune_patience=3, finetune_lr_patience=1,
                    readout_rows=2000, analysis_points=50, quick=True)
        return cls(**{**base, **overrides})

    def __post_init__(self) -> None:
        optional = ("stacked_weights", "tangent_weights")
        for name in ("contractive_weights", "higher_order_weights", "weight_decays", *optional):
            values = tuple(float(v) for v in getattr(self, name))
            if any(not np.isfinite(v) or v <= 0 for v in values) or (
                    not values and name not in optional):
                raise ValueError(f"{name}={values!r} must be one or more finite numbers > 0"
                                 + (" (or none)" if name in optional else ""))
            if len({f"{v:g}" for v in values}) < len(values):  # one configuration name each
                raise ValueError(f"{name}={values!r} repeats a value (to 6 significant "
                                 "digits); give each once")
            setattr(self, name, values)
        self.n_tangents = check_int("n_tangents", self.n_tangents, 1)
        self.tangent_probes = check_int("tangent_probes", self.tangent_probes, 0)
        if self.tangent_weights and self.n_tangents > self.n_hidden:
            raise ValueError(f"n_tangents={self.n_tangents} must be at most n_hidden="
                             f"{self.n_hidden}")
        for name in ("n_train", "n_valid", "n_test", "n_hidden", "pretrain_epochs",
                     "finetune_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        for name in ("finetune_dropout", "finetune_input_dropout"):
            setattr(self, name, check_float(name, getattr(self, name), 0, 1))
        self.finetune_adversarial_weight = w = check_float(
            "finetune_adversarial_weight", self.finetune_adversarial_weight, 0, 1,
            high_closed=True)
        self.finetune_adversarial_epsilon = check_float(
            "finetune_adversarial_epsilon", self.finetune_adversarial_epsilon, 0, low_open=w > 0)
        check_choice("finetune_adversarial_norm", self.finetune_adversarial_norm, ("inf", "l2"))
        if not 0 <= check_int("seed", self.seed, 0) < 2**32:
            raise ValueError(f"seed={self.seed!r} must be an integer in [0, 2**32)")
        self.seed = int(self.seed)
        self.finetune_seeds = check_int("finetune_seeds", self.finetune_seeds, 1)
        if self.seed + self.finetune_seeds > 2**32:
            raise ValueError(f"finetune_seeds={self.finetune_seeds} from seed={self.seed} "
                             "must stay below 2**32")

    def to_dict(self) -> dict:
        """The fields as JSON values; the adversarial ones only when that training is on, and
        ``finetune_seeds`` only above 1 (so a run written before they existed resumes with
        the same protocol)."""
        left_out = (() if self.finetune_adversarial_weight > 0 else ADVERSARIAL_FIELDS) + (
            () if self.finetune_seeds > 1 else ("finetune_seeds",))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k not in left_out}

    def finetune_seed_list(self) -> list[int]:
        """The fine-tuning seeds of every configuration: ``seed`` .. ``seed + finetune_seeds
        - 1`` (pre-training uses ``seed``)."""
        return list(range(self.seed, self.seed + self.finetune_seeds))

    @classmethod
    def from_dict(cls, values: dict) -> Protocol:
        """The inverse of ``to_dict``: no adversarial weight is weight 0 (``to_dict`` leaves
        those fields out then, and runs written before they existed have none), not the
        default."""
        return cls(**{"finetune_adversarial_weight": 0.0, **values})

    def finetune_settings(self) -> dict:
        """The fields a stage's results depend on besides its pre-trained model
        (``STAGE_FIELDS``); a stage saved with other values is redone."""
        return {k: v for k, v in self.to_dict().items() if k in STAGE_FIELDS}


#: Protocol fields a stage's results depend on besides its pre-trained model: fine-tuning,
#: the validation and test sets, the points measured.
STAGE_FIELDS = frozenset({
    "n_valid", "n_test", "finetune_epochs", "finetune_learning_rate", "finetune_batch_size",
    "finetune_patience", "finetune_lr_patience", "finetune_dropout", "finetune_input_dropout",
    "finetune_adversarial_weight", "finetune_adversarial_epsilon", "finetune_adversarial_norm",
    "analysis_points",
})
ADVERSARIAL_FIELDS = ("finetune_adversarial_weight", "finetune_adversarial_epsilon",
                      "finetune_adversarial_norm")
#: Protocol fields that do not change a pre-trained model, so a resume may change them: the
#: stage fields, the grids (they add or drop configurations, each with its own model) and
#: the read-outs (recomputed on every run).
FINETUNE_FIELDS = STAGE_FIELDS | {"contractive_weights", "higher_order_weights",
                                  "weight_decays", "stacked_weights", "tangent_weights",
                                  "n_tangents", "tangent_probes", "readout_rows",
                                  "finetune_seeds"}
#: Fields that only the MTC stages depend on (a change redoes those alone).
MTC_FIELDS = ("n_tangents", "tangent_probes")


@dataclass
class Split:
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    d: int = field(init=False)

    def __post_init__(self) -> None:
        self.d = self.X_train.shape[1]


def mnist_split(protocol: Protocol, data_dir: str | None = None) -> Split:
    """Train on the first ``n_train`` training images, validate on the last ``n_valid``
    (disjoint), test on the first ``n_test`` test images."""
    ds = load_dataset("mnist", data_dir)
    n = len(ds.X_train)
    if protocol.n_train + protocol.n_valid > n or protocol.n_test > len(ds.X_test):
        raise ValueError(f"n_train + n_valid must be <= {n} and n_test <= {len(ds.X_test)}")
    return Split(ds.X_train[: protocol.n_train], ds.y_train[: protocol.n_train],
                 ds.X_train[n - protocol.n_valid :], ds.y_train[n - protocol.n_valid :],
                 ds.X_test[: protocol.n_test], ds.y_test[: protocol.n_test])


def configurations(protocol: Protocol, cae_weight: float | None = None) -> list[dict]:
    """The pre-training configurations, paper-scale weights. CAE+H and CAE-2 need the CAE's
    chosen ``cae_weight`` and are listed only once it is known."""
    out = [{"name": f"CAE lambda={w:g}", "family": "CAE", "contractive_weight": w}
           for w in protocol.contractive_weights]
    if cae_weight is not None:
        out += [{"name": f"CAE+H lambda={cae_weight:g} gamma={g:g}", "family": "CAE+H",
                 "contractive_weight": cae_weight, "higher_order_weight": g}
                for g in protocol.higher_order_weights]
        out += [{"name": f"CAE-2 lambda={cae_weight:g} lambda2={w:g}", "family": "CAE-2",
                 "contractive_weight": cae_weight, "stacked_weight": w}
                for w in protocol.stacked_weights]
        out += [{"name": f"MTC lambda={cae_weight:g} beta={b:g}", "family": "MTC",
                 "contractive_weight": cae_weight, "tangent_weight": b}
                for b in protocol.tangent_weights]
    out += [{"name": f"AE+wd wd={w:g}", "family": "AE+wd", "weight_decay": w}
            for w in protocol.weight_decays]
    out += [{"name": "AE", "family": "AE"}, {"name": "random init", "family": "random init"}]
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in name)


class Experiment:
    """One reproduction run in ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str | Path, protocol: Protocol, *, device: str = "auto",
                 data_dir: str | None = None, log: Callable[[str], None] = print,
                 jobs: int = 1, threads: int | None = None) -> None:
        self.out = Path(out_dir)
        self.protocol = protocol
        self.device = device
        self.data_dir = data_dir
        self.log = log
        self.jobs = check_int("jobs", jobs, 1)
        #: torch threads in each worker process (``jobs > 1``); default usable_cpus() // jobs
        self.threads = (max(1, usable_cpus() // self.jobs) if threads is None
                        else check_int("threads", threads, 1))

    # -- bookkeeping ------------------------------------------------------------------------

    def _check_folder(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out}: exists and is not a folder")
        saved = self.out / "protocol.json"
        if self.out.is_dir() and not saved.exists() and any(
                not p.name.startswith(".") for p in self.out.iterdir()):
            raise ValueError(f"--out {self.out}: folder exists, is not empty and holds no "
                             "reproduction run (no protocol.json); use a new or empty folder")
        if saved.exists():
            try:
                old = json.loads(saved.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{saved}: unreadable ({exc}); use another --out") from None
            new = self.protocol.to_dict()
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            fixed = [k for k in changed if k not in FINETUNE_FIELDS]
            if fixed:
                raise ValueError(
                    f"{self.out} holds a run pre-trained with another protocol (differs in "
                    f"{', '.join(fixed)}); use another --out to start a new one"
                )
            if changed:
                self.log(f"protocol changed in {', '.join(changed)}: the pre-trained models "
                         "are kept; stages fine-tuned otherwise are redone (fine-tunings "
                         "with the same settings and seeds are kept)")

    def _prepare_folder(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "protocol.json", self.protocol.to_dict())  # first: marks the run
        (self.out / "stages").mkdir(exist_ok=True)
        (self.out / "models").mkdir(exist_ok=True)

    def _stage_path(self, name: str) -> Path:
        return self.out / "stages" / f"{_slug(name)}.json"

    # -- one configuration ----------------------------------------------------------------------

    def _autoencoder(self, cfg: dict, d: int) -> ContractiveAutoencoder:
        p = self.protocol
        return ContractiveAutoencoder(
            n_components=p.n_hidden, activation="sigmoid", output_activation="sigmoid",
            tied_weights=True, loss="bce",
            contractive_weight=cfg.get("contractive_weight", 0.0) / d,
            higher_order_weight=cfg.get("higher_order_weight", 0.0) / d,
            higher_order_sigma=p.higher_order_sigma,
            weight_decay=cfg.get("weight_decay", 0.0) / d,
            optimizer="adam", learning_rate=p.pretrain_learning_rate,
            batch_size=p.pretrain_batch_size, max_epochs=p.pretrain_epochs,
            device=self.device, random_state=p.seed,
        )

    def _pretrain(self, cfg: dict, split: Split) -> tuple[ContractiveAutoencoder, dict]:
        folder = self.out / "models" / _slug(cfg["name"])
        if (folder / "model.json").exists():
            est = self._model(cfg["name"])
            return est, {"pretrain_time_s": est.fit_time_, "pretrain_epochs": est.n_epochs_}
        est = self._autoencoder(cfg, split.d).fit(split.X_train)
        est.save(folder)
        return est, {"pretrain_time_s": est.fit_time_, "pretrain_epochs": est.n_epochs_}

    def _model(self, name: str) -> ContractiveAutoencoder:
        """The saved pre-trained model of configuration ``name`` (``models/NAME``)."""
        return ContractiveAutoencoder.load(self.out / "models" / _slug(name), device=self.device)

    @staticmethod
    def _first_layer_name(cfg: dict) -> str:
        """The CAE stage whose model is the first layer of a CAE-2 configuration."""
        return f"CAE lambda={cfg['contractive_weight']:g}"

    def _stack(self, cfg: dict, split: Split) -> tuple[StackedContractiveAutoencoder, dict]:
        """The chosen CAE (its model from the CAE stage) with a second CAE trained on its
        codes of the training images (``d`` = the first layer's units for the weight's
        scale). The time is the second layer's: the first is counted in its own stage."""
        first = self._model(self._first_layer_name(cfg))
        if (self.out / "models" / _slug(cfg["name"]) / "model.json").exists():
            second = self._model(cfg["name"])
        else:
            codes = first.transform(split.X_train)
            second_cfg = {"contractive_weight": cfg["stacked_weight"]}
            second = self._autoencoder(second_cfg, codes.shape[1]).fit(codes)
            second.save(self.out / "models" / _slug(cfg["name"]))
        stack = StackedContractiveAutoencoder.from_encoders([first, second])
        return stack, {"pretrain_time_s": second.fit_time_, "pretrain_epochs": second.n_epochs_}

    def _encoder(self, result: dict) -> ContractiveAutoencoder | StackedContractiveAutoencoder:
        """The pre-trained encoder of a finished stage, loaded from ``models/``."""
        if result["family"] == "CAE-2":
            return StackedContractiveAutoencoder.from_encoders(
                [self._model(self._first_layer_name(result)), self._model(result["name"])])
        if result["family"] == "MTC":  # the chosen CAE, fine-tuned another way
            return self._model(self._first_layer_name(result))
        return self._model(result["name"])

    def _measures(self, est: ContractiveAutoencoder, split: Split) -> dict:
        X = split.X_test[: self.protocol.analysis_points * 4]
        k, d = est.n_components, split.d
        return {
            "reconstruction_bce_valid": -est.score(split.X_valid[:2000]),
            **A.jacobian_summary(est.penalty(X), k, d),
            "saturation": A.saturation(est.transform(X), "sigmoid"),
        }

    def _finetune(self, est: ContractiveAutoencoder | None, split: Split, seed: int,
                  tangent_weight: float = 0.0) -> dict:
        """One fine-tuning of an MLP initialised from ``est`` (at random where None), with
        the fine-tuning ``seed``: its errors, epochs, time and history."""
        p = self.protocol
        clf = FineTunedClassifier(
            est, hidden_layer_sizes=(p.n_hidden,), learning_rate=p.finetune_learning_rate,
            batch_size=p.finetune_batch_size, max_epochs=p.finetune_epochs,
            n_iter_no_change=p.finetune_patience, lr_patience=p.finetune_lr_patience,
            dropout=p.finetune_dropout, input_dropout=p.finetune_input_dropout,
            adversarial_weight=p.finetune_adversarial_weight,
            adversarial_epsilon=p.finetune_adversarial_epsilon,
            adversarial_norm=p.finetune_adversarial_norm, tangent_weight=tangent_weight,
            n_tangents=p.n_tangents,
            tangent_probes=p.tangent_probes, device=self.device, random_state=seed,
        ).fit(split.X_train, split.y_train, split.X_valid, split.y_valid)
        extra = {}
        if tangent_weight > 0:
            extra = {"tangents_time_s": clf.tangents_time_, "n_tangents": p.n_tangents,
                     "tangent_probes": p.tangent_probes}
        return {
            **extra,
            "valid_error": clf.best_validation_error_,
            "test_error": clf.error(split.X_test, split.y_test),
            "finetune_epochs": clf.n_epochs_, "finetune_best_epoch": clf.best_epoch_,
            "finetune_time_s": clf.fit_time_,
            "finetune_history": [{k: h[k] for k in ("epoch", "loss", "val_loss", "val_error",
                                                    "learning_rate")} for h in clf.history_],
        }

    def _settings(self, cfg: dict) -> dict:
        settings = self.protocol.finetune_settings()
        if cfg["family"] == "MTC":
            settings.update({k: getattr(self.protocol, k) for k in MTC_FIELDS})
        return settings

    def _saved(self, cfg: dict) -> dict | None:
        """The stage file of ``cfg`` where it was written with these settings, else None."""
        path = self._stage_path(cfg["name"])
        if path.exists():
            result = json.loads(path.read_text())
            if result.get("finetune_settings") == self._settings(cfg):
                return result
        return None

    def _saved_runs(self, result: dict | None) -> dict[int, dict]:
        """The fine-tunings in a stage file, by seed (one written with a single seed holds
        that of ``seed``: its fine-tuning is the file's own fields)."""
        if result is None:
            return {}
        if "finetune_runs" in result:
            return {r["seed"]: {k: v for k, v in r.items() if k != "seed"}
                    for r in result["finetune_runs"]}
        return {self.protocol.seed: {k: result[k] for k in _RUN_FIELDS if k in result}}

    def _done_before(self, cfg: dict) -> dict | None:
        """The saved results of ``cfg`` when an earlier run finished it with these settings
        and seeds (logged), else None. A stage stopped between its seeds is not finished:
        ``run_configuration`` completes it."""
        result = self._saved(cfg)
        runs = self._saved_runs(result)
        seeds = self.protocol.finetune_seed_list()
        if result is None or result.get("finetune_partial") or not set(seeds) <= set(runs):
            return None
        if sorted(runs) != seeds:  # fewer seeds than saved: their means
            result = {k: v for k, v in result.items()
                      if k not in _RUN_FIELDS and k != "finetune_runs"}
            result.update(combine_runs({s: runs[s] for s in seeds}))
        self.log(f"  {cfg['name']:<34} done before: valid {result['valid_error']:.2%}, "
                 f"test {result['test_error']:.2%}")
        return result

    def run_configuration(self, cfg: dict, split: Split) -> dict:
        done = self._done_before(cfg)
        if done is not None:
            return done
        path, settings = self._stage_path(cfg["name"]), self._settings(cfg)
        t0 = time.perf_counter()
        result = {**cfg, "finetune_settings": settings}
        est = None
        if cfg["family"] == "CAE-2":  # the measures are a one-layer CAE's: none here
            est, info = self._stack(cfg, split)
            result.update(info)
        elif cfg["family"] == "MTC":  # the chosen CAE's model: pre-trained in its own stage
            est = self._model(self._first_layer_name(cfg))
        elif cfg["family"] != "random init":
            est, info = self._pretrain(cfg, split)
            result.update(info)
            result.update(self._measures(est, split))
        seeds = self.protocol.finetune_seed_list()
        runs = {s: r for s, r in self._saved_runs(self._saved(cfg)).items() if s in seeds}
        for seed in seeds:  # those of a stage killed between its seeds are kept
            if seed not in runs:
                runs[seed] = self._finetune(est, split, seed, cfg.get("tangent_weight", 0.0))
                if len(runs) < len(seeds):  # the runs so far, listed; not done yet
                    write_json(path, {**result, **combine_runs(runs, listed=True),
                                      "finetune_partial": True})
        result.update(combine_runs({s: runs[s] for s in seeds}))
        result["total_time_s"] = time.perf_counter() - t0
        write_json(path, result)
        self.log(f"  {cfg['name']:<34} valid {result['valid_error']:.2%}, test "
                 f"{result['test_error']:.2%} ({result['total_time_s']:.0f} s)")
        return result

    # -- the whole experiment -----------------------------------------------------------------

    def run(self) -> dict:
        self._check_folder()
        start = time.perf_counter()
        split = mnist_split(self.protocol, self.data_dir)  # before anything is written
        self._prepare_folder()
        self.log(f"MNIST: {len(split.X_train)} train, {len(split.X_valid)} valid, "
                 f"{len(split.X_test)} test; writing to {self.out}")
        if self.jobs == 1:
            results = [self.run_configuration(c, split) for c in configurations(self.protocol)
                       if c["family"] == "CAE"]
            for cfg in configurations(self.protocol, _chosen_weight(results)):
                if cfg["family"] != "CAE":
                    results.append(self.run_configuration(cfg, split))
        else:
            results = self._run_in_processes()
        chosen = {fam: min((r for r in results if r["family"] == fam),
                           key=lambda r: r["valid_error"])
                  for fam in FAMILIES if any(r["family"] == fam for r in results)}
        readouts = self._readouts(chosen, split)
        figures = self._figures(chosen, split)
        summary = {
            "protocol": self.protocol.to_dict(),
            "machine": machine_description(self.device, self.jobs, self.threads),
            "wall_time_s": time.perf_counter() - start,
            "total_compute_s": sum(compute_time(r) for r in results),
            "chosen": {fam: {**_brief(r), **readouts.get(fam, {}), "paper": PAPER[fam]}
                       for fam, r in chosen.items()},
            "all": [_brief(r) for r in results],
            "figures": figures,
        }
        write_json(self.out / "results.json", summary)
        atomic_write_bytes(self.out / "table.md", format_table(summary).encode())
        return summary

    def _run_in_processes(self) -> list[dict]:
        """Every configuration, up to ``jobs`` at a time in worker processes (see the module
        docstring); the results in the order of ``configurations``."""
        first = [c for c in configurations(self.protocol) if c["family"] == "CAE"]
        rest = [c for c in configurations(self.protocol) if c["family"] != "CAE"]
        queue, results, running = list(first), {}, {}  # `first` is emptied once it is chosen
        independent = {c["name"] for c in first + rest}  # the others wait for the chosen CAE
        ctx = multiprocessing.get_context("spawn")
        stop = contextlib.ExitStack()
        main_thread = threading.current_thread() is threading.main_thread()  # else no signals
        if main_thread:  # SIGTERM: stop the workers on the way out
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
            stop.callback(signal.signal, signal.SIGTERM,
                          signal.SIG_DFL if previous is None else previous)
        settings = (str(self.out), self.protocol.to_dict(), self.device, self.data_dir,
                    self.threads)

        chosen: list[float] = []  # the CAE's weight, once known

        def record(cfg: dict, result: dict) -> None:
            results[cfg["name"]] = result
            if first and all(c["name"] in results for c in first):  # the CAE is chosen
                chosen.append(_chosen_weight([results[c["name"]] for c in first]))  # grid order
                later = [c for c in configurations(self.protocol, chosen[0])
                         if c["name"] not in independent]
                queue.extend(sorted(later, key=lambda c: _LONGEST_FIRST.get(c["family"], 9)))
                first.clear()

        try:
            while queue or rest or running:
                while len(running) < self.jobs and (queue or rest):
                    cfg = (queue or rest).pop(0)
                    done = self._done_before(cfg)
                    if done is not None:  # no process for a stage finished earlier
                        record(cfg, done)
                        continue
                    receive, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_stage_worker, args=(send, settings, cfg),
                                       name=f"contractive {cfg['name']}", daemon=True)
                    with (_signals_ignored(signal.SIGINT) if main_thread  # inherited: a
                          else contextlib.nullcontext()):  # Ctrl-C reaches the parent alone,
                        proc.start()  # which stops its workers
                    send.close()  # the child holds the other end: EOF when it dies
                    running[proc.sentinel] = (proc, receive, cfg)
                    self.log(f"  {cfg['name']:<34} started")
                ready = multiprocessing.connection.wait(
                    [r for _, r, _ in running.values()] + list(running)) if running else []
                for key in [k for k, (p, r, _) in running.items() if k in ready or r in ready]:
                    proc, receive, cfg = running.pop(key)
                    record(cfg, self._collect(proc, receive, cfg))
        finally:
            for proc, receive, _ in running.values():  # on an error or an interrupt
                proc.terminate()
                proc.join()
                receive.close()
            stop.close()
        return [results[c["name"]] for c in configurations(self.protocol, chosen[0])]

    def _collect(self, proc, receive, cfg: dict) -> dict:
        """A worker's result (its log lines printed here), or its error raised here."""
        try:
            kind, payload, lines = receive.recv()
        except (EOFError, OSError):  # died without a (whole) word: killed, out of memory
            proc.join()
            raise WorkerDied(f"the worker process of {cfg['name']} died (exit code "
                             f"{proc.exitcode}); rerun the same command to resume") from None
        finally:
            receive.close()
        proc.join()
        for line in lines:
            self.log(line)
        if kind == "ok":
            return payload
        kind, described, message, trace = payload
        if kind == "OSError":  # (errno, strerror, filename): the command line names the file
            raise OSError(*message)
        for exc_type in _RAISED_AS:
            if kind == exc_type.__name__:  # an input or a run that failed: its message
                raise exc_type(message)
        raise RuntimeError(f"{cfg['name']} failed in its worker process: {described}\n{trace}")

    def _readouts(self, chosen: dict, split: Split) -> dict:
        n = self.protocol.readout_rows
        out = {}
        for fam, r in chosen.items():
            if fam in ("random init", "MTC"):  # MTC's frozen codes are the CAE's
                continue
            est = self._encoder(r)
            out[fam] = readout_errors(est.transform(split.X_train[:n]), split.y_train[:n],
                                      est.transform(split.X_test), split.y_test)
        return out

    def _figures(self, chosen: dict, split: Split) -> list[str]:
        from .plotting import contraction_curves, spectra

        m = self.protocol.analysis_points
        X = np.asarray(split.X_test[:m], dtype=np.float64)
        distances = A.pairwise_distance_summary(split.X_train, max_points=1000)
        radii = np.linspace(0.0, 1.2 * distances["max"], 25)
        curves, spectra_ = {}, {}
        for fam, r in chosen.items():
            if fam in ("random init", "CAE-2", "MTC"):  # the figures are of one-layer CAEs
                continue
            est = self._encoder(r)
            curves[fam] = est.contraction_curve(X, radii)
            spectra_[fam] = est.singular_values(X[: min(m, 30)])
        figures = {
            "contraction_curves.png": contraction_curves(
                radii, curves, distances=distances, title="contraction ratio, MNIST test points"),
            "spectra.png": spectra(spectra_, normalise=False,
                                   title="singular values of J_f, MNIST test points"),
        }
        for name, fig in figures.items():
            atomic_write_bytes(self.out / name, figure_png(fig))
        return list(figures)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's share), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


#: Errors of a worker process raised again in the parent as their kind (what the command
#: line reports in one line); any other is a RuntimeError with the worker's traceback.
_RAISED_AS = (ValueError, TypeError, OSError, FloatingPointError)


class WorkerDied(RuntimeError):
    """A worker process ended without sending its configuration's result (killed, out of
    memory); the stages finished before it are kept for a resume."""


#: Order in which the configurations that wait for the chosen CAE start (longest first).
_LONGEST_FIRST = {"CAE-2": 0, "MTC": 1, "CAE+H": 2}


def _chosen_weight(cae_results: list[dict]) -> float:
    """The contractive weight of the CAE with the lowest validation error (the first on a
    tie, in grid order)."""
    return min(cae_results, key=lambda r: r["valid_error"])["contractive_weight"]


@contextlib.contextmanager
def _signals_ignored(signum: int):
    previous = signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # so that the worker processes are stopped on the way out


def _stage_worker(send, settings: tuple, cfg: dict) -> None:
    """A worker process: run one configuration, send ``("ok", result, log lines)`` or
    ``("error", (kind in _RAISED_AS or None, type and message, message, traceback), log
    lines)`` back, exit."""
    out, protocol, device, data_dir, threads = settings
    lines: list[str] = []
    try:
        torch.set_num_threads(threads)
        exp = Experiment(out, Protocol.from_dict(protocol), device=device, data_dir=data_dir,
                         log=lines.append)
        split = mnist_split(exp.protocol, data_dir)
        message = ("ok", exp.run_configuration(cfg, split), lines)
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
        kind = next((k.__name__ for k in _RAISED_AS if isinstance(exc, k)), None)
        text = ((exc.errno, exc.strerror or str(exc), exc.filename)
                if isinstance(exc, OSError) else str(exc))
        message = ("error", (kind, f"{type(exc).__name__}: {exc}", text,
                             traceback.format_exc()), lines)
    send.send(message)
    send.close()


def machine_description(device: str, jobs: int = 1, threads: int | None = None) -> str:
    dev = str(device)
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    procs = f"{jobs} processes at a time" if jobs > 1 else ""
    if dev.startswith("cuda"):
        return (f"{torch.cuda.get_device_name(torch.device(dev))}"
                f"{', ' + procs if procs else ''} (torch {torch.__version__})")
    threads = torch.get_num_threads() if jobs == 1 or threads is None else threads
    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{procs + ' of ' if procs else ''}{threads} torch threads "
            f"(torch {torch.__version__})")


#: a stage's fields that come from one fine-tuning (``Experiment._finetune``)
_RUN_FIELDS = ("valid_error", "test_error", "finetune_epochs", "finetune_best_epoch",
               "finetune_time_s", "finetune_history", "tangents_time_s", "n_tangents",
               "tangent_probes")


def combine_runs(runs: dict[int, dict], listed: bool | None = None) -> dict:
    """A stage's fine-tuning fields from its fine-tunings ``{seed: run}``: one run's own
    fields; of several (or where ``listed``), the means of the valid and test errors, the
    summed times, and the runs themselves (``finetune_runs``, with their seeds)."""
    if not (len(runs) > 1 if listed is None else listed):
        return dict(next(iter(runs.values())))
    out = {"valid_error": float(np.mean([r["valid_error"] for r in runs.values()])),
           "test_error": float(np.mean([r["test_error"] for r in runs.values()])),
           "finetune_time_s": sum(r["finetune_time_s"] for r in runs.values())}
    first = next(iter(runs.values()))
    if "tangents_time_s" in first:
        out.update(tangents_time_s=sum(r["tangents_time_s"] for r in runs.values()),
                   n_tangents=first["n_tangents"], tangent_probes=first["tangent_probes"])
    out["finetune_runs"] = [{"seed": s, **r} for s, r in runs.items()]
    return out


def _brief(result: dict) -> dict:
    """A stage's results for ``results.json``: no settings, no epoch histories."""
    out = {k: v for k, v in result.items() if k not in ("finetune_history", "finetune_settings")}
    if "finetune_runs" in out:
        out["finetune_runs"] = [{k: v for k, v in r.items() if k != "finetune_history"}
                                for r in out["finetune_runs"]]
    return out


def compute_time(result: dict) -> float:
    """Pre-training plus fine-tuning time of one configuration (with the MTC's tangents), in
    seconds (also when its stages ran in different invocations)."""
    return (result.get("pretrain_time_s", 0.0) + result.get("tangents_time_s", 0.0)
            + result["finetune_time_s"])


_PARAM_NAMES = {"contractive_weight": "lambda", "higher_order_weight": "gamma",
                "stacked_weight": "lambda2", "tangent_weight": "beta", "weight_decay": "wd"}


def format_table(summary: dict) -> str:
    """The analogue of the paper's Table 1, as markdown."""
    lines = [
        "| model | chosen | test error | paper | valid error | mean J_ij^2 (paper) "
        "| SAT (paper) | linear probe | 5-NN | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, r in summary["chosen"].items():
        paper = r["paper"].get("test_error")
        params = [f"{short}={r[key]:g}" for key, short in _PARAM_NAMES.items() if key in r]
        cells = []
        for key, fmt in (("mean_squared_jacobian_entry", ".3g"), ("saturation", ".0%")):
            value, known = r.get(key), r["paper"].get(key)
            cell = "-" if value is None else format(value, fmt)
            cells.append(cell if known is None else f"{cell} ({format(known, fmt)})")
        lp, kn = r.get("linear_probe_error"), r.get("knn_error")
        tests = [run["test_error"] for run in r.get("finetune_runs", ())]
        spread = f" ({min(tests):.2%}-{max(tests):.2%})" if tests else ""
        lines.append(
            f"| {fam} | {', '.join(params) or '-'} | **{r['test_error']:.2%}**{spread} | "
            f"{'-' if paper is None else f'{paper:.2f}%'} | {r['valid_error']:.2%} | "
            f"{cells[0]} | {cells[1]} | "
            f"{'-' if lp is None else f'{lp:.2%}'} | {'-' if kn is None else f'{kn:.2%}'} | "
            f"{compute_time(r):.0f} |"
        )
    p = summary["protocol"]
    lines.append("")
    lines.append(
        f"{p['n_train']} train / {p['n_valid']} valid / {p['n_test']} test; "
        f"{p['n_hidden']} sigmoid units; {summary['machine']}; training time of every "
        f"configuration summed {summary['total_compute_s'] / 60:.1f} min (this invocation's "
        f"wall time {summary['wall_time_s'] / 60:.1f} min)"
        + ("; every MLP fine-tuned with adversarial training (weight "
           f"{p['finetune_adversarial_weight']:g}, eps {p['finetune_adversarial_epsilon']:g}, "
           f"{p['finetune_adversarial_norm']} step)"
           if p.get("finetune_adversarial_weight") else "")
        + (f"; valid and test errors are means over {p['finetune_seeds']} fine-tuning seeds "
           f"({p['seed']}-{p['seed'] + p['finetune_seeds'] - 1}; the test errors' range in "
           "parentheses), and the selection uses the mean"
           if p.get("finetune_seeds", 1) > 1 else "")
        + (" (quick mode: not the paper's protocol)" if p["quick"] else "")
    )
    return "\n".join(lines) + "\n"
