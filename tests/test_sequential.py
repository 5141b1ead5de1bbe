"""fastbp.Sequential, Keras's API: summary, compile, fit's History, evaluate, predict, weights and model files."""

import json
import re
import sys
import types

import numpy as np
import pytest
from test_layers import require_layered

import fastbp
import fastbp._model
import fastbp._training
from fastbp import cli
from fastbp._sequential import SGD, Adam, RMSprop
from fastbp.layers import Activation, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D


@pytest.fixture(params=["numba", "cython"])
def layered_backend(request):
    """Every compiled backend, skipped where it does not run layered networks (yet)."""
    return require_layered(request.param)


def notebook_layers(input_shape=(28, 28, 1)):
    """The founding notebook's network, with its Activation layers."""
    return [
        Conv2D(32, (3, 3), padding="valid", input_shape=input_shape),
        Activation("relu"),
        MaxPooling2D(pool_size=(2, 2)),
        Conv2D(32, (3, 3)),
        Activation("relu"),
        MaxPooling2D(pool_size=(2, 2)),
        Flatten(),
        Dense(128),
        Activation("relu"),
        Dropout(0.5),
        Dense(10),
        Activation("softmax"),
    ]


def small_layers(input_shape=(6, 5, 2), classes=3):
    """A small network of every layer kind, on images of ``input_shape``."""
    return [
        Conv2D(3, (3, 2), padding="same", activation="relu", input_shape=input_shape),
        MaxPooling2D(2),
        Flatten(),
        Dense(8),
        Activation("tanh"),
        Dropout(0.25),
        Dense(classes, activation="softmax"),
    ]


def small_data(n=30, shape=(6, 5, 2), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)), rng.integers(0, classes, n)


def compiled(layers, backend, seed=0, **options):
    model = fastbp.Sequential(layers, seed=seed)
    model.compile(**{"optimizer": "adam", "metrics": ["accuracy"], "dtype": "float64", "backend": backend, **options})
    return model


# --------------------------------------------------------------------------------------------------------------
# summary


def test_errors_name_a_layer_as_its_model_lists_it():
    """A layer is numbered by its index in ``model.layers`` (which leaves Input out, as Keras's does) and named."""
    model = fastbp.Sequential([Input((4, 6, 1)), Conv2D(2, 3), MaxPooling2D(9), Flatten(), Dense(2, "softmax")])
    assert model.layers[1].name == "max_pooling2d"
    with pytest.raises(ValueError, match=r"^layer 1 \(MaxPooling2D 'max_pooling2d'\): a 9x9 pool is larger than"):
        model.build()
    declared = fastbp.Sequential([Input((4, 6, 1), name="pixels"), Flatten(), Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match=r"^the Input layer 'pixels': it declares input_shape \(4, 6, 1\), but its"):
        declared.build((None, 5, 6, 1))


def test_summary_of_the_notebooks_network_is_keras():
    model = fastbp.Sequential(notebook_layers())
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    rows = [
        ("conv2d (Conv2D)", "(None, 26, 26, 32)", "320"),
        ("activation (Activation)", "(None, 26, 26, 32)", "0"),
        ("max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)", "0"),
        ("conv2d_1 (Conv2D)", "(None, 11, 11, 32)", "9,248"),
        ("activation_1 (Activation)", "(None, 11, 11, 32)", "0"),
        ("max_pooling2d_1 (MaxPooling2D)", "(None, 5, 5, 32)", "0"),
        ("flatten (Flatten)", "(None, 800)", "0"),
        ("dense (Dense)", "(None, 128)", "102,528"),
        ("activation_2 (Activation)", "(None, 128)", "0"),
        ("dropout (Dropout)", "(None, 128)", "0"),
        ("dense_1 (Dense)", "(None, 10)", "1,290"),
        ("activation_3 (Activation)", "(None, 10)", "0"),
    ]
    layer_lines = [line.split() for line in text.splitlines() if line.startswith(" ") and "(None" in line]
    assert len(layer_lines) == len(rows)
    for words, (name, shape, params) in zip(layer_lines, rows, strict=True):
        assert " ".join(words[:2]) == name
        assert " ".join(words[2:-1]) == shape
        assert words[-1] == params
    assert "Total params: 113,386" in text
    assert "Trainable params: 113,386" in text
    assert "Non-trainable params: 0" in text
    assert text.startswith('Model: "sequential"')
    # Keras's count: each convolution (3 * 3 * c_in + 1) * 32, each dense layer (n_in + 1) * n_out.
    assert model.count_params() == (9 + 1) * 32 + (9 * 32 + 1) * 32 + (800 + 1) * 128 + (128 + 1) * 10 == 113_386


def test_count_params_before_and_after_building(layered_backend):
    model = compiled(notebook_layers(), layered_backend)
    before = model.count_params()
    model.build()
    assert model.built
    assert before == model.count_params() == sum(w.size for w in model.get_weights()) == 113_386


def test_the_notebooks_network_predicts_ten_probabilities_per_image(layered_backend):
    model = fastbp.Sequential(notebook_layers(), seed=0)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"], backend=layered_backend)
    model.build()
    images = np.random.default_rng(8).random((5, 28, 28, 1)).astype("float32")
    probabilities = model.predict(images)
    assert probabilities.shape == (5, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(images[:, :, :, 0]), probabilities)  # one channel: (n, 28, 28)


def test_summary_with_an_input_layer_and_with_a_built_model():
    declared = fastbp.Sequential([Input((28, 28, 1)), *notebook_layers(input_shape=None)])
    assert declared.count_params() == 113_386
    lines = []
    declared.summary(print_fn=lines.append)
    assert "Total params: 113,386" in lines[0]
    built = fastbp.Sequential(notebook_layers(input_shape=None))
    built.compile()
    built.build((None, 28, 28, 1))
    assert built.count_params() == 113_386


def test_layers_keep_their_names_and_the_others_are_named_as_keras_names_them(tmp_path):
    model = fastbp.Sequential([Input((6, 5, 2)), Conv2D(3, 3, name="dense"), Flatten(), Dense(4, name="hidden"),
                               Dense(3, activation="softmax")])  # fmt: skip
    assert [layer.name for layer in model.layers] == ["dense", "flatten", "hidden", "dense_1"]  # Input: not listed
    lines = []
    model.summary(print_fn=lines.append)
    rows = [line.split()[:2] for line in lines[0].splitlines() if line.split()[1:2] and line.split()[1][0] == "("]
    assert rows[1:] == [["dense", "(Conv2D)"], ["flatten", "(Flatten)"], ["hidden", "(Dense)"], ["dense_1", "(Dense)"]]
    model.compile(loss="sparse_categorical_crossentropy", backend="numba")
    model.fit(*small_data(), epochs=1, verbose=0)
    model.save(tmp_path / "named.npz")
    assert [layer.name for layer in fastbp.load(tmp_path / "named.npz").layers] == [
        layer.name for layer in model.layers
    ]
    assert model.get_layer("hidden") is model.layers[2] and model.get_layer(index=-1).name == "dense_1"
    with pytest.raises(ValueError, match=r"no layer is named 'out'; the layers are \['dense', 'flatten'"):
        model.get_layer("out")
    for arguments in ({}, {"name": "hidden", "index": 0}):
        with pytest.raises(ValueError, match="give get_layer a layer's name or its index, not both or neither"):
            model.get_layer(**arguments)
    for index in (4, -5, 1.0, True):
        with pytest.raises(ValueError, match=r"index must be an integer in \[-4, 4\)"):
            model.get_layer(index=index)
    with pytest.raises(ValueError, match="the model has a layer named 'hidden' already: layer names must be unique"):
        fastbp.Sequential([Dense(4, name="hidden"), Dense(2, name="hidden")])
    for bad in ("", 3):
        with pytest.raises(ValueError, match=f"Dense: name must be a non-empty string, got {bad!r}"):
            Dense(4, name=bad)
    with pytest.raises(ValueError, match="Input: name must be a non-empty string"):
        Input((3,), name="")


def test_summary_of_a_model_still_being_put_together_shows_its_layers_so_far():
    lines = []
    unfinished = fastbp.Sequential([Conv2D(2, 3, input_shape=(8, 8, 1)), MaxPooling2D(2)])
    unfinished.summary(print_fn=lines.append)
    assert "(None, 3, 3, 2)" in lines[0] and "Total params: 20" in lines[0] and unfinished.count_params() == 20
    unfinished.add(Flatten())
    unfinished.add(Dense(3, activation="relu"))  # not an output layer yet
    assert unfinished.count_params() == 20 + 19 * 3
    with pytest.raises(
        ValueError, match=r"layer 1 \(MaxPooling2D 'max_pooling2d'\): a 9x9 pool is larger than its 6x6"
    ):
        fastbp.Sequential([Conv2D(2, 3, input_shape=(8, 8, 1)), MaxPooling2D(9)]).summary()


def test_summary_without_an_input_shape_is_refused():
    model = fastbp.Sequential(notebook_layers(input_shape=None))
    with pytest.raises(ValueError, match="input shape"):
        model.summary()
    with pytest.raises(ValueError, match="input shape"):
        model.count_params()


# --------------------------------------------------------------------------------------------------------------
# fit, evaluate, predict


def test_fit_returns_a_history_of_every_metric_per_epoch(layered_backend):
    x, y = small_data()
    x_val, y_val = small_data(n=11, seed=1)
    model = compiled(small_layers(), layered_backend)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_data=(x_val, y_val))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 3 for values in history.history.values())
    assert history.epoch == [0, 1, 2]
    assert history.params["epochs"] == 3 and history.params["steps"] == 4
    assert all(np.isfinite(value) for values in history.history.values() for value in values)
    # After the last epoch: the validation scores are evaluate's; the accuracy counts the training passes' rows.
    val_loss, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-12)
    assert history.history["val_accuracy"][-1] == val_accuracy
    assert all(round(value * 30) == pytest.approx(value * 30, abs=1e-9) for value in history.history["accuracy"])
    more = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert set(more.history) == {"loss", "accuracy"} and len(more.history["loss"]) == 2


