"""Parameter checks shared by the estimators: one ``ValueError`` naming the parameter, its
value and what is allowed."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)  # values above it overflow on the device


def check_float32_range(A: np.ndarray, what: str) -> None:
    """Refuse (``ValueError``) an array with a value beyond float32's range, which the
    network computes in (it would turn into infinity there), naming its row and column
    (counted from 0, as numpy's). ``A``: 2-D, finite."""
    if A.size == 0 or (A.max() <= FLOAT32_MAX and A.min() >= -FLOAT32_MAX):
        return  # (no copy of A in the usual case)
    r, c = map(int, np.argwhere(np.abs(A) > FLOAT32_MAX)[0])
    raise ValueError(f"{what} holds {A[r, c]:.4g} at row {r}, column {c}: beyond float32's "
                     f"range (+-{FLOAT32_MAX:.4g}), which the network computes in; "
                     "rescale the data")


def check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


def check_float(name: str, value: Any, low: float, high: float | None = None,
                 *, low_open: bool = False, high_closed: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok and abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name}={value!r} is too large in magnitude: float32 holds "
                         f"numbers up to {FLOAT32_MAX:.4g}")
    if ok:
        ok = value > low if low_open else value >= low
        ok = ok and (high is None or value < high or (high_closed and value == high))
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high else "")
        if high is not None and high_closed and not low_open:
            bound = f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name}={value!r} must be a finite number {bound}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; valid: {', '.join(choices)}")
    return value


def check_hidden(value: Any) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = tuple(value.tolist())
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise ValueError(
            f"hidden_layer_sizes={value!r} must be a tuple of integers >= 1, e.g. (256, 64), "
            "or () for one layer"
        )
    return tuple(int(v) for v in value)
