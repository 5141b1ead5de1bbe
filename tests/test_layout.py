"""The flat layout: layers, their kinds, offsets and codes; and the initialisation schemes."""

import random

import numpy as np
import pytest

from fastbp import reference
from fastbp._concepts import INITIALIZERS, ActivationCode, LayerKindCode
from fastbp._layout import Layer, Layout, draw_initializer, initial_weights


def test_offsets_and_activations_of_a_deep_network():
    layout = Layout.from_sizes((4, 3, 5, 2), ["tanh", "relu", "softmax"])
    assert layout.w_off.tolist() == [0, 15, 35, 47]
    assert layout.o_off.tolist() == [0, 3, 8, 10]
    assert layout.sizes.tolist() == [4, 3, 5, 2]
    assert layout.acts.tolist() == [ActivationCode.TANH, ActivationCode.RELU, ActivationCode.SOFTMAX]
    assert layout.kinds.tolist() == [LayerKindCode.DENSE] * 3
    assert layout.activations == ("tanh", "relu", "softmax")
    assert Layout.from_sizes((2, 2, 2)).activations == ("sigmoid", "sigmoid")
    with pytest.raises(ValueError, match="2 activations given for 3 layers"):
        Layout.from_sizes((4, 3, 5, 2), ["tanh", "relu"])


def test_a_layout_is_its_sequence_of_layers():
    layers = [Layer.dense(4, 3, "tanh"), Layer.dense(3, 2, "softmax")]
    layout = Layout.from_layers(layers)
    assert layout == Layout.from_sizes((4, 3, 2), ["tanh", "softmax"])
    assert [layer.n_weights for layer in layout.layers] == [15, 8]
    net = layout.network(exact=False)
    assert net.exact is False and net.w_off is layout.w_off and net.activations is layout.acts
    with pytest.raises(ValueError, match=r"a layer puts out shape \(3,\) but the next takes \(2,\)"):
        Layout.from_layers([Layer.dense(4, 3, "tanh"), Layer.dense(2, 2, "softmax")])
    with pytest.raises(ValueError, match="unknown layer kind 'conv'"):
        Layout.from_layers([Layer("conv", "relu", (4,), (3,), units=3, fan_in=4)])
    with pytest.raises(ValueError, match="unknown activation 'no_such_activation'"):
        Layout.from_sizes((2, 2), ["no_such_activation"])


def test_tutorial_init_is_the_tutorials_random_stream():
    layout = Layout.from_sizes((7, 5, 3))
    weights = initial_weights(layout, "tutorial", random.Random(1))
    np.testing.assert_array_equal(weights, reference.pack(reference.initialize_network(7, 5, 3, random.Random(1))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_glorot_is_uniform_within_the_fan_bound_with_zero_biases(dtype):
    layout = Layout.from_sizes((300, 200, 100))
    weights = initial_weights(layout, "glorot", np.random.default_rng(0), dtype)
    assert weights.dtype == dtype
    for block in layout.layer_views(weights):
        n_out, n_in = block.shape[0], block.shape[1] - 1
        limit = np.sqrt(6 / (n_in + n_out))
        assert np.all(block[:, -1] == 0)
        inner = block[:, :-1]
        assert np.abs(inner).max() <= limit
        assert np.abs(inner).max() > 0.99 * limit
        # A uniform variable on [-l, l] has standard deviation l / sqrt(3).
        assert inner.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)


def test_he_is_normal_with_the_fan_in_deviation():
    layout = Layout.from_sizes((400, 300, 10), ["relu", "softmax"])
    weights = initial_weights(layout, "he", np.random.default_rng(0))
    hidden = layout.layer_views(weights)[0]
    assert np.all(hidden[:, -1] == 0)
    assert hidden[:, :-1].mean() == pytest.approx(0, abs=0.002)
    assert hidden[:, :-1].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)


def test_default_init_picks_he_for_relu_layers_and_glorot_for_the_others():
    layout = Layout.from_sizes((50, 40, 30, 3), ["relu", "tanh", "softmax"])
    default = initial_weights(layout, None, np.random.default_rng(7))
    relu, tanh, out = layout.layer_views(default)
    expected_relu = np.random.default_rng(7).normal(0, np.sqrt(2 / 50), (40, 50))
    np.testing.assert_array_equal(relu[:, :-1], expected_relu)
    assert np.abs(tanh[:, :-1]).max() <= np.sqrt(6 / (40 + 30))
    assert np.abs(out[:, :-1]).max() <= np.sqrt(6 / (30 + 3))


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init must be None or one of"):
        initial_weights(Layout.from_sizes((2, 2, 2)), "xavier", np.random.default_rng(0))


