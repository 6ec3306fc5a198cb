"""Cheap read-outs of frozen codes: a linear probe and k-nearest neighbours.

    linear probe: logistic regression on standardised codes (multinomial, L2, lbfgs)
    kNN:          majority vote of the k nearest codes (Euclidean)

Both measure how much label information the codes carry without training the encoder
further (fine-tuning, in ``classifier.py``, is the expensive read-out).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .validation import check_int


def linear_probe(max_iter: int = 300) -> Pipeline:
    """An unfitted linear probe: ``StandardScaler`` then ``LogisticRegression``."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))


def knn(n_neighbors: int = 5) -> KNeighborsClassifier:
    """An unfitted k-nearest-neighbour classifier."""
    return KNeighborsClassifier(n_neighbors)


def readout_errors(train_codes: np.ndarray, y_train: np.ndarray, test_codes: np.ndarray,
                   y_test: np.ndarray, *, n_neighbors: int = 5) -> dict[str, float]:
    """Test error of the linear probe and of kNN, both fitted on the training codes."""
    return {
        "linear_probe_error": 1.0 - linear_probe().fit(train_codes, y_train)
        .score(test_codes, y_test),
        "knn_error": 1.0 - knn(n_neighbors).fit(train_codes, y_train).score(test_codes, y_test),
    }


def cross_validated_accuracies(codes: np.ndarray, y: np.ndarray, *, max_rows: int = 5000,
                               seed: int = 0, n_neighbors: int = 5) -> dict[str, float] | None:
    """Stratified-CV accuracy of both read-outs on at most ``max_rows`` rows, or None when
    the labels do not allow two folds. kNN uses ``n_neighbors``, or fewer when a training
    fold has fewer rows (``knn_neighbors`` says how many)."""
    codes, y = np.asarray(codes), np.asarray(y)
    max_rows = check_int("max_rows", max_rows, 2)
    if codes.ndim != 2 or y.shape != (len(codes),):
        raise ValueError(f"codes of shape {codes.shape} and labels of shape {y.shape} must be "
                         "(n, k) and (n,)")
    if len(codes) > max_rows:
        keep = np.random.default_rng(seed).choice(len(codes), max_rows, replace=False)
        codes, y = codes[keep], y[keep]
    _, counts = np.unique(y, return_counts=True)
    folds = int(min(5, counts.min()))
    if len(counts) < 2 or folds < 2:
        return None
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    k = min(n_neighbors, min(len(train) for train, _ in cv.split(codes, y)))
    return {
        "linear_probe_accuracy": float(cross_val_score(linear_probe(), codes, y, cv=cv,
                                                       error_score="raise").mean()),
        "knn_accuracy": float(cross_val_score(knn(k), codes, y, cv=cv,
                                              error_score="raise").mean()),
        "knn_neighbors": int(k),
    }
