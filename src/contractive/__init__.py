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
from .classifier import CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS, FineTunedClassifier
from .estimator import ContractiveAutoencoder
from .io import CONFIG_NAME as MODEL_CONFIG_NAME
from .io import WEIGHTS_NAME as MODEL_WEIGHTS_NAME
from .penalty import contractive_penalty, higher_order_penalty
from .stacking import STACK_NAME, StackedContractiveAutoencoder
from .training import NonFiniteLossError


def load(path, device: str = "auto"
         ) -> ContractiveAutoencoder | StackedContractiveAutoencoder | FineTunedClassifier:
    """Load a folder written by the ``save`` of a ``ContractiveAutoencoder``, a
    ``StackedContractiveAutoencoder`` or a ``FineTunedClassifier``, whichever it holds
    (never unpickles)."""
    kinds = {MODEL_CONFIG_NAME: ContractiveAutoencoder, STACK_NAME: StackedContractiveAutoencoder,
             CLASSIFIER_CONFIG: FineTunedClassifier}
    files = {**kinds, MODEL_WEIGHTS_NAME: ContractiveAutoencoder,
             CLASSIFIER_WEIGHTS: FineTunedClassifier}
    if isinstance(path, (str, os.PathLike)) and os.fspath(path):
        folder = Path(path)
        if folder.name in files:  # one of a model's own files, named
            return files[folder.name].load(path, device=device)
        found = [name for name in kinds if (folder / name).is_file()]
        if len(found) > 1:
            raise ValueError(f"{folder}: holds more than one model ({', '.join(found)}); load "
                             f"one with {' or '.join(kinds[n].__name__ + '.load' for n in found)}")
        if found:
            return kinds[found[0]].load(path, device=device)
        if folder.is_dir():
            raise ValueError(f"{folder}: no model here (expected {', '.join(kinds)}: a folder "
                             "written by save())")
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