#: Keras's initializers as its documentation states them, for a kernel of fans (fan_in, fan_out): each one's
#: distribution and spread (a uniform's limit; a normal's standard deviation before any truncation, which redraws
#: values beyond two of them; Keras's truncated variance-scaling draws are scaled to keep the variance they name).
TRUNCATED = 0.87962566103423978  # the standard deviation of a standard normal truncated at two
KERAS_RULES = {
    "glorot_uniform": ("uniform", lambda fi, fo: np.sqrt(6 / (fi + fo))),
    "glorot_normal": ("truncated", lambda fi, fo: np.sqrt(2 / (fi + fo)) / TRUNCATED),
    "he_uniform": ("uniform", lambda fi, fo: np.sqrt(6 / fi)),
    "he_normal": ("truncated", lambda fi, fo: np.sqrt(2 / fi) / TRUNCATED),
    "lecun_uniform": ("uniform", lambda fi, fo: np.sqrt(3 / fi)),
    "lecun_normal": ("truncated", lambda fi, fo: np.sqrt(1 / fi) / TRUNCATED),
    "random_uniform": ("uniform", lambda fi, fo: 0.05),
    "random_normal": ("normal", lambda fi, fo: 0.05),
    "truncated_normal": ("truncated", lambda fi, fo: 0.05),
    "zeros": ("constant", lambda fi, fo: 0.0),
    "ones": ("constant", lambda fi, fo: 1.0),
}


def test_every_initializer_has_its_keras_rule():
    assert set(KERAS_RULES) == set(INITIALIZERS)


@pytest.mark.parametrize("name", list(KERAS_RULES))
def test_keras_initializers_draw_kernels_and_biases_by_keras_rules(name):
    layout = Layout.from_sizes((300, 400, 300))
    rng = np.random.default_rng(0)
    weights = initial_weights(layout, "he", rng, np.float64, [(name, name)] * 2)
    distribution, spread_of = KERAS_RULES[name]
    for block in layout.layer_views(weights):
        units, fan_in = block.shape[0], block.shape[1] - 1
        # A bias vector's fans are its length, as Keras counts a vector's.
        for values, spread in ((block[:, :-1], spread_of(fan_in, units)), (block[:, -1], spread_of(units, units))):
            if distribution == "constant":
                assert np.all(values == spread)
            elif distribution == "uniform":
                assert spread * 0.98 < np.abs(values).max() <= spread
                assert values.std() == pytest.approx(spread / np.sqrt(3), rel=0.15 if values.ndim == 1 else 0.02)
            else:
                assert values.std() == pytest.approx(
                    spread * (TRUNCATED if distribution == "truncated" else 1.0), rel=0.15 if values.ndim == 1 else 0.02
                )
                assert (np.abs(values).max() <= 2 * spread) == (distribution == "truncated")


def test_layer_initializers_draw_in_order_and_leave_the_others_to_the_scheme():
    layout = Layout.from_sizes((6, 5, 4, 3), ["relu", "tanh", "softmax"])
    weights = initial_weights(
        layout, None, np.random.default_rng(3), np.float64, [(None, "ones"), ("lecun_normal", None)]
    )
    rng = np.random.default_rng(3)
    first, second, out = layout.layer_views(weights)
    np.testing.assert_array_equal(first[:, :-1], rng.normal(0, np.sqrt(2 / 6), (5, 6)))  # relu's He
    assert np.all(first[:, -1] == 1.0)
    np.testing.assert_array_equal(second[:, :-1], draw_initializer("lecun_normal", rng, (4, 5), 5, 4))
    assert np.all(second[:, -1] == 0.0) and np.all(out[:, -1] == 0.0)
    np.testing.assert_array_equal(out[:, :-1], rng.uniform(-np.sqrt(6 / 7), np.sqrt(6 / 7), (3, 4)))
    # A scheme that draws biases (scikit-learn's) still draws them for a layer given only its kernel's initializer.
    sklearn = initial_weights(layout, "sklearn", np.random.default_rng(3), np.float64, [("zeros", None)])
    rng = np.random.default_rng(3)
    limit = np.sqrt(6 / (6 + 5))
    assert np.all(sklearn[: 5 * 7].reshape(5, 7)[:, :-1] == 0.0)
    np.testing.assert_array_equal(sklearn[: 5 * 7].reshape(5, 7)[:, -1], rng.uniform(-limit, limit, 5))
    with pytest.raises(ValueError, match="init='tutorial' .* takes no layer's kernel_initializer"):
        initial_weights(layout, "tutorial", random.Random(0), np.float64, [("zeros", None)])


def test_keras_own_initializers_have_the_same_spread():
    keras = pytest.importorskip("keras", reason="needs Keras to draw its own initializers")
    rng = np.random.default_rng(1)
    for name in INITIALIZERS:
        initializer = keras.initializers.get(name)
        if hasattr(initializer, "seed"):
            initializer = type(initializer)(seed=0)
        theirs = keras.ops.convert_to_numpy(initializer((3, 3, 16, 32), dtype="float64"))
        ours = draw_initializer(name, rng, (32, 144), 144, 288)  # the same kernel's fans: 3 * 3 * 16 and 3 * 3 * 32
        assert ours.std() == pytest.approx(theirs.std(), rel=0.1, abs=1e-12), name
        if KERAS_RULES[name][0] != "normal":  # bounded: a uniform's limit, or two standard deviations
            assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.05), name