def test_evaluate_returns_the_mean_cross_entropy_and_accuracy(layered_backend):
    x, y = small_data()
    model = compiled(small_layers(), layered_backend)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    probabilities = model.predict(x)
    assert probabilities.shape == (30, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert (probabilities > 0).all()
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(-np.mean(np.log(probabilities[np.arange(30), y])), rel=1e-12)
    assert accuracy == np.mean(probabilities.argmax(axis=1) == y)
    bare = compiled(small_layers(), layered_backend, metrics=None)
    bare.build()
    bare.set_weights(model.get_weights())
    result = bare.evaluate(x, y, verbose=0)
    assert isinstance(result, float) and result == pytest.approx(loss, rel=1e-12)


def test_evaluate_prints_its_scores_unless_silent(layered_backend, capsys):
    x, y = small_data()
    model = compiled(small_layers(), layered_backend)
    model.build()
    model.evaluate(x, y, verbose=0)
    assert capsys.readouterr().out == ""
    loss, accuracy = model.evaluate(x, y)
    assert capsys.readouterr().out.strip() == f"accuracy: {accuracy:.4f} - loss: {loss:.4f}"
    model.fit(x, y, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "1/1" in out


class RecordingBar:
    """tqdm's stand-in: what a bar was made with and advanced by."""

    made = []

    def __init__(self, total, unit, leave):
        self.total, self.unit, self.leave, self.updates, self.closed = total, unit, leave, [], False
        RecordingBar.made.append(self)

    @property
    def n(self):
        return sum(self.updates)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("call_work", [1, 10**12], ids=["a-kernel-call-per-batch", "one-per-epoch"])
@pytest.mark.parametrize("dense_only", [False, True], ids=["layered", "dense-only"])
def test_verbose_fit_shows_a_bar_over_each_epochs_steps(layered_backend, monkeypatch, dense_only, call_work):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    monkeypatch.setattr(fastbp._training, "LAYERED_CALL_WORK", call_work)
    monkeypatch.setattr(RecordingBar, "made", [])
    x, y = small_data(n=45)
    if dense_only:  # the dense kernels, which run whole epochs
        x, layers = x.reshape(45, -1), [Dense(4, activation="relu", input_shape=(60,)), Dense(3, activation="softmax")]
    model = compiled(layers if dense_only else small_layers(), layered_backend)
    model.fit(x, y, batch_size=8, epochs=2)  # verbose "auto": 1
    bars = RecordingBar.made
    assert len(bars) == 2  # one an epoch, each over its 6 steps (batches), counted whole, gone once closed
    assert all(bar.total == 6 and bar.unit == "step" and not bar.leave and bar.closed for bar in bars)
    assert all(bar.n == 6 and all(type(n) is int and n >= 0 for n in bar.updates) for bar in bars)
    assert len(bars[0].updates) == (6 if call_work == 1 and not dense_only else 1)
    model.fit(x, y, batch_size=8, epochs=2, verbose=2)
    assert len(RecordingBar.made) == 2


def test_validation_split_validates_on_the_last_rows_as_validation_data_would(layered_backend):
    x, y = small_data(n=40)
    split = compiled(small_layers(), layered_backend, seed=3)
    history = split.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_split=0.25)
    given = compiled(small_layers(), layered_backend, seed=3)
    expected = given.fit(x[:30], y[:30], batch_size=8, epochs=2, verbose=0, validation_data=(x[30:], y[30:]))
    assert history.history == expected.history and set(history.history) == {"loss", "accuracy", "val_loss",
                                                                            "val_accuracy"}  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(split.get_weights(), given.get_weights(), strict=True))
    overridden = compiled(small_layers(), layered_backend, seed=3)
    both = overridden.fit(x[:30], y[:30], batch_size=8, epochs=2, verbose=0, validation_data=(x[30:], y[30:]),
                          validation_split=0.5)  # fmt: skip
    assert both.history == expected.history  # validation_data wins, as in Keras


@pytest.mark.parametrize(
    ("fraction", "n", "error"),
    [
        (1.0, 40, r"validation_split must be in \[0, 1\), got 1.0"),
        (-0.1, 40, r"validation_split must be in \[0, 1\), got -0.1"),
        (float("nan"), 40, "validation_split must be a finite number"),
        ("0.2", 40, "validation_split must be a finite number"),
        (0.1, 1, r"1 rows cannot be split .* validation_split=0.1"),
        (1e-17, 40, r"40 rows cannot be split .* validation_split=1e-17"),  # 1 - 1e-17 rounds to 1
    ],
)
def test_a_validation_split_that_leaves_no_rows_to_train_or_validate_is_refused(fraction, n, error):
    x, y = small_data(n=n)
    model = compiled(small_layers(), "numba")
    with pytest.raises(ValueError, match=error):
        model.fit(x, y, epochs=1, verbose=0, validation_split=fraction)
    assert model._trainer is None  # nothing built, nothing trained


class Recorder:
    """A callback that records Keras's calls, and stops training at the end of epoch ``stop_at``."""

    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def set_model(self, model):
        self.model = model
        self.calls.append("set_model")

    def set_params(self, params):
        self.calls.append(("set_params", params))

    def on_train_begin(self, logs=None):
        self.calls.append("on_train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("on_epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("on_epoch_end", epoch, logs))
        if epoch == self.stop_at:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.calls.append(("on_train_end", logs))


def test_callbacks_are_called_as_keras_calls_them_and_may_stop_training(layered_backend):
    x, y = small_data(n=40)
    model = compiled(small_layers(), layered_backend)
    ended = []
    recorder = Recorder(stop_at=1)
    bare = types.SimpleNamespace(on_train_end=lambda logs: ended.append(logs))  # a callback may lack the others
    history = model.fit(x, y, batch_size=8, epochs=5, verbose=0, validation_split=0.2, callbacks=[bare, recorder])
    logs = [{name: values[epoch] for name, values in history.history.items()} for epoch in range(2)]
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    assert recorder.calls == [
        "set_model", ("set_params", {"epochs": 5, "steps": 4, "verbose": 0}), "on_train_begin",
        ("on_epoch_begin", 0), ("on_epoch_end", 0, logs[0]), ("on_epoch_begin", 1), ("on_epoch_end", 1, logs[1]),
        ("on_train_end", logs[1]),
    ]  # fmt: skip
    assert recorder.model is model and model.stop_training and ended == [logs[1]]
    assert len(model.fit(x, y, epochs=2, verbose=0, callbacks=(Recorder(),)).history["loss"]) == 2  # reset
    with pytest.raises(TypeError, match="callbacks must be a list of callback objects, got Recorder"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=Recorder())
    for useless in (lambda epoch: None, object()):  # never called: a mistake, said so before training
        with pytest.raises(TypeError, match="callbacks must be objects with Keras's training callback methods"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[useless])


def test_keras_early_stopping_stops_and_restores_the_best_weights(layered_backend):
    keras = pytest.importorskip("keras", reason="needs Keras to run its own callback")
    x, y = small_data(n=60)
    model = compiled(small_layers(), layered_backend, optimizer=Adam(learning_rate=0.05))
    weights_after = []
    saver = type("Saver", (), {"on_epoch_end": lambda self, epoch, logs: weights_after.append(model.get_weights())})
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, batch_size=8, epochs=30, verbose=0, validation_split=0.5, callbacks=[saver(), stopper])
    losses = history.history["val_loss"]
    assert len(losses) < 30 and stopper.stopped_epoch == len(losses) - 1
    best = int(np.argmin(losses))
    assert losses[-1] >= losses[best] and best == stopper.best_epoch
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights_after[best], strict=True))


def dense_layers(n_features=30, classes=3):
    """A network of dense layers alone, which trains in the dense kernels (not the layered ones)."""
    return [Dense(6, activation="tanh", input_shape=(n_features,)), Dense(classes, activation="softmax")]


def no_dropout_layers(input_shape=(6, 5, 2), classes=3):
    """A layered network whose batches' losses follow from its weights alone (no dropout)."""
    return [Conv2D(3, (3, 2), activation="relu", input_shape=input_shape), MaxPooling2D(2), Flatten(),
            Dense(classes, activation="softmax")]  # fmt: skip


class BatchRecorder:
    """A callback that records each training batch's logs, and the loss each batch's rows have under the weights
    before its update (the model's own predictions, taken before the batch trains)."""

    def __init__(self, x, y, batch_size, stop_at=None):
        self.x, self.y, self.batch_size, self.stop_at = x, y, batch_size, stop_at
        self.calls, self.losses = [], []

    def set_model(self, model):
        self.model = model

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("begin", self.epoch, batch, logs))
        rows = slice(batch * self.batch_size, (batch + 1) * self.batch_size)  # fit(shuffle=False)
        outputs = self.model.predict(self.x[rows], verbose=0)
        self.losses.append(-np.log(outputs[np.arange(len(outputs)), self.y[rows]]).sum())

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("end", self.epoch, batch, logs))
        if (self.epoch, batch) == self.stop_at:
            self.model.stop_training = True


@pytest.mark.parametrize("network", ["layered", "dense"])
def test_per_batch_callbacks_get_keras_running_logs_and_leave_the_weights_as_they_are(layered_backend, network):
    x, y = small_data(n=28)
    layers = no_dropout_layers if network == "layered" else lambda: dense_layers(n_features=60)
    if network == "dense":
        x = x.reshape(len(x), -1)
    recorder = BatchRecorder(x, y, batch_size=8)
    model = compiled(layers(), layered_backend)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[recorder])
    alone = compiled(layers(), layered_backend)
    alone.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), alone.get_weights(), strict=True))
    ends = [logs for kind, _, _, logs in recorder.calls if kind == "end"]
    assert [call[:3] for call in recorder.calls] == [
        (kind, epoch, batch) for epoch in range(2) for batch in range(4) for kind in ("begin", "end")
    ]
    rows = np.array([8, 16, 24, 28] * 2)
    running = np.concatenate([np.cumsum(recorder.losses[:4]), np.cumsum(recorder.losses[4:])]) / rows
    np.testing.assert_allclose([logs["loss"] for logs in ends], running, rtol=1e-12)
    assert [ends[3]["loss"], ends[7]["loss"]] == history.history["loss"]
    if network == "layered":  # as the epoch's: counted over the training passes so far
        assert [ends[3]["accuracy"], ends[7]["accuracy"]] == history.history["accuracy"]
        assert all(logs["accuracy"] * n == round(logs["accuracy"] * n) for logs, n in zip(ends, rows, strict=True))
    else:  # a dense network's accuracy is measured after each epoch, not per batch
        assert all(set(logs) == {"loss"} for logs in ends)


def test_a_callback_may_stop_training_after_a_batch(layered_backend):
    """Stopped after the third batch of the second epoch: that epoch's history is over its three batches, and the
    weights are those of the same updates run as fits of the rows they trained (dropout masks and all)."""
    x, y = small_data(n=40)
    recorder, epochs = BatchRecorder(x, y, batch_size=8, stop_at=(1, 2)), Recorder()
    model = compiled(small_layers(), layered_backend)
    history = model.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False, callbacks=[recorder, epochs])
    assert history.epoch == [0, 1] and recorder.calls[-1][:3] == ("end", 1, 2)
    assert history.history["loss"][1] == recorder.calls[-1][3]["loss"]
    assert epochs.calls[-2][:2] == ("on_epoch_end", 1) and model.stop_training
    parts = compiled(small_layers(), layered_backend)
    parts.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    parts.fit(x[:24], y[:24], batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), parts.get_weights(), strict=True))


@pytest.mark.parametrize("method", ["on_train_begin", "on_epoch_begin"])
def test_stop_training_set_before_an_epoch_trains_one_batch_as_keras_checks_after_each(layered_backend, method):
    x, y = small_data(n=40)
    stopper = type("Stopper", (), {method: lambda self, *args: setattr(model, "stop_training", True)})()
    model = compiled(small_layers(), layered_backend)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=[stopper])
    one_batch = compiled(small_layers(), layered_backend)
    one_batch.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert history.epoch == [0]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), one_batch.get_weights(), strict=True))


def test_keras_callbacks_run_per_batch_only_where_they_act_on_batches():
    keras = pytest.importorskip("keras", reason="needs Keras's own callbacks")
    from fastbp._sequential import _has_batch_hooks

    class OldStyle(keras.callbacks.Callback):  # Keras's on_train_batch_end calls on_batch_end
        def on_batch_end(self, batch, logs=None):
            self.seen = (batch, logs)

    older_only = type("OlderOnly", (), {"on_batch_end": lambda self, batch, logs: None})()  # Keras calls it not
    assert not _has_batch_hooks([keras.callbacks.EarlyStopping(), keras.callbacks.History(), object(), older_only])
    assert _has_batch_hooks([keras.callbacks.LambdaCallback(on_train_batch_end=print)])
    assert _has_batch_hooks([keras.callbacks.TerminateOnNaN()])
    old = OldStyle()
    x, y = small_data(n=20)
    compiled(small_layers(), "numba").fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[old])
    assert old.seen[0] == 2 and set(old.seen[1]) == {"loss", "accuracy"}


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
@pytest.mark.parametrize("network", ["dense", "conv"])
def test_keras_optimizers_take_the_same_steps_as_keras(layered_backend, optimizer, network):
    """Three full-batch steps from the same weights: Keras 3's own model and optimizer (float32) end where fastbp's
    do, within float32's rounding (a dense network trains in the dense kernels, the other in the layered ones)."""
    keras = pytest.importorskip("keras", reason="needs Keras to train its own model")
    rng = np.random.default_rng(8)
    shape = (5,) if network == "dense" else (5, 5, 1)
    x, y = rng.random((24, *shape)).astype(np.float32), rng.integers(0, 3, 24)
    if network == "dense":
        ours, theirs = [Dense(6, activation="tanh")], [keras.layers.Dense(6, activation="tanh")]
    else:
        ours = [Conv2D(2, 3, activation="tanh"), Flatten()]
        theirs = [keras.layers.Conv2D(2, 3, activation="tanh"), keras.layers.Flatten()]
    ours = fastbp.Sequential([Input(shape), *ours, Dense(3, activation="softmax")], seed=2)
    ours.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", backend=layered_backend)
    ours.build()
    theirs = keras.Sequential([keras.Input(shape), *theirs, keras.layers.Dense(3, activation="softmax")])
    theirs.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    theirs.set_weights(ours.get_weights())
    ours.fit(x, y, batch_size=24, epochs=3, verbose=0, shuffle=False)
    theirs.fit(x, y, batch_size=24, epochs=3, verbose=0, shuffle=False)
    for got, want in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _listing_batch_losses(keras, listed: list):
    """Keras's callback that appends each batch's running loss to ``listed`` (fastbp's fit calls it too)."""
    return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: listed.append(logs["loss"]))


