"""One list per concept: every listed name works everywhere it is offered, in every backend.

These tests take their names from :mod:`fastbp._concepts`, so a name added there is
checked at once: a backend without its kernel, an oracle, a command-line choice or
an estimator parameter missing it, fails here.
"""

import random

import numpy as np
import pytest

import fastbp
from fastbp import cli
from fastbp._backends import get_backend
from fastbp._concepts import (
    ACTIVATIONS,
    HIDDEN_ACTIVATIONS,
    INITS,
    LAYER_KINDS,
    LOSSES,
    OPTIMIZER_OPTIONS,
    OPTIMIZERS,
    OUTPUTS,
    ActivationCode,
    LayerKindCode,
    LossCode,
    OptimizerCode,
)
from fastbp._constants import LEAKY_SLOPE, compiled_constants
from fastbp._layout import Layer, Layout, initial_weights
from fastbp._training import Options


def softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


#: Each activation as its definition states it, written here in NumPy (softmax: over each row's layer).
ORACLES = {
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
    "leaky_relu": lambda a: np.where(a > 0, a, LEAKY_SLOPE * a),
    "identity": lambda a: a,
    "softmax": softmax,
    "exp": np.exp,
}


def test_every_activation_has_an_oracle_here():
    assert set(ORACLES) == set(ACTIVATIONS)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "fast"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_has_its_kernel_in_every_compiled_backend(compiled_backend, activation, exact):
    """A layer of each activation, with the identity matrix for weights: its outputs are the activation of its
    inputs (a code without a function in a backend falls through to the identity, which this tells apart)."""
    layout = Layout.from_sizes((4, 4), [activation])
    weights = np.hstack([np.eye(4), np.zeros((4, 1))]).ravel()
    X = np.random.default_rng(0).normal(0, 3, (50, 4))
    out = np.empty_like(X)
    get_backend(compiled_backend).predict_batch(layout.network(exact), weights, X, out)
    np.testing.assert_allclose(out, ORACLES[activation](X), rtol=1e-14, atol=1e-300)


def test_codes_are_positions_and_the_compiled_constants_carry_them_all():
    kernel_optimizers = [name for name, optimizer in OPTIMIZERS.items() if optimizer.in_kernels]
    assert "lbfgs" not in kernel_optimizers  # SciPy drives it; the kernels only compute its gradients
    for choices, codes, prefix in (
        (ACTIVATIONS, ActivationCode, "ACTIVATION"),
        (LOSSES, LossCode, "LOSS"),
        (kernel_optimizers, OptimizerCode, "OPTIMIZER"),
        (LAYER_KINDS, LayerKindCode, "LAYER"),
    ):
        assert [code.name.lower() for code in codes] == list(choices)
        assert [int(code) for code in codes] == list(range(len(choices)))
        assert all(compiled_constants()[f"{prefix}_{code.name}"] == code for code in codes)


@pytest.mark.parametrize("output", OUTPUTS)
def test_every_output_trains_with_each_of_its_losses_and_refuses_the_others(output):
    X, y = fastbp.data.tutorial_toy()
    for loss in LOSSES:
        if loss in OUTPUTS[output].losses:
            model = fastbp.train(X, X[:, 0] if not OUTPUTS[output].classifies else y, output=output, loss=loss,
                                 epochs=2, seed=0)  # fmt: skip
            assert model.activations[-1] == output
        else:
            with pytest.raises(ValueError, match="loss must be one of"):
                Options.create(output=output, loss=loss)


@pytest.mark.parametrize("optimizer", OPTIMIZER_OPTIONS)
def test_every_optimizer_option_trains(compiled_backend, optimizer):
    X, y = fastbp.data.tutorial_toy()
    model = fastbp.train(X, y, optimizer=optimizer, lr=0.01, epochs=3, seed=0, backend=compiled_backend)
    assert model.options["optimizer"] == optimizer


@pytest.mark.parametrize("init", INITS)
def test_every_init_fills_the_buffer(init):
    layout = Layout.from_sizes((5, 4, 3))
    weights = initial_weights(layout, init, random.Random(0) if init == "tutorial" else np.random.default_rng(0))
    assert weights.shape == (layout.n_weights,) and np.isfinite(weights).all() and weights.any()


def test_every_layer_kind_and_activation_builds_a_layout():
    for activation in ACTIVATIONS:
        layout = Layout.from_sizes((3, 2), [activation])
        assert layout.kinds.tolist() == [LayerKindCode.DENSE] and layout.activations == (activation,)
    image = (6, 6, 2)
    conv = Layer.conv2d(image, 3, (3, 3), (1, 1), "valid", "relu")
    pool = Layer.max_pool2d(conv.out_shape, (2, 2))
    drop = Layer.dropout(pool.out_shape, 0.5)
    flat = Layer.flatten(drop.out_shape)
    layout = Layout.from_layers([conv, pool, drop, flat, Layer.dense(flat.n_out, 2, "softmax")])
    assert sorted(LayerKindCode(code).name.lower() for code in layout.kinds.tolist()) == sorted(LAYER_KINDS)


def test_the_command_line_offers_every_choice():
    parser = cli._parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    actions = {action.dest: action for action in train._actions}
    assert list(actions["optimizer"].choices) == list(OPTIMIZER_OPTIONS)
    assert list(actions["init"].choices) == list(INITS)
    # The train command scores classifiers: the losses of the outputs that classify.
    assert set(actions["loss"].choices) == {loss for out in OUTPUTS.values() if out.classifies for loss in out.losses}
    assert set(actions["output"].choices) == {name for name, output in OUTPUTS.items() if output.classifies}
    assert all(name in actions["activation"].help for name in HIDDEN_ACTIVATIONS)


def test_the_estimators_accept_every_hidden_activation_and_optimizer():
    X, y = fastbp.data.tutorial_toy()
    names = {"sigmoid": "logistic"}
    for activation in HIDDEN_ACTIVATIONS:
        clf = fastbp.MLPClassifier(hidden_layer_sizes=(3,), activation=names.get(activation, activation), max_iter=2)
        with pytest.warns(Warning):  # not converged in 2 epochs
            clf.fit(X, y)
        assert clf.model_.activations[0] == activation
    for solver in OPTIMIZER_OPTIONS:
        with pytest.warns(Warning):  # not converged in 1 epoch or iteration
            fastbp.MLPRegressor(hidden_layer_sizes=(3,), solver=solver, max_iter=1).fit(X, X[:, 0])
