"""fastbp: small neural networks trained by backpropagation, compiled.

>>> import fastbp
>>> model = fastbp.train(X, y, hidden=(5,), epochs=500, lr=0.3, seed=1)
>>> model.predict(X)
>>> fastbp.MLPClassifier(hidden_layer_sizes=(32,)).fit(X, y)  # scikit-learn's API
"""

from . import data, datasets, layers, optimizers, reference
from ._api import Evaluation, SearchResult, evaluate, search, train, train_many
from ._backends import BACKENDS, InstallWarning, available_backends
from ._model import Model, load
from ._sequential import Sequential
from ._training import NonFiniteError

__version__ = "0.1.0"

#: Loaded on first use: they import scikit-learn, which plain training does not need.
_ESTIMATORS = ("MLPClassifier", "MLPRegressor")


def __getattr__(name: str):
    if name in _ESTIMATORS:
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with those loaded on first use, for completion in an interactive session."""
    return sorted({*globals(), *_ESTIMATORS})


__all__ = [
    "BACKENDS",
    "Evaluation",
    "InstallWarning",
    "MLPClassifier",
    "MLPRegressor",
    "Model",
    "NonFiniteError",
    "SearchResult",
    "Sequential",
    "available_backends",
    "data",
    "datasets",
    "evaluate",
    "layers",
    "load",
    "optimizers",
    "reference",
    "search",
    "train",
    "train_many",
]