@pytest.mark.parametrize(
    ("loss", "units", "activation"),
    [("mse", 1, None), ("mse", 3, None), ("mse", 2, "sigmoid"), ("binary_crossentropy", 3, "sigmoid")],
)
@pytest.mark.parametrize("network", ["dense", "conv"])
def test_keras_losses_report_and_take_the_steps_of_keras(layered_backend, loss, units, activation, network):
    """Plain SGD, whose steps scale with the gradient, from the same weights, one batch and then two per epoch:
    Keras 3's own model ends where fastbp's does, and its losses (the epochs', the batches' running ones,
    evaluate's, weighted and not) are fastbp's: the squared error and binary cross-entropy averaged over the
    outputs (and the squared error's gradient not halved)."""
    keras = pytest.importorskip("keras", reason="needs Keras to train its own model")
    rng = np.random.default_rng(5)
    shape = (5,) if network == "dense" else (5, 5, 1)
    x = rng.random((24, *shape)).astype(np.float32)
    y = np.eye(units, dtype=np.float32)[rng.integers(0, units, 24)] if units > 1 else rng.integers(0, 2, (24, 1))
    y = y.astype(np.float32) if loss != "mse" or activation else rng.normal(size=(24, units)).astype(np.float32)
    weights = rng.random(24).astype(np.float32) + 0.5
    if network == "dense":
        ours, theirs = [Dense(6, activation="tanh")], [keras.layers.Dense(6, activation="tanh")]
    else:
        ours = [Conv2D(2, 3, activation="tanh"), Flatten()]
        theirs = [keras.layers.Conv2D(2, 3, activation="tanh"), keras.layers.Flatten()]
    ours = fastbp.Sequential([Input(shape), *ours, Dense(units, activation=activation)], seed=2)
    ours.compile(optimizer=SGD(learning_rate=0.1), loss=loss, metrics=[], backend=layered_backend)
    ours.build()
    theirs = keras.Sequential([keras.Input(shape), *theirs, keras.layers.Dense(units, activation=activation)])
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=loss)
    theirs.set_weights(ours.get_weights())
    for batch_size in (24, 12):
        our_batches, their_batches = [], []
        settings = dict(batch_size=batch_size, epochs=2, verbose=0, shuffle=False, sample_weight=weights)
        got = ours.fit(x, y, **settings, callbacks=[_listing_batch_losses(keras, our_batches)])
        want = theirs.fit(x, y, **settings, callbacks=[_listing_batch_losses(keras, their_batches)])
        np.testing.assert_allclose(got.history["loss"], want.history["loss"], rtol=1e-5)
        np.testing.assert_allclose(our_batches, their_batches, rtol=1e-5)
        for got_weights, want_weights in zip(ours.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_allclose(got_weights, want_weights, rtol=1e-4, atol=1e-5)
    for scoring in (None, weights):
        want = theirs.evaluate(x, y, sample_weight=scoring, verbose=0)
        assert ours.evaluate(x, y, sample_weight=scoring, verbose=0) == pytest.approx(want, rel=1e-5)


def test_keras_own_optimizer_objects_compile_as_fastbps_or_are_refused_by_their_setting():
    keras = pytest.importorskip("keras", reason="needs Keras's own optimizers")
    model = fastbp.Sequential(small_layers(), seed=1)
    for theirs, ours in [
        (keras.optimizers.RMSprop(learning_rate=0.5, rho=0.75, epsilon=0.25), RMSprop(0.5, 0.75, 0.25)),
        (keras.optimizers.Adam(learning_rate=0.5, beta_1=0.75, beta_2=0.875), Adam(0.5, 0.75, 0.875)),
        (keras.optimizers.SGD(learning_rate=0.5, momentum=0.75, nesterov=True), SGD(0.5, 0.75, True)),
    ]:  # settings exact in float32, as Keras keeps them
        model.compile(optimizer=theirs)
        assert model._compiled["optimizer"] == ours
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    for theirs, setting in [
        (keras.optimizers.Adam(amsgrad=True), "amsgrad=True"),
        (keras.optimizers.SGD(weight_decay=0.01), "weight_decay=0.01"),
        (keras.optimizers.RMSprop(momentum=0.9), "momentum=0.9"),
        (keras.optimizers.RMSprop(centered=True), "centered=True"),
        (keras.optimizers.Adam(clipnorm=1.0), "clipnorm=1.0"),
    ]:
        with pytest.raises(ValueError, match=f"fastbp's {type(theirs).__name__} has no {setting}"):
            model.compile(optimizer=theirs)
    with pytest.raises(ValueError, match=r"fastbp's Adam takes no learning-rate schedule \(Keras's ExponentialDecay\)"):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule))
    with pytest.raises(TypeError, match="or Keras's, got"):
        model.compile(optimizer=keras.optimizers.Adagrad())


def test_train_on_batch_is_one_update_of_one_batch_and_reports_its_scores_before_it(layered_backend):
    x, y = small_data(n=12)
    on_batch = compiled(no_dropout_layers(), layered_backend)
    fitted = compiled(no_dropout_layers(), layered_backend)
    before = on_batch.evaluate(x, y, verbose=0, return_dict=True)
    scores = on_batch.train_on_batch(x, y, return_dict=True)
    assert scores["loss"] == pytest.approx(before["loss"], rel=1e-12) and scores["accuracy"] == before["accuracy"]
    history = fitted.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
    assert on_batch.history is None and list(scores) == list(history.history)
    assert all(np.array_equal(a, b) for a, b in zip(on_batch.get_weights(), fitted.get_weights(), strict=True))
    second = on_batch.train_on_batch(x, y)  # a list, as evaluate's, and Adam's second step
    fitted.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
    assert isinstance(second, list) and len(second) == 2
    assert all(np.array_equal(a, b) for a, b in zip(on_batch.get_weights(), fitted.get_weights(), strict=True))
    assert on_batch.test_on_batch(x, y) == on_batch.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(on_batch.predict_on_batch(x), on_batch.predict(x))
    np.testing.assert_array_equal(on_batch(x), on_batch.predict(x))
    np.testing.assert_array_equal(on_batch(x, training=False), on_batch.predict(x))
    with pytest.raises(ValueError, match="dropout inside fit only: call the model with training=False"):
        on_batch(x, training=True)
    with pytest.raises(TypeError, match="X must be an array of images"):
        on_batch.train_on_batch(None, y)


def test_train_on_batch_takes_sparse_rows_of_a_dense_network_as_one_batch(layered_backend):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    x, y = small_data(n=12, shape=(30,))
    on_batch = compiled(dense_layers(), layered_backend)
    fitted = compiled(dense_layers(), layered_backend)
    on_batch.stop_training = True  # left as it was, as Keras leaves it
    loss, accuracy = on_batch.train_on_batch(scipy_sparse.csr_matrix(x), y)
    assert on_batch.stop_training and on_batch.history is None
    history = fitted.fit(scipy_sparse.csr_matrix(x), y, batch_size=12, epochs=1, shuffle=False, verbose=0).history
    assert (loss, accuracy) == (history["loss"][0], history["accuracy"][0])  # the accuracy after the update
    assert all(np.array_equal(a, b) for a, b in zip(on_batch.get_weights(), fitted.get_weights(), strict=True))


def test_input_and_output_shapes_are_keras_own():
    model = fastbp.Sequential(notebook_layers())
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    undeclared = fastbp.Sequential(small_layers(input_shape=None))
    assert undeclared.output_shape == (None, 3)
    assert not hasattr(undeclared, "input_shape")  # as Keras's, before the model is called or built
    with pytest.raises(AttributeError, match=r"no input shape yet: give the first layer input_shape=, call build"):
        _ = undeclared.input_shape
    undeclared.build((None, 6, 5, 2))
    assert undeclared.input_shape == (None, 6, 5, 2)
    unfinished = fastbp.Sequential([Conv2D(2, 3, input_shape=(6, 5, 2))])
    assert not hasattr(unfinished, "output_shape") and not hasattr(fastbp.Sequential(), "input_shape")
    with pytest.raises(AttributeError, match="no output shape yet: the last layer must be a Dense layer"):
        _ = unfinished.output_shape


def test_keras_loss_classes_and_spellings_compile_as_their_names():
    keras = pytest.importorskip("keras", reason="needs Keras's own loss objects")
    model = fastbp.Sequential(small_layers(), seed=1)
    for loss, name in [
        ("CategoricalCrossentropy", "categorical_crossentropy"),
        ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
        (keras.losses.SparseCategoricalCrossentropy(), "sparse_categorical_crossentropy"),
        (keras.losses.CategoricalCrossentropy(), "categorical_crossentropy"),
    ]:
        model.compile(optimizer="Adam", loss=loss)  # Keras reads optimizer names in any case
        assert model.get_config()["compile"]["loss"] == name and model.optimizer == Adam()
    for loss, setting in [
        (keras.losses.CategoricalCrossentropy(from_logits=True), "from_logits=True"),
        (keras.losses.CategoricalCrossentropy(label_smoothing=0.1), "label_smoothing=0.1"),
        (keras.losses.SparseCategoricalCrossentropy(ignore_class=0), "ignore_class=0"),
        (keras.losses.CategoricalCrossentropy(reduction="sum"), "reduction='sum'"),
        (keras.losses.CategoricalCrossentropy(axis=0), "axis=0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"has no {setting} (Keras's {type(loss).__name__} setting)")):
            model.compile(loss=loss)
    with pytest.raises(TypeError, match="one of Keras's loss objects"):
        model.compile(loss=keras.losses.Hinge())
    assert Conv2D(2, 3, padding="SAME").padding == "same" and MaxPooling2D(2, padding="VALID").padding == "valid"
    linear = fastbp.Sequential([Dense(2, input_shape=(3,))])
    linear.compile(loss="MSE")
    assert linear.get_config()["compile"]["loss"] == "mse"


def test_a_learning_rate_set_by_keras_callbacks_applies_from_the_next_epoch(layered_backend):
    keras = pytest.importorskip("keras", reason="needs Keras to run its own callbacks")
    x, y = small_data(n=48)
    rates = [0.01, 0.002, 0.0005]
    scheduled = compiled(small_layers(), layered_backend, optimizer=Adam(learning_rate=0.01))
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, rate: rates[epoch])
    history = scheduled.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[scheduler])
    assert history.history["learning_rate"] == rates and scheduled.optimizer.learning_rate == rates[-1]
    by_hand = compiled(small_layers(), layered_backend, optimizer=Adam(learning_rate=0.01))
    for epoch, rate in enumerate(rates):  # the same steps, Adam's memory kept between the fits
        by_hand.optimizer.learning_rate = rate
        by_hand.fit(x, y, batch_size=8, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(scheduled.get_weights(), by_hand.get_weights(), strict=True))
    unchanged = compiled(small_layers(), layered_backend, optimizer=Adam(learning_rate=0.01))
    unchanged.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert not np.array_equal(unchanged.get_weights()[0], scheduled.get_weights()[0])
    plateau = compiled(small_layers(), layered_backend)
    reducer = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=100.0)
    history = plateau.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[reducer])
    # Keras logs each epoch's rate before it halves it: after the first epoch, which sets the best loss, at each.
    assert history.history["learning_rate"] == [0.001, 0.001, 0.0005] and plateau.optimizer.learning_rate == 0.00025
    for rate in (0.0, float("nan"), "fast"):
        plateau.optimizer.learning_rate = 0.001
        setter = type("Setter", (), {"on_epoch_begin": lambda self, epoch, logs, rate=rate: _set_rate(plateau, rate)})
        with pytest.raises(ValueError, match="learning_rate must be"):
            plateau.fit(x, y, verbose=0, callbacks=[setter()])


