"""contractive: contractive auto-encoders (Rifai et al., 2011) on PyTorch, with a
scikit-learn face.

    >>> from contractive import ContractiveAutoencoder
    >>> cae = ContractiveAutoencoder(n_components=8)            # doctest: +SKIP
    >>> codes = cae.fit_transform(X)                             # doctest: +SKIP
    >>> cae.penalty(X)            # per-sample ||J_f(x)||_F^2    # doctest: +SKIP

The penalty functions live in ``contractive.penalty``; the PyTorch module in
``contractive.models``; the training loop in ``contractive.training``;
fine-tuning in ``contractive.classifier``; stacking in ``contractive.stacking``.
"""

from ._version import __version__
from .classifier import FineTunedClassifier
from .estimator import ContractiveAutoencoder
from .penalty import contractive_penalty, higher_order_penalty
from .stacking import StackedContractiveAutoencoder
from .training import NonFiniteLossError


def load(path, device: str = "auto") -> ContractiveAutoencoder:
    """Load a model folder written by ``ContractiveAutoencoder.save`` (never unpickles)."""
    return ContractiveAutoencoder.load(path, device=device)


__all__ = [
    "ContractiveAutoencoder",
    "FineTunedClassifier",
    "NonFiniteLossError",
    "StackedContractiveAutoencoder",
    "__version__",
    "contractive_penalty",
    "higher_order_penalty",
    "load",
]
