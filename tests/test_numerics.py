"""Numerical faults: extreme features, overflowing sums, divergence and saturation.

The kernels keep the limits that exist (sigmoid and tanh saturate; a softmax whose
largest logit is infinite gives the tied maxima all the probability) and produce
``nan`` where none does (``inf - inf``); the Python layer turns every non-finite
result into a ``FloatingPointError`` naming the problem, so nothing diverged is
returned as if it were fine.  Every case runs for each compiled backend, in
float64 (features around 1e300) and float32 (around 1e38).
"""

import re
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import _backends, data
from fastbp._api import SATURATION_PROBE_ROWS
from fastbp._backends import Data
from fastbp._concepts import HIDDEN_ACTIVATIONS, OUTPUTS
from fastbp._layout import Layout
from fastbp._training import check_outputs

#: Each dtype with the size of its extreme features.
EXTREMES = [pytest.param(np.float64, 1e300, id="float64"), pytest.param(np.float32, 1e38, id="float32")]
COMPILED = [name for name in ("numba", "cython") if name in fastbp.available_backends()]


def _forward(backend, layout, weights, X, exact=True):
    """The kernels' outputs for rows ``X``, unchecked."""
    out = np.empty((len(X), layout.sizes[-1]), dtype=weights.dtype)
    _backends.get_backend(backend).predict_batch(layout.network(exact), weights, X, out)
    return out


def _extreme_rows(dtype, big, n_features=4, n_rows=12):
    """Rows of features of either sign, from about ``big / 2`` to ``2 * big`` (finite in ``dtype``)."""
    rng = np.random.default_rng(7)
    values = rng.choice([-1.0, 1.0], (n_rows, n_features)) * rng.uniform(0.5, 2.0, (n_rows, n_features)) * big
    return np.clip(values, -np.finfo(dtype).max, np.finfo(dtype).max).astype(dtype)