def _set_rate(model, rate):
    model.optimizer.learning_rate = rate


@pytest.mark.parametrize("metric", ["acc", "sparse_categorical_accuracy", "categorical_accuracy"])
def test_keras_names_of_the_accuracy_name_its_logs(metric):
    """As Keras's logs: each metric under the name compile got, with the accuracy's values."""
    x, y = small_data(n=24)
    named, plain = compiled(small_layers(), "numba", metrics=[metric]), compiled(small_layers(), "numba")
    recorder = BatchRecorder(x, y, batch_size=8)
    history = named.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y), callbacks=[recorder])
    expected = plain.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y)).history
    assert sorted(history.history) == sorted(["loss", metric, "val_loss", f"val_{metric}"])
    assert (
        history.history[metric] == expected["accuracy"] and history.history[f"val_{metric}"] == expected["val_accuracy"]
    )
    assert set(recorder.calls[-1][3]) == {"loss", metric}
    assert named.evaluate(x, y, verbose=0, return_dict=True) == {
        "loss": expected["val_loss"][-1],
        metric: expected["val_accuracy"][-1],
    }
    both = compiled(small_layers(), "numba", metrics=["accuracy", "acc", "accuracy"])  # repeats count once
    both.build()
    assert len(both.evaluate(x, y, verbose=0)) == 3


def test_the_accuracy_names_are_keras_own():
    keras = pytest.importorskip("keras", reason="needs Keras to name its own logs")
    from fastbp._sequential import ACCURACY_NAMES

    x, y = small_data(n=8)
    for metric in ACCURACY_NAMES:
        model = keras.Sequential([keras.Input((6, 5, 2)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=[metric])
        logs = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y)).history
        assert sorted(logs) == sorted(["loss", metric, "val_loss", f"val_{metric}"]), metric


def test_sample_and_class_weights_scale_each_rows_gradient(layered_backend):
    """Under plain SGD a weight of 2 on every row is a doubled learning rate (both exact in floating point), and
    class weights are the sample weights of each row's class."""
    x, y = small_data(n=40)

    def fitted(rate, **weights):
        model = compiled(small_layers(), layered_backend, seed=2, optimizer=SGD(learning_rate=rate))
        return model, model.fit(x, y, batch_size=8, epochs=2, verbose=0, **weights).history

    doubled, history = fitted(0.2)
    for weights in ({"sample_weight": np.full(40, 2.0)}, {"class_weight": {0: 2.0, 1: 2, 2: 2.0}}):
        weighted, weighted_history = fitted(0.1, **weights)
        assert all(np.array_equal(a, b) for a, b in zip(weighted.get_weights(), doubled.get_weights(), strict=True))
        assert weighted_history["accuracy"] == history["accuracy"]
    by_class, _ = fitted(0.1, class_weight={1: 3.0})  # the classes left out weigh 1
    by_row, _ = fitted(0.1, sample_weight=np.where(y == 1, 3.0, 1.0))
    assert all(np.array_equal(a, b) for a, b in zip(by_class.get_weights(), by_row.get_weights(), strict=True))
    unweighted, _ = fitted(0.1)
    assert not np.array_equal(by_class.get_weights()[0], unweighted.get_weights()[0])


def test_weights_given_as_a_column_and_numbers_for_shuffle_are_taken_as_keras_takes_them(layered_backend):
    """Keras takes rows' weights of shape ``(n, 1)`` as ``(n,)`` and shuffles for any true ``shuffle``."""
    x, y = small_data(n=40)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, len(x))

    def fitted(**settings):
        model = compiled(small_layers(), layered_backend, seed=3)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, **settings).history
        return model.get_weights(), history

    column, as_column = fitted(sample_weight=weights[:, None], validation_data=(x, y, weights[:, None]))
    row, as_row = fitted(sample_weight=weights, validation_data=(x, y, weights))
    assert all(np.array_equal(a, b) for a, b in zip(column, row, strict=True)) and as_column == as_row
    for number, flag in ((1, True), (0, False), (np.int64(2), True)):
        by_number, _ = fitted(shuffle=number)
        by_flag, _ = fitted(shuffle=flag)
        assert all(np.array_equal(a, b) for a, b in zip(by_number, by_flag, strict=True))
    model = compiled(small_layers(), layered_backend, seed=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.evaluate(x, y, verbose=0, sample_weight=weights[:, None]) == model.evaluate(
        x, y, verbose=0, sample_weight=weights
    )
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(40,\), got \(40, 2\)"):
        model.fit(x, y, epochs=1, verbose=0, sample_weight=np.ones((40, 2)))


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        ({"sample_weight": np.ones(30), "class_weight": {0: 1.0}}, ValueError, "sample_weight or class_weight, not"),
        ({"class_weight": [1.0, 2.0, 3.0]}, TypeError, "class_weight must be a dict of labels to weights, got list"),
        ({"class_weight": {3: 1.0}}, ValueError, r"class_weight's classes must be labels in \[0, 3\), got 3"),
        ({"class_weight": {0: float("nan")}}, ValueError, r"class_weight\[0\] must be a finite number"),
        ({"class_weight": {0: -1.0}}, ValueError, r"class_weight\[0\] must be non-negative, got -1.0"),
        ({"class_weight": {0: 0, 1: 0, 2: 0.0}}, ValueError, "class_weight gives every row of y a weight of 0"),
        ({"sample_weight": np.ones(29)}, ValueError, r"sample_weight must have shape \(30,\), got \(29,\)"),
    ],
)
def test_bad_sample_or_class_weights_are_refused_before_training(weights, error, message):
    x, y = small_data()
    model = compiled(small_layers(), "numba")
    with pytest.raises(error, match=message):
        model.fit(x, y, epochs=1, verbose=0, **weights)
    assert model._trainer is None


def test_initial_epoch_numbers_the_epochs_of_a_resumed_training(layered_backend, capsys):
    x, y = small_data(n=40)
    resumed, fresh = (compiled(small_layers(), layered_backend, seed=4) for _ in range(2))
    history = resumed.fit(x, y, batch_size=8, epochs=3, initial_epoch=1, verbose=2)
    assert history.epoch == [1, 2] and len(history.history["loss"]) == 2 and resumed.history is history
    out = capsys.readouterr().out
    assert "Epoch 2/3" in out and "Epoch 3/3" in out and "Epoch 1/3" not in out
    assert history.history == fresh.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert resumed.fit(x, y, epochs=1, initial_epoch=1, verbose=0).epoch == []
    with pytest.raises(ValueError, match="initial_epoch must be a non-negative integer, got -1"):
        resumed.fit(x, y, epochs=2, initial_epoch=-1, verbose=0)


def test_evaluate_returns_its_scores_by_name_on_request(layered_backend):
    x, y = small_data()
    model = compiled(small_layers(), layered_backend)
    model.fit(x, y, epochs=1, verbose=0)
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert model.evaluate(x, y, verbose=0, return_dict=True) == {"loss": loss, "accuracy": accuracy}
    with pytest.raises(TypeError, match="return_dict must be True or False"):
        model.evaluate(x, y, verbose=0, return_dict="yes")


def test_history_loss_is_the_loss_before_the_update(layered_backend):
    # One batch, no dropout, plain SGD: the epoch's loss is the loss at the starting weights, evaluate's.
    x, y = small_data()
    layers = [layer for layer in small_layers() if not isinstance(layer, Dropout)]
    model = compiled(layers, layered_backend, optimizer=SGD(learning_rate=0.1))
    model.build()
    before, _ = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(before, rel=1e-12)
    assert model.evaluate(x, y, verbose=0)[0] < before


