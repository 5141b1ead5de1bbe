"""fastbp: small fully-connected networks trained by backpropagation, compiled.

>>> import fastbp
>>> model = fastbp.train(X, y, hidden=(5,), epochs=500, lr=0.3, seed=1)
>>> model.predict(X)
"""

from . import data, datasets, reference
from ._api import Evaluation, evaluate, train
from ._backends import BACKENDS, available_backends
from ._model import Model, load

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Evaluation",
    "Model",
    "available_backends",
    "data",
    "datasets",
    "evaluate",
    "load",
    "reference",
    "train",
]
