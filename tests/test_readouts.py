"""Read-outs of frozen codes (readouts.py)."""

import numpy as np
import pytest

from contractive.readouts import cross_validated_accuracies, readout_errors


def test_readouts_on_separable_and_on_random_codes():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    codes = rng.normal(size=(300, 5)) * 0.1
    codes[np.arange(300), y] += 3
    errors = readout_errors(codes[:200], y[:200], codes[200:], y[200:])
    assert errors == {"linear_probe_error": 0.0, "knn_error": 0.0}
    noise = rng.normal(size=(300, 5))
    errors = readout_errors(noise[:200], y[:200], noise[200:], y[200:])
    assert errors["linear_probe_error"] > 0.4 and errors["knn_error"] > 0.4
    cv = cross_validated_accuracies(codes, y)
    assert cv == {"linear_probe_accuracy": 1.0, "knn_accuracy": 1.0, "knn_neighbors": 5}
    assert cross_validated_accuracies(codes, np.zeros(300)) is None


def test_knn_uses_fewer_neighbours_when_a_fold_is_small():
    rng = np.random.default_rng(1)
    y = np.array([0, 0, 1, 1, 2, 2])  # two folds of three training rows each
    codes = rng.normal(size=(6, 3)) * 0.01 + np.eye(3)[y] * 3
    cv = cross_validated_accuracies(codes, y)
    assert cv["knn_neighbors"] == 3
    assert all(np.isfinite(v) for v in cv.values())
    assert cross_validated_accuracies(codes[:5], y[:5]) is None  # class 2 has one row


def test_cross_validated_accuracies_takes_lists_and_checks_shapes():
    rng = np.random.default_rng(2)
    y = np.arange(60) % 2
    codes = rng.normal(size=(60, 3)) + y[:, None] * 3
    out = cross_validated_accuracies(codes.tolist(), y.tolist(), max_rows=40)
    assert out["linear_probe_accuracy"] > 0.9
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_rows"):
            cross_validated_accuracies(codes, y, max_rows=bad)
    with pytest.raises(ValueError, match="must be"):
        cross_validated_accuracies(codes, y[:10])