@pytest.mark.parametrize("classes", [3, 1])
def test_history_accuracy_is_over_the_training_passes_before_each_update(layered_backend, classes):
    # Keras's training accuracy: each row's outputs as its batch trained on them.  No dropout, from the same
    # weights and a fresh optimizer: one batch counts predict's rows right at the starting weights; two batches
    # count the first's at the starting weights and the second's at those after one update.
    x, y = small_data()
    labels = (y > 0).astype(int) if classes == 1 else y
    loss = "binary_crossentropy" if classes == 1 else "categorical_crossentropy"

    def fresh():
        last = Dense(classes, activation="sigmoid" if classes == 1 else "softmax")
        layers = [layer for layer in small_layers()[:-1] if not isinstance(layer, Dropout)] + [last]
        model = compiled(layers, layered_backend, loss=loss)
        model.build()
        return model

    def right(model, rows):
        outputs = model.predict(x[rows])
        guesses = (outputs[:, 0] > 0.5).astype(int) if classes == 1 else outputs.argmax(axis=1)
        return int(np.sum(guesses == labels[rows]))

    model = fresh()
    before = right(model, slice(None))
    history = model.fit(x, labels, batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert history.history["accuracy"] == [before / 30]
    stepped = fresh()
    first = right(stepped, slice(0, 16))
    stepped.fit(x[:16], labels[:16], batch_size=16, epochs=1, verbose=0, shuffle=False)
    second = right(stepped, slice(16, None))
    history = fresh().fit(x, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert history.history["accuracy"] == [(first + second) / 30]


def test_mean_squared_error_of_a_linear_output(layered_backend):
    rng = np.random.default_rng(3)
    x, targets = rng.random((20, 6, 5, 2)), rng.normal(size=(20, 2))
    layers = [Conv2D(2, 2, activation="tanh", input_shape=(6, 5, 2)), Flatten(), Dense(2)]
    model = compiled(layers, layered_backend, loss="mse", metrics=None, optimizer=SGD(learning_rate=0.05))
    history = model.fit(x, targets, batch_size=5, epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    outputs = model.predict(x)
    assert model.evaluate(x, targets, verbose=0) == pytest.approx(np.mean((targets - outputs) ** 2))  # Keras's
    flat = compiled([*layers[:-1], Dense(1)], layered_backend, loss="mean_squared_error", metrics=None)
    assert len(flat.fit(x, targets[:, 0], epochs=1, verbose=0).history["loss"]) == 1


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_integer_and_one_hot_labels_train_identically(layered_backend, loss):
    x, y = small_data()
    x_val, y_val = small_data(n=9, seed=2)
    results = []
    for labels, val_labels, name in [
        (y, y_val, loss),
        (np.eye(3)[y], np.eye(3, dtype=int)[y_val], loss),
        (y.astype(float), y_val.reshape(-1, 1), "sparse_categorical_crossentropy"),
        (np.eye(3, dtype=bool)[y], y_val, "categorical_crossentropy"),
    ]:
        model = compiled(small_layers(), layered_backend, seed=4, loss=name)
        history = model.fit(x, labels, batch_size=7, epochs=2, verbose=0, validation_data=(x_val, val_labels))
        results.append((model.get_weights(), history.history))
    weights, history = results[0]
    for other_weights, other_history in results[1:]:
        for got, want in zip(other_weights, weights, strict=True):
            np.testing.assert_array_equal(got, want)
        assert other_history == history


def test_the_same_seed_fits_the_same_weights_and_other_seeds_do_not(layered_backend):
    x, y = small_data()

    def fitted(seed):
        model = compiled(small_layers(), layered_backend, seed=seed, dtype="float32")
        model.fit(x, y, epochs=2, verbose=0)
        return model.get_weights()

    first, again, other = fitted(1), fitted(1), fitted(2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


# --------------------------------------------------------------------------------------------------------------
# get_weights and set_weights


def test_weights_have_keras_shapes_and_round_trip(layered_backend):
    model = compiled(notebook_layers(), layered_backend)
    model.build()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [
        (3, 3, 1, 32), (32,), (3, 3, 32, 32), (32,), (800, 128), (128,), (128, 10), (10,),
    ]  # fmt: skip
    assert all(not bias.any() for bias in weights[1::2])  # Keras's zero biases
    limit = np.sqrt(6 / (800 + 128))  # glorot_uniform
    assert np.abs(weights[4]).max() <= limit and np.abs(weights[4]).max() > 0.9 * limit
    rng = np.random.default_rng(5)
    new = [rng.normal(size=w.shape) for w in weights]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new, strict=True):
        np.testing.assert_array_equal(got, want)
    model.get_weights()[0][:] = 0.0  # copies
    np.testing.assert_array_equal(model.get_weights()[0], new[0])


def test_set_weights_refuses_weights_beyond_the_models_precision(layered_backend):
    model = compiled(small_layers(), layered_backend, dtype="float32")
    weights = model.get_weights()
    with pytest.raises(ValueError, match="the weights must be finite numbers within the float32 range"):
        model.set_weights([np.full(weights[0].shape, 1e300), *weights[1:]])  # infinity in float32
    model.set_weights([np.full(weights[0].shape, 3e38), *weights[1:]])
    assert model.get_weights()[0].max() == np.float32(3e38)


def test_set_weights_refuses_what_does_not_fit_and_changes_nothing(layered_backend):
    undeclared = compiled(small_layers(input_shape=None), layered_backend)
    with pytest.raises(ValueError, match="not built and does not know its input shape"):
        undeclared.set_weights([])
    model = compiled(small_layers(), layered_backend)
    weights = model.get_weights()
    fresh = [w + 1.0 for w in weights]  # arrays that fit: none may be written when another is refused
    kernel = fresh[0]
    bad_inputs = {
        "too few": (fresh[:-1], r"5 arrays given, the model has 6"),
        "too many": ([*fresh, fresh[-1]], r"7 arrays given, the model has 6"),
        "transposed kernel": ([kernel.transpose(3, 2, 0, 1), *fresh[1:]], r"shape \(3, 2, 3, 2\).*\(3, 2, 2, 3\)"),
        "flat bias": ([kernel, fresh[1].reshape(1, -1), *fresh[2:]], r"shape \(1, 3\) given where \(3,\)"),
        "nan": ([*fresh[:-1], np.full(3, np.nan)], "finite"),
        "infinity": ([np.where(kernel > 1, np.inf, kernel), *fresh[1:]], "finite"),
        "complex": ([kernel + 1j, *fresh[1:]], "Complex data not supported: the weights must be real"),
    }
    for name, (given, message) in bad_inputs.items():
        with pytest.raises(ValueError, match=message):
            model.set_weights(given)
        for got, want in zip(model.get_weights(), weights, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_weights_move_between_models_and_dtypes(layered_backend):
    x, _ = small_data()
    source = compiled(small_layers(), layered_backend, seed=1)
    source.build()
    target = compiled(small_layers(), layered_backend, seed=2, dtype="float32")
    target.build()
    target.set_weights(source.get_weights())
    np.testing.assert_allclose(target.predict(x), source.predict(x), rtol=1e-5, atol=1e-6)
    assert target.get_weights()[0].dtype == np.float32


# --------------------------------------------------------------------------------------------------------------
# Model files


def trained_small(backend, **options):
    x, y = small_data()
    model = compiled(small_layers(), backend, seed=3, **options)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return model, x, y


class DivergingAtTheThirdEpoch:
    """A Keras callback that keeps the weights each epoch begins with, and sets a rate that makes the third
    epoch's weights overflow."""

    def __init__(self):
        self.weights = []

    def set_model(self, model):
        self.model = model

    def on_epoch_begin(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        if epoch == 2:
            self.model.optimizer.learning_rate = 1e30


def test_a_fit_that_diverges_keeps_the_weights_its_last_epoch_began_with(layered_backend, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1))
    model = fastbp.Sequential([Conv2D(4, 3, activation="relu", input_shape=(12, 12, 1)), Flatten(), Dense(1)], seed=0)
    model.compile(optimizer=SGD(1e-3), loss="mse", dtype="float32", backend=layered_backend)
    callback = DivergingAtTheThirdEpoch()
    with pytest.raises(fastbp.NonFiniteError, match="training diverged at epoch 3: .*; the model keeps its weights "
                       "from before that epoch"):  # fmt: skip
        model.fit(x, x.mean(axis=(1, 2, 3)) * 1e3, epochs=5, verbose=0, callbacks=[callback])
    assert len(callback.weights) == 3
    for kept, want in zip(model.get_weights(), callback.weights[-1], strict=True):
        np.testing.assert_array_equal(kept, want)
    model.save(tmp_path / "model.npz")
    assert np.isfinite(fastbp.load(tmp_path / "model.npz").predict(x)).all()
    with pytest.raises(FileExistsError, match="exists, and overwrite=False"):
        model.save(tmp_path / "model.npz", overwrite=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_and_load_give_the_same_sequential(layered_backend, tmp_path, dtype):
    model, x, y = trained_small(layered_backend, dtype=dtype)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastbp.load(path)
    assert isinstance(loaded, fastbp.Sequential)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    for got, want in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)
    assert loaded.get_config() == model.get_config()
    lines, loaded_lines = [], []
    model.summary(print_fn=lines.append)
    loaded.summary(print_fn=loaded_lines.append)
    assert loaded_lines == lines
    with np.load(path, allow_pickle=False) as archive:
        assert int(archive["version"]) == 2
        assert str(archive["format"]) == "fastbp.model"
        assert [layer["kind"] for layer in json.loads(str(archive["layers"]))] == [
            "conv2d", "max_pool2d", "flatten", "dense", "dropout", "dense",
        ]  # fmt: skip
        assert archive["input_shape"].tolist() == [6, 5, 2]
    history = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains on, with a fresh optimizer
    assert np.isfinite(history.history["loss"][0])


def test_from_config_makes_the_model_get_config_describes(layered_backend):
    model, x, y = trained_small(layered_backend)
    again = fastbp.Sequential.from_config(json.loads(json.dumps(model.get_config())))  # as JSON keeps it
    assert again.get_config() == model.get_config() and not again.built
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert again.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)  # compiled as the config says
    with pytest.raises(TypeError, match="config must be a Sequential's get_config"):
        fastbp.Sequential.from_config(small_layers())


def test_layers_take_keras_initializers_by_name_and_keep_them_in_the_model_file(tmp_path):
    """Keras's defaults are the initializers a layer without any gets (the same draws, the same bits), another
    one changes only its own layer's kernel or bias, and the settings go through the model file."""
    x, y = small_data(n=12)
    default = compiled(small_layers(), "numba")
    default.build()
    explicit = [
        Conv2D(3, (3, 2), padding="same", activation="relu", input_shape=(6, 5, 2), kernel_initializer="glorot_uniform",
               bias_initializer="zeros"),
        *small_layers()[1:],
    ]  # fmt: skip
    same = compiled(explicit, "numba")
    same.build()
    assert all(np.array_equal(a, b) for a, b in zip(default.get_weights(), same.get_weights(), strict=True))
    assert "kernel_initializer" not in json.dumps(default.get_config())  # files of such networks stay as they were
    layers = [Conv2D(3, (3, 2), activation="relu", input_shape=(6, 5, 2), kernel_initializer="he_uniform",
                      bias_initializer="ones"), MaxPooling2D(2), Flatten(), Dense(3, activation="softmax")]  # fmt: skip
    model = compiled(layers, "numba")
    model.build()
    kernel, bias, dense_kernel, dense_bias = model.get_weights()
    assert 0.9 * np.sqrt(6 / 12) < np.abs(kernel).max() <= np.sqrt(6 / 12)  # He's limit for a 3x2 window of 2 channels
    assert np.all(bias == 1.0) and np.all(dense_bias == 0.0)
    assert np.abs(dense_kernel).max() <= np.sqrt(6 / (dense_kernel.shape[0] + 3))  # Glorot's, the default
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "model.npz")
    loaded = fastbp.load(tmp_path / "model.npz")
    assert loaded.get_config() == model.get_config()
    assert loaded.get_config()["layers"][0]["kernel_initializer"] == "he_uniform"


def test_train_takes_the_layers_initializers_over_its_init():
    rng = np.random.default_rng(2)
    x, y = rng.random((16, 4)), rng.integers(0, 2, 16)
    layers = [Dense(5, activation="relu", kernel_initializer="zeros", bias_initializer="ones")]
    model = fastbp.train(x, y, layers=layers, optimizer="sgd", lr=1e-12, epochs=1, seed=0, backend="numba")
    first = model.weights[: 5 * 5].reshape(5, 5)
    np.testing.assert_allclose(first[:, :4], 0.0, atol=1e-9)
    np.testing.assert_allclose(first[:, 4], 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="init='tutorial'"):
        fastbp.train(x, y, layers=layers, init="tutorial", epochs=1, seed=0)


@pytest.mark.parametrize("name", ["model.keras", "weights.h5", "MODEL.HDF5"])
def test_a_keras_file_name_is_refused_by_save(tmp_path, name):
    model = compiled(small_layers(), "numba")
    model.build()
    with pytest.raises(ValueError, match="names a Keras file, but fastbp writes its own model file"):
        model.save(tmp_path / name)
    assert not (tmp_path / name).exists()


def keras_shaped_layers(filters: int = 3) -> list:
    """A network with two layers of each weighted class, one named, and every other kind of layer between."""
    return [
        Input((8, 8, 1)), Conv2D(filters, 3, activation="relu", name="first"), Conv2D(2, 3, activation="relu"),
        MaxPooling2D(2), Flatten(), Dropout(0.5), Dense(5, activation="relu"), Activation("linear"),
        Dense(3, activation="softmax"),
    ]  # fmt: skip


def test_weights_files_hold_each_layers_arrays_where_keras_keeps_them(layered_backend, tmp_path):
    """save_weights writes Keras 3's weights file: every layer's group under its class's name numbered among its
    class (not its own name), its arrays those of get_weights; load_weights reads them into another model of the
    same layers, whatever its dtype, and it then predicts the same."""
    h5py = pytest.importorskip("h5py", reason="Keras's weights files are HDF5")
    x = np.random.default_rng(0).random((6, 8, 8, 1))
    saved = compiled(keras_shaped_layers(), layered_backend, seed=1)
    saved.fit(x, [0, 1, 2, 0, 1, 2], epochs=1, verbose=0)
    saved.save_weights(tmp_path / "model.weights.h5")
    places = ["conv2d", "conv2d_1", "max_pooling2d", "flatten", "dropout", "dense", "activation", "dense_1"]
    arrays = iter(saved.get_weights())
    with h5py.File(tmp_path / "model.weights.h5", "r") as file:
        assert sorted(file["layers"]) == sorted(places) and file["vars"].attrs["name"] == saved.name
        for place, layer in zip(places, saved.layers, strict=True):
            stored = file[f"layers/{place}/vars"]
            assert stored.attrs["name"] == layer.name and len(stored) == (
                2 if place.startswith(("conv", "dense")) else 0
            )
            for number in range(len(stored)):
                np.testing.assert_array_equal(stored[str(number)][()], next(arrays))
    for dtype in ("float64", "float32"):
        loaded = compiled(keras_shaped_layers(), layered_backend, seed=2, dtype=dtype)
        loaded.load_weights(tmp_path / "model.weights.h5")
        for got, want in zip(loaded.get_weights(), saved.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want.astype(dtype))
        if dtype == "float64":
            np.testing.assert_array_equal(loaded.predict(x), saved.predict(x))


def test_weights_files_refuse_what_does_not_fit(tmp_path):
    """A name Keras would not take, a missing or damaged file, and a file of other shapes are refused before any
    weight is set (with skip_mismatch, the other layers are set and those kept, with a warning); overwrite=False
    keeps an existing file."""
    pytest.importorskip("h5py", reason="Keras's weights files are HDF5")
    model = compiled(keras_shaped_layers(), "numba", seed=1)
    path = tmp_path / "model.weights.h5"
    for name in ("model.h5", "model.keras", "weights"):
        with pytest.raises(ValueError, match=r"must end in \.weights\.h5"):
            model.save_weights(tmp_path / name)
        assert not (tmp_path / name).exists()
    with pytest.raises(FileNotFoundError):
        model.load_weights(path)
    path.write_bytes(b"not HDF5")
    with pytest.raises(ValueError, match="is damaged"):
        model.load_weights(path)
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save_weights(path, overwrite=False)
    assert path.read_bytes() == b"not HDF5"
    model.save_weights(path)
    other = compiled(keras_shaped_layers(filters=4), "numba", seed=2)
    before = other.get_weights()
    message = r"layer 0 \(Conv2D 'first'\): the file's arrays at layers/conv2d/vars have shapes \(3, 3, 1, 3\), \(3,\)"
    with pytest.raises(ValueError, match=message + r", where it has \(3, 3, 1, 4\), \(4,\); layer 1 "):
        other.load_weights(path)
    for got, want in zip(other.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.warns(UserWarning, match="kept the weights of layer 0 .*; layer 1 "):
        other.load_weights(path, skip_mismatch=True)
    kept = other.get_weights()
    for got, want, theirs in zip(kept[4:], before[4:], model.get_weights()[4:], strict=True):
        np.testing.assert_array_equal(got, theirs)
        assert not np.array_equal(got, want) or not want.any()  # the biases start at zero in both
    for got, want in zip(kept[:4], before[:4], strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_files_without_h5py_say_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed: importing it raises ImportError
    model = compiled(keras_shaped_layers(), "numba")
    for method in (model.save_weights, model.load_weights):
        with pytest.raises(ImportError, match=r"weights file \(HDF5\) needs h5py: pip install \"fastbp\[keras\]\""):
            method(tmp_path / "model.weights.h5")
    assert not (tmp_path / "model.weights.h5").exists()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's predict, with numpy 2
def test_keras_reads_fastbps_weights_files_and_fastbp_keras(tmp_path):
    """Keras 3's load_weights takes save_weights' file and predicts as fastbp does; fastbp's load_weights takes
    Keras's; Keras's ModelCheckpoint writes fastbp's weights each epoch."""
    keras = pytest.importorskip("keras", reason="needs Keras to read and write its own weights files")
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    ours = compiled(keras_shaped_layers(), "numba", seed=1, dtype="float32")
    theirs = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Conv2D(2, 3, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dropout(0.5), keras.layers.Dense(5, activation="relu"), keras.layers.Activation("linear"),
        keras.layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    ours.save_weights(tmp_path / "ours.weights.h5")
    theirs.load_weights(tmp_path / "ours.weights.h5")
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x), rtol=1e-5, atol=1e-6)
    theirs.set_weights([array * 2 for array in theirs.get_weights()])
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    ours.load_weights(tmp_path / "theirs.weights.h5")
    for got, want in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch{epoch}.weights.h5"), save_weights_only=True)
    ours.fit(x, [0, 1, 2, 0, 1, 2], epochs=2, verbose=0, callbacks=[checkpoint])
    theirs.load_weights(tmp_path / "epoch2.weights.h5")
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x), rtol=1e-5, atol=1e-6)


def test_dense_only_sequential_is_saved_as_version_1(layered_backend, tmp_path):
    rng = np.random.default_rng(6)
    x, y = rng.random((20, 4)), rng.integers(0, 3, 20)
    model = compiled([Dense(5, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")], layered_backend)
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "dense.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        assert int(archive["version"]) == 1
        assert archive["sizes"].tolist() == [4, 5, 3]
    loaded = fastbp.load(path)
    assert isinstance(loaded, fastbp.Sequential)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_reader_of_version_1_only_refuses_layered_files(layered_backend, tmp_path, monkeypatch):
    model, x, _ = trained_small(layered_backend)
    model.save(tmp_path / "layered.npz")
    dense = compiled([Dense(5, input_shape=(4,)), Dense(3, activation="softmax")], layered_backend)
    dense.build()
    dense.save(tmp_path / "dense.npz")
    monkeypatch.setattr(fastbp._model, "VERSIONS", (1,))
    with pytest.raises(ValueError, match="format version 2 is not one of \\(1,\\).*written by a newer fastbp"):
        fastbp.load(tmp_path / "layered.npz")
    assert isinstance(fastbp.load(tmp_path / "dense.npz"), fastbp.Sequential)


def test_a_network_of_one_dense_layer_loads_back(layered_backend, tmp_path):
    rng = np.random.default_rng(7)
    x, y = rng.random((20, 4)), rng.integers(0, 3, 20)
    model = compiled([Dense(3, activation="softmax", input_shape=(4,))], layered_backend)
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "one.npz")
    np.testing.assert_array_equal(fastbp.load(tmp_path / "one.npz").predict(x), model.predict(x))


def tampered(path, tmp_path, change_layers=None, change_sequential=None, **fields):
    """A copy of the model file at ``path`` with its layers JSON, its Sequential configuration or other fields
    changed."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if change_layers is not None:
        layers = json.loads(str(arrays["layers"]))
        change_layers(layers)
        arrays["layers"] = np.array(json.dumps(layers))
    if change_sequential is not None:
        options = json.loads(str(arrays["options"]))
        change_sequential(options["sequential"])
        arrays["options"] = np.array(json.dumps(options))
    arrays.update(fields)
    copy = tmp_path / "tampered.npz"
    np.savez(copy, **arrays)
    return copy


def _set(key, value, position=0):
    def change(layers):
        layers[position][key] = value

    return change


TAMPERED_LAYERS = {
    "negative filters": _set("filters", -3),
    "zero filters": _set("filters", 0),
    "boolean filters": _set("filters", True),
    "fractional filters": _set("filters", 2.5),
    "huge filters": _set("filters", 10**12),
    "huge kernel": _set("kernel", [10**9, 10**9]),
    "a kernel its weights do not fit": _set("kernel", [7, 3]),
    "valid kernel larger than its input": lambda layers: layers[0].update(kernel=[7, 3], padding="valid"),
    "negative strides": _set("strides", [-1, 1]),
    "unknown padding": _set("padding", "full"),
    "unknown kind": _set("kind", "conv3d"),
    "unknown activation": _set("activation", "swish"),
    "softmax on a hidden layer": _set("activation", "softmax"),
    "an activation on pooling": _set("activation", "relu", position=1),
    "pool of zero": _set("pool", [0, 2], position=1),
    "dropout rate of one": _set("rate", 1.0, position=4),
    "dropout rate as text": _set("rate", "0.5", position=4),
    "huge dense layer": _set("units", 10**12, position=3),
    "a missing setting": lambda layers: layers[0].pop("strides"),
    "an extra setting": _set("dilation", [2, 2]),
    "no output layer": lambda layers: layers.pop(),
    "a null layer": lambda layers: layers.__setitem__(0, None),
}


@pytest.mark.parametrize("change", TAMPERED_LAYERS.values(), ids=TAMPERED_LAYERS.keys())
def test_tampered_layers_are_refused(layered_backend, tmp_path, change):
    model, _, _ = trained_small(layered_backend)
    model.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fastbp.load(tampered(tmp_path / "model.npz", tmp_path, change_layers=change))


@pytest.mark.parametrize(
    "fields",
    [
        {"input_shape": np.array([10**6, 10**6, 2])},
        {"input_shape": np.array([6, 5])},
        {"input_shape": np.array([6, -5, 2])},
        {"layers": np.array("[")},
        {"layers": np.array("{}")},
    ],
    ids=["huge input", "input of rank 2", "negative input", "not JSON", "not a list"],
)
def test_tampered_shapes_and_json_are_refused(layered_backend, tmp_path, fields):
    model, _, _ = trained_small(layered_backend)
    model.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fastbp.load(tampered(tmp_path / "model.npz", tmp_path, **fields))


TAMPERED_SETTINGS = {
    "negative filters": lambda config: config["layers"][0].update(filters=-3),
    "unknown class": lambda config: config["layers"][0].update(class_name="Conv3D"),
    "unknown setting": lambda config: config["layers"][0].update(bogus=1),
    "no output layer": lambda config: config["layers"].pop(),
    "unknown dtype": lambda config: config["compile"].update(dtype="float16"),
    "unknown optimizer": lambda config: config["compile"]["optimizer"].update(class_name="RMSprop"),
}


@pytest.mark.parametrize("change", TAMPERED_SETTINGS.values(), ids=TAMPERED_SETTINGS.keys())
def test_tampered_sequential_settings_are_refused(layered_backend, tmp_path, change):
    model, _, _ = trained_small(layered_backend)
    model.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fastbp.load(tampered(tmp_path / "model.npz", tmp_path, change_sequential=change))


def test_layers_that_disagree_with_the_sequential_settings_are_refused(layered_backend, tmp_path):
    model, _, _ = trained_small(layered_backend)
    model.save(tmp_path / "model.npz")
    with pytest.raises(ValueError):
        fastbp.load(tampered(tmp_path / "model.npz", tmp_path, change_layers=_set("activation", "tanh")))


# --------------------------------------------------------------------------------------------------------------
# Errors


def test_fit_and_evaluate_before_compile_are_refused():
    x, y = small_data()
    model = fastbp.Sequential(small_layers())
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        model.evaluate(x, y, verbose=0)
    assert not model.built and model.optimizer is None


@pytest.mark.parametrize("first_use", ["build", "get_weights", "predict", "set_weights", "save"])
def test_a_model_is_built_before_compile_in_float32_where_its_input_shape_is_declared(
    layered_backend, tmp_path, first_use
):
    # Keras builds such a model when it is made: its weights, predictions and file exist before compile.
    x, _ = small_data()
    model = fastbp.Sequential(small_layers(), seed=4)
    uses = {
        "build": model.build,
        "get_weights": model.get_weights,
        "predict": lambda: model.predict(x),
        "set_weights": lambda: model.set_weights([np.ones(w.shape) for w in model.get_weights()]),
        "save": lambda: model.save(tmp_path / "m.npz"),
    }
    uses[first_use]()
    assert model.built and model.optimizer is None
    weights = model.get_weights()
    assert all(w.dtype == np.float32 for w in weights)
    if first_use != "set_weights":  # the draws the first fit would make, in Keras's float32
        for dtype in (np.float32, np.float64):
            same_seed = compiled(small_layers(), layered_backend, seed=4, dtype=dtype)
            same_seed.fit(*small_data(n=4), epochs=0, verbose=0)
            drawn = [w.astype(np.float32) for w in same_seed.get_weights()]
            assert all(np.array_equal(a, b) for a, b in zip(weights, drawn, strict=True))
    outputs = model.predict(x)
    assert outputs.dtype == np.float32 and np.allclose(outputs.sum(axis=1), 1.0)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz", backend=layered_backend)
    assert loaded.optimizer is None and loaded._trainer.backend == layered_backend
    np.testing.assert_array_equal(loaded.predict(x), outputs)
    model.compile(optimizer="adam", dtype="float64", backend=layered_backend)  # the same weights, in float64
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert model.get_weights()[0].dtype == np.float64 and model.optimizer == Adam()
    with pytest.raises(ValueError, match="the model is built: layers cannot be added"):
        model.add(Dense(3))


def test_a_linear_activation_changes_nothing_wherever_it_stands(layered_backend):
    """Keras's ``Activation("linear")`` is the identity: after a layer that has an activation, after dropout, or
    after the output layer's softmax, the network trains the same weights as without it."""
    x, y = small_data()
    plain = small_layers()
    linear = [*plain[:3], Activation("linear"), *plain[3:6], Activation("linear"), plain[6], Activation("linear")]
    results = []
    for layers in (plain, linear):
        model = compiled(layers, layered_backend, seed=3)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        results.append(model.get_weights())
    for got, want in zip(*results, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_model_without_a_declared_input_shape_is_built_by_fit_or_build():
    model = fastbp.Sequential(small_layers(input_shape=None))
    for use in (model.get_weights, lambda: model.predict(small_data()[0])):
        with pytest.raises(ValueError, match="not built and does not know its input shape: give the first layer"):
            use()
    model.build((None, 6, 5, 2))
    assert [w.shape for w in model.get_weights()][:2] == [(3, 2, 2, 3), (3,)]
    for shape in ((6, 5, 2), (32, 6, 5, 2)):  # a row's shape, or Keras's with a batch size first
        same = fastbp.Sequential(small_layers(input_shape=None))
        same.build(shape)
        assert same.input_shape == (None, 6, 5, 2)


@pytest.mark.parametrize(
    "options, error, message",
    [
        (
            {"optimizer": "adagrad"},
            ValueError,
            r"unknown optimizer 'adagrad': fastbp offers \('adam', 'sgd', 'rmsprop'\)",
        ),
        ({"optimizer": object()}, TypeError, "optimizer must be"),
        ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'"),
        ({"metrics": ["auc"]}, ValueError, "unknown metric 'auc'"),
        # fastbp trains a softmax by the cross-entropy only, and says so in Keras's names
        ({"loss": "mse"}, ValueError, "loss 'mse' does not fit a softmax output layer: use 'categorical_crossentropy'"),
        ({"dtype": "float16"}, ValueError, "dtype must be float64 or float32"),
    ],
)
def test_compile_refuses_unknown_settings(options, error, message):
    model = fastbp.Sequential(small_layers())
    with pytest.raises(error, match=message):
        model.compile(**options)


@pytest.mark.parametrize("batch_size, verbose", [(0, 0), (-3, 0), ("x", 0), (2.5, 0), (None, 3), (None, "loud")])
def test_predict_and_evaluate_refuse_the_keras_arguments_keras_refuses(batch_size, verbose):
    x, y = small_data(n=6)
    model = compiled(small_layers(), "auto")
    with pytest.raises(ValueError, match="batch_size must be a positive integer" if verbose == 0 else "verbose"):
        model.predict(x, batch_size=batch_size, verbose=verbose)
    with pytest.raises(ValueError, match="batch_size must be a positive integer" if verbose == 0 else "verbose"):
        model.evaluate(x, y, batch_size=batch_size, verbose=verbose)
    assert model.predict(x, batch_size=2, verbose=0).shape == (6, 3)


def test_optimizer_settings_are_checked_when_made_and_when_set():
    with pytest.raises(ValueError, match="learning_rate must be positive, got -1.0"):
        Adam(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.5"):
        SGD(momentum=1.5)
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        SGD(momentum=0.5, nesterov="yes")
    optimizer = RMSprop()
    with pytest.raises(ValueError, match=r"rho must be in \[0, 1\), got 5.0"):
        optimizer.rho = 5.0  # as a callback might, mid-training: a model file could not be read back
    with pytest.raises(AttributeError, match="RMSprop has no setting 'lr'; its settings are learning_rate, rho"):
        optimizer.lr = 0.5  # Keras's old name: refused, not kept unused
    assert optimizer == RMSprop()


def test_compile_keeps_a_copy_of_the_optimizer_that_a_callback_may_change():
    given = Adam(learning_rate=0.01)
    first, second = fastbp.Sequential(small_layers()), fastbp.Sequential(small_layers())
    first.compile(optimizer=given)
    second.compile(optimizer=given)
    first.optimizer.learning_rate = 0.5
    assert given.learning_rate == 0.01 and second.optimizer.learning_rate == 0.01
    assert second.get_config()["compile"]["optimizer"]["learning_rate"] == 0.01


def test_an_unknown_backend_is_refused_when_compiling():
    model = fastbp.Sequential(small_layers())
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        model.compile(backend="tensorflow")
    with pytest.raises(RuntimeError, match="compile the model"):
        model.fit(*small_data(), verbose=0)
    assert not model.built


@pytest.mark.parametrize(
    "last, message",
    [
        ([Flatten()], "the last layer must be a Dense layer"),
        ([Flatten(), Dense(3, activation="softmax"), Dropout(0.5)], "the last layer must be a Dense layer"),
        ([Flatten(), Dense(3, activation="relu")], "output layer's activation must be softmax, sigmoid or linear"),
        ([Flatten(), Dense(3), Activation("tanh")], "output layer's activation must be softmax, sigmoid or linear"),
        ([Flatten(), Dense(3, activation="sigmoid"), Activation("softmax")], "has activation 'sigmoid' and an"),
        ([Flatten(), Dense(1, activation="softmax")], "a softmax over 1 unit, which always puts out 1: for two"),
    ],
)
def test_compile_refuses_a_network_without_an_output_layer(last, message):
    model = fastbp.Sequential([Conv2D(2, 3, input_shape=(6, 5, 2)), *last])
    with pytest.raises(ValueError, match=message):
        model.compile()


def test_layers_are_fixed_once_built_and_must_be_layers(layered_backend):
    with pytest.raises(TypeError, match="layers must be a list of fastbp.layers layers, got Dense"):
        fastbp.Sequential(Dense(3))
    model = compiled(small_layers(), layered_backend)
    with pytest.raises(TypeError, match="not a fastbp.layers layer"):
        model.add("Dense(3)")
    with pytest.raises(TypeError, match="not a fastbp.layers layer: use fastbp.layers.MaxPooling2D"):
        model.add(type("MaxPool2D", (), {})())  # as Keras's layer of that name
    with pytest.raises(ValueError, match="trainable=False \\(freezing\\) is not supported"):
        model.trainable = False
    assert model.trainable
    model.build()
    with pytest.raises(ValueError, match="built"):
        model.add(Dense(3))


@pytest.mark.parametrize(
    "output, y, error, message",
    [
        (Dense(3, activation="softmax"), None, TypeError, "y must be an array of one target per row of x, got None"),
        (Dense(3, activation="softmax"), np.full(30, 0.5), ValueError, "integer class labels, from 0 to 2, got 0.5"),
        (Dense(3, activation="softmax"), np.full(30, np.nan), ValueError, "integer class labels, from 0 to 2, got nan"),
        (Dense(3, activation="softmax"), np.array(["cat"] * 30), ValueError, "got 'cat', not a number"),
        (Dense(3, activation="softmax"), np.array([0, 1, "cat"] * 10, dtype=object), ValueError, "'cat', not a num"),
        (Dense(1, activation="sigmoid"), np.array([0, 1, None] * 10, dtype=object), ValueError, "got None, not a n"),
        (Dense(1, activation="sigmoid"), np.arange(30) % 3, ValueError, "0 or 1 for one sigmoid output unit, got 2"),
        (Dense(1), np.r_[np.nan, np.ones(29)], ValueError, "y must be finite numbers, got nan"),
        (Dense(1), np.ones((30, 2)), ValueError, "y must be 1 number\\(s\\) per row, got shape \\(30, 2\\)"),
    ],
)
def test_fit_says_what_is_wrong_with_the_targets(output, y, error, message):
    x, _ = small_data()
    loss = {"softmax": "sparse_categorical_crossentropy", "sigmoid": "binary_crossentropy", None: "mse"}
    model = compiled([*small_layers()[:-1], output], "numba", loss=loss[output.activation], metrics=[])
    with pytest.raises(error, match=message):
        model.fit(x, y, verbose=0)
    assert not model.built


def test_generators_and_datasets_are_refused_with_what_to_do_instead():
    """Keras's fit takes a generator of batches (or a dataset); fastbp's takes arrays and says so."""
    x, y = small_data()
    model = compiled(small_layers(), "numba")

    def batches():
        yield x[:8], y[:8]

    message = r"x must be an array of rows, got generator: fastbp takes arrays, not generators or datasets"
    for call in (lambda: model.fit(batches()), lambda: model.evaluate(batches()), lambda: model.predict(batches())):
        with pytest.raises(TypeError, match=message):
            call()
    with pytest.raises(TypeError, match="x must be an array of rows, got dict"):
        model.fit({"pixels": x}, y)
    assert not model.built


def test_fit_refuses_bad_arguments(layered_backend):
    x, y = small_data()
    model = compiled(small_layers(), layered_backend)
    for kwargs, message in [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"verbose": 3}, "verbose"),
        ({"validation_data": (x,)}, "validation_data"),
        ({"n_threads": 0}, "n_threads"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.fit(x, y, **kwargs)


def test_a_network_that_starts_with_flatten_takes_images(layered_backend):
    x, y = small_data(shape=(6, 5))
    model = compiled([Flatten(), Dense(8, activation="relu"), Dense(3, activation="softmax")], layered_backend)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x).shape == (30, 3)


# --------------------------------------------------------------------------------------------------------------
# The notebook's cell on Fashion-MNIST


@pytest.mark.slow
def test_notebooks_cell_learns_fashion_mnist(shared_data):
    (x_train, y_train), (x_test, y_test) = fastbp.datasets.load_fashion_mnist(
        path=shared_data / "fashion-mnist", download=False
    )
    x_train = x_train.reshape(-1, 28, 28, 1).astype("float32")[:6000] / 255
    x_test = x_test.reshape(-1, 28, 28, 1).astype("float32")[:1000] / 255
    y_train, y_test = y_train[:6000], y_test[:1000]
    model = fastbp.Sequential(notebook_layers(), seed=1)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    # Batches of 32: at 128 (47 updates an epoch) two epochs of 6,000 images end near 75% in fastbp and in
    # PyTorch alike, too close to the threshold.
    history = model.fit(x_train, y_train, batch_size=32, epochs=2, verbose=0, validation_data=(x_test, y_test))
    assert history.history["loss"][1] < history.history["loss"][0]
    predicted = np.argmax(model.predict(x_test), axis=1)
    accuracy = np.mean(predicted == y_test)
    assert accuracy > 0.75
    assert history.history["val_accuracy"][-1] == accuracy


# What a review of the first version found, each checked here.


@pytest.mark.parametrize(
    "validation_data, message",
    [
        (lambda x, y: (x[:5], y[:3]), "validation_data: y has 3 rows, x has 5"),
        (lambda x, y: (x[:5, :4], y[:5]), r"validation_data: X has shape \(5, 4, 5, 2\)"),
        (lambda x, y: (x[:5], y[:5] + 5), r"validation_data: y's labels must be in \[0, 3\)"),
        (lambda x, y: (x[:5], y[:5] + 0.5), "validation_data: y must be integer class labels, from 0 to 2, got 2.5"),
        (
            lambda x, y: (x[:5], y[:5], np.ones(4)),
            r"validation_data's sample_weight must have shape \(5,\), got \(4,\)",
        ),
        (lambda x, y: (x[:5], y[:5], -np.ones(5)), "validation_data's sample_weight must be finite and non-negative"),
        (lambda x, y: (x[:5], y[:5], None, None), "validation_data must be a pair .* or a triple"),
    ],
)
def test_bad_validation_data_is_refused_before_anything_trains(validation_data, message):
    x, y = small_data()
    model = fastbp.Sequential(small_layers(), seed=1)
    model.compile(metrics=["accuracy"])
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, validation_data=validation_data(x, y), verbose=0)
    assert not model.built


def test_evaluate_and_validation_weigh_rows_as_keras_does(layered_backend):
    """The loss is the rows' weighted sum over their count (Keras's sum-over-batch-size loss), the accuracy the
    share classed right, unweighted (Keras weighs only its weighted_metrics); fit's validation weighs rows alike."""
    model, x, y = trained_small(layered_backend)
    weights = np.random.default_rng(4).uniform(0.0, 3.0, len(x))
    outputs = model.predict(x)
    losses = -np.log(outputs[np.arange(len(x)), y])
    right = outputs.argmax(axis=1) == y
    loss, accuracy = model.evaluate(x, y, verbose=0, sample_weight=weights)
    assert loss == pytest.approx((weights * losses).sum() / len(x), rel=1e-12)
    assert accuracy == np.mean(right) != pytest.approx((weights * right).sum() / weights.sum())
    assert model.evaluate(x, y, verbose=0, sample_weight=np.ones(len(x))) == model.evaluate(x, y, verbose=0)
    assert model.evaluate(x, y, verbose=0, sample_weight=np.zeros(len(x))) == [0.0, accuracy]  # Keras's, no error
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y, weights))
    assert [history.history["val_loss"][0], history.history["val_accuracy"][0]] == model.evaluate(
        x, y, verbose=0, sample_weight=weights
    )


@pytest.mark.parametrize(
    ("frequency", "validated"),
    [(1, [0, 1, 2, 3]), (2, [1, 3]), ([1, 4], [0, 3]), ((3,), [2]), (np.array(2), [1, 3]), ({2, 3}, [1, 2])],
)
def test_validation_freq_validates_after_the_epochs_keras_would(layered_backend, frequency, validated):
    x, y = small_data(n=24)
    every = compiled(small_layers(), layered_backend).fit(x, y, batch_size=8, epochs=4, verbose=0,
                                                         validation_data=(x[:6], y[:6]))  # fmt: skip
    some = compiled(small_layers(), layered_backend).fit(x, y, batch_size=8, epochs=4, verbose=0,
                                                        validation_data=(x[:6], y[:6]), validation_freq=frequency,
                                                        validation_batch_size=2)  # fmt: skip
    assert some.history["loss"] == every.history["loss"]  # validating trains nothing
    assert some.history["val_loss"] == [every.history["val_loss"][epoch] for epoch in validated]


@pytest.mark.parametrize("frequency", [0, -1, 1.5, "2", [], [0, 2], True])
def test_a_validation_freq_keras_would_refuse_is_refused(frequency):
    x, y = small_data()
    model = compiled(small_layers(), "numba")
    with pytest.raises(ValueError, match="validation_freq must be a positive integer or epochs counted from 1"):
        model.fit(x, y, verbose=0, validation_data=(x, y), validation_freq=frequency)
    assert not model.built


def test_a_validation_split_validates_on_the_split_rows_sample_weights_but_not_class_weights(layered_backend):
    x, y = small_data(n=40)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, len(x))
    split = compiled(small_layers(), layered_backend)
    history = split.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_split=0.25, sample_weight=weights)
    given = compiled(small_layers(), layered_backend)
    given.fit(x[:30], y[:30], batch_size=8, epochs=1, verbose=0, sample_weight=weights[:30])
    assert history.history["val_loss"] == [given.evaluate(x[30:], y[30:], verbose=0, sample_weight=weights[30:])[0]]
    by_class = compiled(small_layers(), layered_backend)
    history = by_class.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_split=0.25, class_weight={0: 3.0})
    assert history.history["val_loss"] == [by_class.evaluate(x[30:], y[30:], verbose=0)[0]]


