"""Every named choice fastbp offers, each defined once, with a line that says what it does.

Activations, output units, losses, optimizers, initialisations and layer kinds are
listed here; everything else derives from these lists: the checks of
:func:`fastbp.train` and of the estimators, the command line's choices and help,
the docs' tables, the tests' parametrisation, and the integer codes the kernels
receive (an entry's position in its list, as the ``...Code`` enums below name it;
the Cython extension's copies are generated from this module when it is built).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ._constants import LEAKY_SLOPE


@dataclass(frozen=True)
class Choice:
    """A named choice and what it does, in one line (for the docs and the command line's help)."""

    name: str
    summary: str


@dataclass(frozen=True)
class Activation(Choice):
    #: The initialisation that ``init=None`` gives a layer of this activation.
    init: str = "glorot"
    #: Whether hidden layers may use it (softmax normalises a whole layer: the output layer's only).
    hidden: bool = True


@dataclass(frozen=True)
class Output(Choice):
    #: The losses it trains with, the default first.
    losses: tuple[str, ...] = ()
    #: Whether it predicts class labels (else the outputs themselves: a regression).
    classifies: bool = True


@dataclass(frozen=True)
class Loss(Choice):
    #: What the kernels report per row (a training's ``history``) over the loss whose gradient they take: the
    #: tutorial's sum of squares is twice the half that the squared error's gradient comes from.
    reported_scale: float = 1.0


@dataclass(frozen=True)
class Optimizer(Choice):
    #: Whether it is a value of the ``optimizer`` option; momentum and Nesterov's are ``"sgd"`` with ``momentum``.
    option: bool = True
    #: Whether each step takes the gradient over every row (no batch size, no shuffling).
    full_batch: bool = False
    #: Whether the kernels apply its updates (else Python drives it, the kernels computing the gradients).
    in_kernels: bool = True
    #: The learning rate ``lr`` where none is given: the tutorial's for SGD (and for the full-batch methods, which
    #: take none).
    default_lr: float = 0.3


@dataclass(frozen=True)
class Initializer(Choice):
    """One of Keras's initializers, by its rule: values of variance ``scale / n`` (``n`` the fan-in, or the mean of
    the fan-in and the fan-out, as ``fan`` says), or of the spread ``scale`` itself where ``fan`` is None."""

    scale: float = 1.0
    #: ``"in"``, ``"avg"``, or None for a spread of its own.
    fan: str | None = None
    #: ``"uniform"``, ``"normal"``, ``"truncated_normal"`` (redrawn beyond two standard deviations), ``"constant"``.
    distribution: str = "uniform"


def _by_name(*choices):
    return {choice.name: choice for choice in choices}


ACTIVATIONS: dict[str, Activation] = _by_name(
    Activation("sigmoid", "``1 / (1 + exp(-a))``, the tutorial's"),
    Activation("tanh", "``tanh(a)``"),
    Activation("relu", "``max(a, 0)``", init="he"),
    Activation("leaky_relu", f"``a`` where ``a > 0``, else ``{LEAKY_SLOPE} * a``", init="he"),
    Activation("identity", "``a``"),
    Activation("softmax", "``exp(a) / sum(exp(a))`` over the layer", hidden=False),
    Activation("exp", "``exp(a)``, a positive rate", hidden=False),
)

LOSSES: dict[str, Loss] = _by_name(
    Loss("mse", "``0.5 * sum((output - target)**2)`` per row", reported_scale=2.0),
    Loss(
        "cross_entropy",
        "``-sum(target * log(p))`` per row over a softmax; over sigmoid units, each one's binary cross-entropy "
        "``-(target * log(p) + (1 - target) * log(1 - p))``, summed",
    ),
    Loss("poisson", "half the Poisson deviance, ``sum(target * log(target / output) - target + output)`` per row"),
)

OUTPUTS: dict[str, Output] = _by_name(
    Output("sigmoid", "one sigmoid unit per class, the tutorial's", losses=("mse", "cross_entropy")),
    Output("softmax", "a softmax over the classes", losses=("cross_entropy",)),
    Output("identity", "one identity unit per target: a regression", losses=("mse",), classifies=False),
    Output(
        "exp", "one exponential unit per target: a regression of counts or rates", losses=("poisson",), classifies=False
    ),
)

OPTIMIZERS: dict[str, Optimizer] = _by_name(
    Optimizer("sgd", "plain stochastic gradient descent, ``w -= lr * g``"),
    Optimizer("momentum", "SGD with momentum, ``v = momentum * v - lr * g; w += v``", option=False),
    Optimizer("nesterov", "SGD with Nesterov's momentum, ``w += momentum * v - lr * g``", option=False),
    # Adam's and RMSprop's default rates are Keras's and scikit-learn's (Adam's from Kingma and Ba, 2015).
    Optimizer("adam", "Adam, as scikit-learn implements it (``beta1``, ``beta2``, ``epsilon``)", default_lr=0.001),
    Optimizer(
        "rmsprop",
        "RMSprop, as Keras implements it: ``v = rho * v + (1 - rho) * g**2; w -= lr * g / sqrt(v + epsilon)``",
        default_lr=0.001,
    ),
    Optimizer("rprop", "iRprop-, a full-batch method, with FANN's constants", full_batch=True),
    Optimizer(
        "lbfgs",
        "L-BFGS (SciPy's L-BFGS-B), a full-batch quasi-Newton method: scikit-learn's solver of that name",
        full_batch=True,
        in_kernels=False,
    ),
)

INITS: dict[str, Choice] = _by_name(
    Choice("tutorial", "uniform in [0, 1) from ``random.Random``, in the tutorial's order"),
    Choice("glorot", "uniform in ``±sqrt(6 / (n_in + n_out))``, biases zero; Glorot and Bengio, 2010"),
    Choice("he", "normal with standard deviation ``sqrt(2 / n_in)``, biases zero; He et al., 2015"),
    Choice(
        "sklearn",
        "scikit-learn's: weights and biases uniform in ``±sqrt(f / (n_in + n_out))``, ``f`` 2 for a "
        "sigmoid first layer and 6 otherwise",
    ),
)

#: Keras's initializers by their names, for the ``kernel_initializer`` and ``bias_initializer`` of
#: :mod:`fastbp.layers` (as Keras 3 defines them; a layer's kernel and bias are drawn in that order).
INITIALIZERS: dict[str, Initializer] = _by_name(
    Initializer("glorot_uniform", "uniform in ``±sqrt(6 / (fan_in + fan_out))``, Keras's kernels' default", 1.0, "avg"),
    Initializer(
        "glorot_normal", "truncated normal of variance ``2 / (fan_in + fan_out)``", 1.0, "avg", "truncated_normal"
    ),
    Initializer("he_uniform", "uniform in ``±sqrt(6 / fan_in)``", 2.0, "in"),
    Initializer("he_normal", "truncated normal of variance ``2 / fan_in``", 2.0, "in", "truncated_normal"),
    Initializer("lecun_uniform", "uniform in ``±sqrt(3 / fan_in)``", 1.0, "in"),
    Initializer("lecun_normal", "truncated normal of variance ``1 / fan_in``", 1.0, "in", "truncated_normal"),
    Initializer("random_uniform", "uniform in ``±0.05``", 0.05),
    Initializer("random_normal", "normal of standard deviation 0.05", 0.05, None, "normal"),
    Initializer(
        "truncated_normal", "normal of standard deviation 0.05, redrawn beyond two", 0.05, None, "truncated_normal"
    ),
    Initializer("zeros", "0, Keras's biases' default", 0.0, None, "constant"),
    Initializer("ones", "1", 1.0, None, "constant"),
)

#: What a layer computes from the values the layer before puts out (its weights: fastbp._layout.Layer).
LAYER_KINDS: dict[str, Choice] = _by_name(
    Choice("dense", "fully connected: each unit weighs every input, plus a bias"),
    Choice("conv2d", "a 2-D convolution of channels-last images: each filter weighs a window of every channel"),
    Choice("max_pool2d", "the largest value of each window of each channel (the window's size is its stride)"),
    Choice(
        "dropout",
        "in training, zeroes each value with probability ``rate`` and scales the rest by "
        "``1 / (1 - rate)``; in prediction, passes values on",
    ),
    Choice("flatten", "passes an image's values on as one vector, in channels-last order"),
)


def _codes(name: str, choices: dict) -> type[IntEnum]:
    """The kernels' integer codes of ``choices``: each one's position, named in capitals."""
    codes = IntEnum(name, [(choice.upper(), code) for code, choice in enumerate(choices)], module=__name__)
    codes.__qualname__ = name
    return codes


ActivationCode = _codes("ActivationCode", ACTIVATIONS)
LossCode = _codes("LossCode", LOSSES)
OptimizerCode = _codes("OptimizerCode", [name for name, optimizer in OPTIMIZERS.items() if optimizer.in_kernels])
LayerKindCode = _codes("LayerKindCode", LAYER_KINDS)

#: The names that each option takes.
HIDDEN_ACTIVATIONS = tuple(name for name, activation in ACTIVATIONS.items() if activation.hidden)
OPTIMIZER_OPTIONS = tuple(name for name, optimizer in OPTIMIZERS.items() if optimizer.option)


def names(choices) -> str:
    """``choices``' names as a numpydoc set of values: ``{"a", "b"}``."""
    return "{" + ", ".join(f'"{name}"' for name in choices) + "}"


def listed(choices: dict, selected=None) -> str:
    """The ``selected`` names (default: all) of ``choices``, each with what it does: ``"a"`` (...), ..."""
    return ", ".join(f'``"{name}"`` ({choices[name].summary})' for name in (selected or choices))


#: What ``documented`` fills in: each placeholder's text.
PLACEHOLDERS = {
    "<<hidden_activations>>": lambda: listed(ACTIVATIONS, HIDDEN_ACTIVATIONS),
    "<<output_names>>": lambda: names(OUTPUTS),
    "<<outputs>>": lambda: listed(OUTPUTS),
    "<<loss_names>>": lambda: names(LOSSES),
    "<<losses>>": lambda: listed(LOSSES),
    "<<optimizer_names>>": lambda: names(OPTIMIZER_OPTIONS),
    "<<optimizers>>": lambda: listed(OPTIMIZERS, OPTIMIZER_OPTIONS),
    "<<init_names>>": lambda: names(INITS),
    "<<inits>>": lambda: listed(INITS),
    "<<initializer_names>>": lambda: names(INITIALIZERS),
}


def documented(function):
    """``function``, its docstring's placeholders (:data:`PLACEHOLDERS`) filled from the lists above."""
    for placeholder, text in PLACEHOLDERS.items():
        function.__doc__ = function.__doc__.replace(placeholder, text())
    return function