def _small_model(backend, dtype, activation, output, n_features=4):
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (24, n_features))
    y = X[:, 0] if output == "identity" else (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    return fastbp.train(
        X, y, hidden=(6, 5), activation=activation, output=output, epochs=2, lr=0.1, seed=0, backend=backend,
        dtype=dtype,
    )  # fmt: skip


def _network(sizes, activations, weights, dtype):
    """A hand-set network: the layout and its flat weights (layer blocks row-major, bias last)."""
    return Layout.from_sizes(sizes, activations), np.array(weights, dtype=dtype)


# -- extreme features through every activation ------------------------------------------------------


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_saturating_layers_give_finite_outputs_for_extreme_features(compiled_backend, dtype, big, activation, output):
    model = _small_model(compiled_backend, dtype, activation, output)
    X = _extreme_rows(dtype, big)
    for exact in (True, False):
        out = _forward(compiled_backend, model._layout, model._weights, X, exact)
        assert np.isfinite(out).all()
        check_outputs(out, model._weights)
        if output != "identity":  # probabilities, or exp's positive rates
            assert ((out >= 0) & (out <= (1 if OUTPUTS[output].classifies else np.inf))).all()


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("exact", [True, False], ids=["exact", "fast"])
@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_backends_agree_bit_for_bit_on_extreme_features(dtype, big, exact):
    """Overflow, nan included, happens at the same places in both compiled backends (9 inputs: both sum orders)."""
    X = _extreme_rows(dtype, big, n_features=9)
    for activation in HIDDEN_ACTIVATIONS:
        for output in OUTPUTS:
            model = _small_model("numba", dtype, activation, output, n_features=9)
            numba = _forward("numba", model._layout, model._weights, X, exact)
            cython = _forward("cython", model._layout, model._weights, X, exact)
            np.testing.assert_array_equal(numba, cython, err_msg=f"{activation=} {output=}")


@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_softmax_of_infinite_logits_gives_the_tied_maxima_the_probability(compiled_backend, dtype, big):
    # One input, one identity hidden unit (weight 1), three softmax outputs whose logits are w * x.
    def outputs(w, x):
        layout, weights = _network((1, 1, 3), ("identity", "softmax"), [1, 0, w[0], 0, w[1], 0, w[2], 0], dtype)
        return _forward(compiled_backend, layout, weights, np.array([[x]], dtype=dtype))[0]

    np.testing.assert_array_equal(outputs([big, big, 1], big), [0.5, 0.5, 0.0])  # +inf, +inf, finite
    np.testing.assert_array_equal(outputs([big, -big, 1], big), [1.0, 0.0, 0.0])  # +inf, -inf, finite
    np.testing.assert_array_equal(outputs([-big, -big, -big], big), np.full(3, 1 / 3, dtype=dtype))  # all -inf
    np.testing.assert_array_equal(outputs([-big, -big, 1], big), [0.0, 0.0, 1.0])  # -inf, -inf, finite
    # A hidden value of inf (big * big) makes the logits w * inf: 0 * inf is nan, which must not be hidden.
    layout, weights = _network((1, 1, 3), ("identity", "softmax"), [big, 0, 1, 0, 0, 0, -1, 0], dtype)
    X = np.array([[big]], dtype=dtype)
    np.testing.assert_array_equal(_forward(compiled_backend, layout, weights, X)[0], [1.0, np.nan, 0.0])
    layout, weights = _network((1, 1, 3), ("identity", "softmax"), [big, 0, 0, 0, 1, 0, -1, 0], dtype)
    assert np.isnan(_forward(compiled_backend, layout, weights, X)).all()  # nan first: nan everywhere


@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_softmax_of_infinite_logits_in_a_mini_batch_has_a_finite_loss(compiled_backend, dtype, big):
    layout, weights = _network((1, 1, 3), ("identity", "softmax"), [1, 0, big, 0, big, 0, 1, 0], dtype)
    X, Y = np.array([[big]], dtype=dtype), np.array([[1, 0, 0]], dtype=dtype)
    grad = np.zeros_like(weights)
    data = Data(X, Y, np.ones(1, dtype=dtype))
    loss = _backends.get_backend(compiled_backend).batch_gradient(
        layout.network(exact=True), weights, data, np.zeros(1, np.intp), grad
    )
    assert loss == pytest.approx(np.log(2), rel=1e-6)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_relu_passes_on_the_nan_of_an_overflowed_sum(compiled_backend, dtype, big):
    # identity units reach +inf and -inf; the relu unit's sum is inf - inf = nan, which it must not hide as 0.
    layout, weights = _network((1, 2, 1, 1), ("identity", "relu", "identity"), [big, 0, -big, 0, 1, 1, 0, 1, 0], dtype)
    out = _forward(compiled_backend, layout, weights, np.array([[big], [0.5]], dtype=dtype))
    assert np.isnan(out[0, 0])
    assert out[1, 0] == 0.0  # finite rows are untouched: relu(0.5 * big - 0.5 * big) = 0
    with pytest.raises(FloatingPointError, match=r"1 of 2 rows \(the first is row 0\).*overflowed.*scale the features"):
        check_outputs(out, weights)


def test_check_outputs_passes_finite_outputs_through_and_names_the_first_bad_row():
    out = np.array([[0.5, 0.5], [1.0, 0.0], [0.1, 0.9]], dtype=np.float32)
    assert check_outputs(out, np.zeros(3)) is out
    for bad in (np.nan, np.inf, -np.inf):
        out[2, 1] = bad
        with pytest.raises(FloatingPointError, match=r"1 of 3 rows \(the first is row 2\).*float32 range"):
            check_outputs(out, np.zeros(3))


def test_outputs_of_weights_written_not_finite_blame_the_weights_not_the_features(compiled_backend, tmp_path):
    model = fastbp.train(np.eye(3), [0, 1, 2], hidden=2, epochs=1, seed=0, backend=compiled_backend)
    model._weights[0] = np.nan  # as writing into an estimator's coefs_ does
    with pytest.raises(FloatingPointError, match="some of its weights are not"):
        model.predict(np.eye(3))
    with pytest.raises(ValueError, match="weights are not all finite: .* would not load, so it is not written"):
        model.save(tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:training ended at epoch:RuntimeWarning")  # saturated sigmoid outputs
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity"])
@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_overflowing_layers_are_reported_never_returned(compiled_backend, dtype, big, activation, output):
    """Unbounded layers on extreme features: each result is finite, or a FloatingPointError says why."""
    model = _small_model(compiled_backend, dtype, activation, output)
    out = _forward(compiled_backend, model._layout, model._weights, _extreme_rows(dtype, big))
    if np.isfinite(out).all():
        check_outputs(out, model._weights)
    else:
        with pytest.raises(FloatingPointError, match="overflowed"):
            check_outputs(out, model._weights)
    out = _forward(compiled_backend, model._layout, model._weights, _extreme_rows(dtype, np.finfo(dtype).max / 2))
    with pytest.raises(FloatingPointError, match="overflowed"):  # these sums overflow in every such network
        check_outputs(out, model._weights)
    X = _extreme_rows(dtype, big)
    y = X[:, 0] / big if output == "identity" else np.arange(len(X)) % 3
    try:
        trained = fastbp.train(
            X, y, hidden=(6, 5), activation=activation, output=output, epochs=3, seed=0, backend=compiled_backend,
            dtype=dtype,
        )  # fmt: skip
    except FloatingPointError as error:
        assert re.search(r"diverged (at|by) epoch \d+: .*scale the features", str(error))
    else:
        assert np.isfinite(trained.weights).all() and np.isfinite(trained.history).all()


# -- divergence ---------------------------------------------------------------------------------------

OPTIMIZERS = [
    pytest.param({"optimizer": "sgd"}, id="sgd"),
    pytest.param({"optimizer": "sgd", "momentum": 0.9}, id="momentum"),
    pytest.param({"optimizer": "sgd", "momentum": 0.9, "nesterov": True}, id="nesterov"),
    pytest.param({"optimizer": "adam"}, id="adam"),
]


def _regression(n_rows=20):
    X = np.random.default_rng(0).uniform(-3, 3, (n_rows, 3))
    return X, X.sum(axis=1)


@pytest.mark.parametrize("batch_size", [None, 8], ids=["online", "batch8"])
@pytest.mark.parametrize("options", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_huge_lr_stops_with_the_epoch_named(compiled_backend, dtype, options, batch_size):
    X, y = _regression()
    lr = 1e300 if options["optimizer"] == "adam" else 1e30  # adam's steps are about lr: it needs more
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch 0: the loss became (nan|inf)"):
        fastbp.train(
            X, y, hidden=8, activation="identity", output="identity", lr=lr, epochs=50, batch_size=batch_size,
            seed=0, backend=compiled_backend, dtype=dtype, **options,
        )  # fmt: skip


@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_rprop_stops_with_the_epoch_named_when_its_sums_overflow(compiled_backend, dtype, big):
    """rprop ignores lr (its steps are bounded), so only overflowing sums can make it diverge."""
    X, y = _regression()
    with pytest.raises(FloatingPointError, match=r"diverged (at|by) epoch 0: .*scale the features"):
        fastbp.train(
            X * big / 4, y, hidden=(8, 8), activation="identity", output="identity", optimizer="rprop", epochs=5,
            seed=0, backend=compiled_backend, dtype=dtype,
        )  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_gradual_divergence_names_the_first_bad_epoch(compiled_backend, dtype):
    """Full-batch descent past its stable rate grows geometrically; the error names the first non-finite epoch."""
    X, y = _regression()
    losses = []
    with pytest.raises(FloatingPointError, match=r"diverged at epoch (\d+)") as raised:
        fastbp.train(
            X, y, hidden=4, activation="identity", output="identity", lr=0.3, batch_size=len(X), epochs=500, seed=0,
            backend=compiled_backend, dtype=dtype, callback=lambda epoch, loss: losses.append(loss),
        )  # fmt: skip
    epoch = int(re.search(r"epoch (\d+)", str(raised.value)).group(1))
    assert epoch == len(losses) > 2  # every epoch before it was finite and reached the callback
    assert np.isfinite(losses).all()


# -- saturation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_saturated_sigmoid_network_warns_naming_the_epoch(compiled_backend, dtype):
    X, y = data.tutorial_toy()
    with pytest.warns(RuntimeWarning, match=r"training ended at epoch 19 with every sigmoid output saturated"):
        model = fastbp.train(X, y, hidden=2, epochs=20, lr=1e6, seed=1, backend=compiled_backend, dtype=dtype)
    assert np.isfinite(model.weights).all()  # finite, but stuck
    with pytest.warns(RuntimeWarning, match=r"ended at epoch 4 "):
        fastbp.train(
            X, y, hidden=2, epochs=20, lr=1e6, seed=1, backend=compiled_backend, dtype=dtype,
            callback=lambda epoch, loss: epoch == 4,
        )  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_an_ordinary_training_does_not_warn(compiled_backend, dtype):
    X, y = data.tutorial_toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastbp.train(X, y, hidden=2, epochs=20, lr=0.5, seed=1, backend=compiled_backend, dtype=dtype)


def test_the_saturation_check_reads_a_few_rows_unless_they_are_all_saturated(compiled_backend, monkeypatch):
    """A healthy network is cleared on a probe of rows; only a stuck-looking one costs a pass over every row."""
    rows_read = []
    forward = fastbp.Model.forward

    def counted(self, X, **options):
        rows_read.append(len(X))
        return forward(self, X, **options)

    monkeypatch.setattr(fastbp.Model, "forward", counted)
    X, y = data.tutorial_toy()
    X, y = np.tile(X, (30, 1)), np.tile(y, 30)  # 300 rows
    fastbp.train(X, y, hidden=2, epochs=2, lr=0.5, seed=1, backend=compiled_backend)
    assert rows_read == [SATURATION_PROBE_ROWS]
    rows_read.clear()
    with pytest.warns(RuntimeWarning, match="saturated"):
        fastbp.train(X, y, hidden=2, epochs=2, lr=1e6, seed=1, backend=compiled_backend)
    assert rows_read == [SATURATION_PROBE_ROWS, len(X)]


# -- the reference backend ----------------------------------------------------------------------------


def test_the_reference_reports_the_tutorials_exp_overflow_where_compiled_backends_saturate():
    """The tutorial's ``math.exp(-a)`` raises OverflowError below a = -709: a FloatingPointError here."""
    X, y = data.tutorial_toy()
    extreme = -np.abs(X) * 1e3  # tutorial weights are in [0, 1): activations far below -709
    with pytest.raises(FloatingPointError, match="reference backend's sigmoid overflowed.*-709"):
        fastbp.train(extreme, y, hidden=2, epochs=1, seed=1, init="tutorial", backend="reference")
    model = fastbp.train(X, y, hidden=2, epochs=1, seed=1, init="tutorial", backend="reference")
    with pytest.raises(FloatingPointError, match="sigmoid overflowed"):
        _forward("reference", model._layout, model._weights, extreme)
    for backend in COMPILED:
        out = _forward(backend, model._layout, model._weights, extreme)
        assert np.isfinite(out).all()
        trained = fastbp.train(extreme, y, hidden=2, epochs=1, seed=1, init="tutorial", backend=backend)
        assert np.isfinite(trained.weights).all()


@pytest.mark.parametrize(("dtype", "big"), EXTREMES)
def test_model_forward_refuses_outputs_of_overflowed_sums(compiled_backend, dtype, big):
    model = _small_model(compiled_backend, dtype, "identity", "identity")
    X = _extreme_rows(dtype, np.finfo(dtype).max / 2)
    with pytest.raises(FloatingPointError, match="overflowed"):
        model.forward(X)
    with pytest.raises(FloatingPointError, match="overflowed"):
        model.predict(X)


def test_a_softmax_network_blown_up_by_a_huge_lr_warns_but_a_confident_one_does_not(compiled_backend):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (60, 3))
    y = (X[:, 0] > 0.5).astype(int)
    options = {"hidden": 4, "activation": "relu", "output": "softmax", "epochs": 20, "seed": 1}
    with pytest.warns(RuntimeWarning, match="every softmax output saturated"):
        fastbp.train(X, y, lr=1e30, backend=compiled_backend, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fastbp.train(X, y, lr=0.1, backend=compiled_backend, **options)


def test_an_estimator_that_diverges_with_l2_says_so_once_without_numpy_warnings(compiled_backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)) * 1e100, rng.integers(0, 2, 50)
    estimator = fastbp.MLPClassifier(
        solver="sgd", learning_rate_init=1e200, alpha=1.0, max_iter=3, random_state=0, backend=compiled_backend
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the L2 term's overflow used to leak numpy's warnings
        with pytest.raises(FloatingPointError, match="non-finite parameter weights.*in iteration 2 of this fit"):
            estimator.fit(X, y)