def test_compiling_a_built_model_again_keeps_its_weights_and_starts_a_fresh_optimizer():
    x, y = small_data()
    model = fastbp.Sequential(small_layers(), seed=1)
    model.compile()
    model.fit(x, y, verbose=0)
    weights = model.get_weights()
    model.compile(optimizer="sgd", dtype=np.float32)  # a numpy dtype, as numpy users write it
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    model.fit(x, y, verbose=0)
    weights = model.get_weights()
    model.compile(dtype="float64")  # converted, as they are
    assert all(a.astype(np.float64).tobytes() == b.tobytes() for a, b in zip(weights, model.get_weights()))
    model.fit(x, y, verbose=0)
    assert model.get_weights()[0].dtype == np.float64


@pytest.mark.parametrize("optimizer", [Adam(learning_rate=np.float32(0.01)), RMSprop(rho=np.float64(0.8))])
def test_numpy_settings_go_into_the_model_file(tmp_path, optimizer):
    x, y = small_data()
    model = fastbp.Sequential(small_layers(), seed=1)
    model.compile(optimizer=optimizer, dtype=np.float32, metrics="accuracy")
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert loaded._compiled["optimizer"] == optimizer


def test_compile_defaults_to_keras_rmsprop():
    x, y = small_data()
    default, explicit = fastbp.Sequential(small_layers(), seed=1), fastbp.Sequential(small_layers(), seed=1)
    default.compile()
    explicit.compile(optimizer=RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-7))
    default.fit(x, y, verbose=0)
    explicit.fit(x, y, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(default.get_weights(), explicit.get_weights(), strict=True))
    with pytest.raises(TypeError, match="a fastbp RMSprop, Adam or SGD"):
        default.compile(optimizer=object())


