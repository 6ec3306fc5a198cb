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

import os
from pathlib import Path

from ._version import __version__
from .classifier import FineTunedClassifier
from .estimator import ContractiveAutoencoder
from .io import CONFIG_NAME as MODEL_CONFIG_NAME
from .penalty import contractive_penalty, higher_order_penalty
from .stacking import STACK_NAME, StackedContractiveAutoencoder
from .training import NonFiniteLossError


def load(path, device: str = "auto"
         ) -> ContractiveAutoencoder | StackedContractiveAutoencoder:
    """Load a folder written by ``ContractiveAutoencoder.save`` or
    ``StackedContractiveAutoencoder.save``, whichever it holds (never unpickles)."""
    if isinstance(path, (str, os.PathLike)) and os.fspath(path):
        folder = Path(path)
        if folder.name == STACK_NAME or (folder / STACK_NAME).is_file():
            if folder.name != STACK_NAME and (folder / MODEL_CONFIG_NAME).is_file():
                raise ValueError(
                    f"{folder}: holds both a model ({MODEL_CONFIG_NAME}) and a stack "
                    f"({STACK_NAME}); load one with ContractiveAutoencoder.load or "
                    "StackedContractiveAutoencoder.load"
                )
            return StackedContractiveAutoencoder.load(path, device=device)
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
