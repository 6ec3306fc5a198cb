"""Shared fixtures. Tests run with one intra-op thread: on a 2-core machine with other
work running, PyTorch's spinning worker threads can make small ops ~30x slower."""

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("CONTRACTIVE_TEST_THREADS", "1")))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "mnist"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test touches the network: dataset downloads are off unless a test unsets this."""
    monkeypatch.setenv("CONTRACTIVE_OFFLINE", "1")