def test_one_sigmoid_unit_is_a_binary_classifier_and_a_linear_output_has_no_accuracy(tmp_path):
    x, y = small_data()
    binary = fastbp.Sequential([*small_layers()[:-1], Dense(1, activation="sigmoid")], seed=1)
    binary.compile(loss="mse", metrics=["accuracy"])
    history = binary.fit(x, (y > 0).astype(int), epochs=2, verbose=0)
    assert 0 <= history.history["accuracy"][-1] <= 1
    with pytest.raises(ValueError, match="0 or 1"):
        binary.fit(x, y + 2, verbose=0)
    # Keras's binary cross-entropy: each sigmoid unit's, its mean over the rows the loss evaluate reports.
    labels = (y > 0).astype(int)
    logistic = fastbp.Sequential([*small_layers()[:-1], Dense(1, activation="sigmoid")], seed=1)
    logistic.compile(loss="binary_crossentropy", metrics=["accuracy"])
    logistic.fit(x, labels, epochs=2, verbose=0)
    p = logistic.predict(x)[:, 0].astype(np.float64)
    loss, _ = logistic.evaluate(x, labels, verbose=0)
    assert loss == pytest.approx(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)), rel=1e-5)
    with pytest.raises(ValueError, match="does not fit a sigmoid output layer: use 'binary_crossentropy' or"):
        logistic.compile(loss="categorical_crossentropy")
    logistic.save(tmp_path / "binary.npz")  # a model file of one unit for the classes 0 and 1
    loaded = fastbp.load(tmp_path / "binary.npz", as_model=True)
    np.testing.assert_array_equal(loaded.predict(x), (p > 0.5).astype(int))
    np.testing.assert_allclose(loaded.predict_proba(x)[:, 1], p, rtol=1e-6)
    linear = fastbp.Sequential([*small_layers()[:-1], Dense(2)])
    with pytest.raises(ValueError, match="accuracy needs a softmax or sigmoid output"):
        linear.compile(loss="mse", metrics=["accuracy"])


def test_a_sequential_file_loads_as_a_model_too_and_the_command_line_predicts_from_it(tmp_path, capsys):
    x, y = small_data()
    model = fastbp.Sequential(small_layers(), seed=1)
    model.compile()
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.npz")
    plain = fastbp.load(tmp_path / "m.npz", as_model=True, backend="numba")
    assert isinstance(plain, fastbp.Model) and plain.backend == "numba"
    assert (plain.predict(x) == model.predict(x).argmax(axis=1)).all()
    assert fastbp.load(tmp_path / "m.npz", backend="numba")._trainer.backend == "numba"
    np.savetxt(tmp_path / "rows.csv", x.reshape(len(x), -1), delimiter=",")
    assert cli.main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "rows.csv")]) in (0, None)
    printed = capsys.readouterr().out.split()
    assert [int(label) for label in printed] == plain.predict(x).tolist()


def test_a_file_whose_sequential_settings_are_broken_is_refused_as_invalid(tmp_path):
    x, y = small_data()
    model = fastbp.Sequential(small_layers(), seed=1)
    model.compile()
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as archive:
        arrays = dict(archive)
    options = json.loads(str(arrays["options"]))
    options["sequential"]["compile"]["loss"] = "hinge"
    arrays["options"] = np.array(json.dumps(options))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="Sequential settings are not valid"):
        fastbp.load(tmp_path / "bad.npz")


# --------------------------------------------------------------------------------------------------------------
# Keras's rules where a model changes or stops midway


def test_the_history_holds_each_epoch_as_it_ends_when_a_fit_is_interrupted():
    """As Keras's History callback: ``model.history`` is the running fit's from its start, so the epochs before a
    Ctrl-C are kept; ``history.model`` is the model."""
    x, y = small_data()
    model = compiled(small_layers(), "numba")

    class Interrupt:
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[Interrupt()])
    assert model.history.epoch == [0, 1] and len(model.history.history["loss"]) == 2
    assert model.history.model is model


def test_the_output_layers_declared_input_shape_is_checked_as_the_others():
    for last, position, declared, given in [
        ([Dense(3, activation="softmax", input_shape=(9,))], 2, r"\(9,\)", r"\(4,\)"),
        ([Dense(3), Activation("softmax", input_shape=(4,))], 3, r"\(4,\)", r"\(3,\)"),
    ]:
        model = fastbp.Sequential([Flatten(input_shape=(2, 2, 1)), Dense(4), *last])
        with pytest.raises(ValueError, match=rf"layer {position} \(\w+ '\w+'\): it declares input_shape {declared}, "
                           rf"but its input has shape {given}"):  # fmt: skip
            model.build()
    fastbp.Sequential([Flatten(input_shape=(2, 2, 1)), Dense(3, input_shape=(4,)), Activation("softmax")]).build()


def test_labels_held_as_objects_train_as_the_numbers_they_are():
    x, y = small_data()
    as_numbers, as_objects = (compiled(small_layers(), "numba") for _ in range(2))
    as_numbers.fit(x, y, epochs=1, verbose=0)
    as_objects.fit(x, y.astype(object), epochs=1, verbose=0)
    assert as_objects.history.history == as_numbers.history.history
    with pytest.raises(ValueError, match="y must be integer class labels, from 0 to 2, got 'a', not a number"):
        as_objects.fit(x, np.array(["a"] * len(y), dtype=object), epochs=1, verbose=0)


def test_layers_added_after_compile_are_checked_against_its_loss_and_metrics():
    x, y = small_data()
    model = compiled(small_layers(), "numba", loss="sparse_categorical_crossentropy")
    model.add(Dense(1))  # the softmax layer is a hidden one now, and the output linear
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y, verbose=0)):
        with pytest.raises(ValueError, match="accuracy needs a softmax or sigmoid output layer"):
            call()
    with pytest.raises(ValueError, match=r"layer 6 \(Dense 'dense_1'\): softmax is the output layer's activation"):
        model.predict(x)


def test_a_built_model_is_not_built_again_for_other_inputs_and_takes_one_input_layer():
    model = fastbp.Sequential([Conv2D(2, 3), Flatten(), Dense(3, activation="softmax")])
    model.build((None, 8, 8))
    model.build((None, 8, 8, 1))  # the same shape, its channel given
    with pytest.raises(ValueError, match=r"built for inputs of shape \(None, 8, 8, 1\): it cannot be built for "
                       r"\(None, 9, 8, 1\)"):  # fmt: skip
        model.build((None, 9, 8, 1))
    with pytest.raises(ValueError, match="only the first layer may be an Input, and this model has 2 already"):
        fastbp.Sequential([Input((8, 8, 1)), Flatten(), Input((64,)), Dense(3, activation="softmax")])
