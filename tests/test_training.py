"""The training loop: options checked once, per-epoch callbacks, progress bars, continuing a trainer."""

import numpy as np
import pytest

import fastbp
from fastbp._training import Options
from fastbp.layers import Conv2D, Dropout, Flatten, MaxPooling2D


def test_callback_sees_every_epoch_and_its_loss(compiled_backend, wheat):
    X, y = wheat
    seen = []
    model = fastbp.train(
        X, y, epochs=6, seed=1, backend=compiled_backend, callback=lambda e, loss: seen.append((e, loss))
    )
    assert [epoch for epoch, _ in seen] == list(range(6))
    assert [loss for _, loss in seen] == model.history.tolist()
    plain = fastbp.train(X, y, epochs=6, seed=1, backend=compiled_backend)
    np.testing.assert_array_equal(plain.weights, model.weights)  # returning to Python changes nothing


def test_a_callback_returning_true_stops_training_at_that_epoch(compiled_backend, wheat):
    X, y = wheat
    options = {"epochs": 50, "seed": 2, "optimizer": "adam", "lr": 0.01, "batch_size": 8, "backend": compiled_backend}
    stopped = fastbp.train(X, y, callback=lambda epoch, loss: epoch == 3, **options)
    assert len(stopped.history) == 4
    four = fastbp.train(X, y, **{**options, "epochs": 4})
    np.testing.assert_array_equal(stopped.weights, four.weights)
    np.testing.assert_array_equal(stopped.history, four.history)


@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_a_callback_returning_what_is_neither_true_nor_false_is_named(wheat, optimizer):
    X, y = wheat
    message = r"callback must return True to stop training, or False or None to go on; it returned array\(\[1., 2.\]\)"
    with pytest.raises(TypeError, match=message):
        fastbp.train(X, y, epochs=3, optimizer=optimizer, callback=lambda epoch, loss: np.array([1.0, 2.0]))


def test_progress_bar_runs_on_stderr_and_changes_nothing(wheat, capsys):
    X, y = wheat
    quiet = fastbp.train(X, y, epochs=30, seed=4)
    shown = fastbp.train(X, y, epochs=30, seed=4, progress=True)
    np.testing.assert_array_equal(quiet.weights, shown.weights)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "30/30" in captured.err
    with pytest.raises(TypeError, match="progress"):
        fastbp.train(X, y, epochs=1, progress="yes")


def test_progress_bar_counts_a_layered_networks_epochs_as_numbers(capsys):
    rng = np.random.default_rng(3)
    x, y = rng.random((40, 6, 5, 1)), np.arange(40) % 2
    options = {"layers": [Conv2D(2, 3), Flatten()], "output": "softmax", "batch_size": 8, "epochs": 3, "seed": 0}
    fastbp.train(x, y, progress=True, **options)  # its epochs advance the bar by each kernel call's share
    shown = capsys.readouterr().err
    assert "3/3" in shown and "3.0/3" not in shown


class _Tally:
    """A caller's progress bar: what training advanced it by."""

    def __init__(self):
        self.steps = []

    def update(self, n):
        self.steps.append(n)


@pytest.mark.parametrize("batch_size", [None, 50])
def test_a_callers_bar_advances_by_chunks_of_epochs(compiled_backend, wheat, batch_size):
    X, y = wheat
    bar = _Tally()
    options = {"epochs": 2000, "seed": 4, "backend": compiled_backend, "batch_size": batch_size}
    shared = fastbp.train(X, y, progress=bar, **options)
    np.testing.assert_array_equal(shared.weights, fastbp.train(X, y, **options).weights)
    assert sum(bar.steps) == 2000
    assert len(bar.steps) < 100  # a tiny network's epochs run in chunks, not one call each


def test_options_are_checked_once_and_kept_as_plain_json(wheat):
    options = Options.create(hidden=(4, 3), activation="tanh", output="softmax", dtype=np.float32)
    assert options.activation == ("tanh", "tanh") and options.loss == "cross_entropy"
    assert options.to_dict()["dtype"] == "float32" and options.to_dict()["hidden"] == [4, 3]
    X, y = wheat
    model = fastbp.train(X, y, hidden=(4, 3), activation="tanh", output="softmax", dtype=np.float32, epochs=1)
    assert model.options == {**options.to_dict(), "epochs": 1, "seed": None}


def test_a_continued_trainer_keeps_its_memory_but_not_a_different_network(wheat):
    from fastbp._api import as_training_data, new_trainer
    from fastbp._validate import RandomSource

    X, y = wheat
    options = Options.create(hidden=3, optimizer="adam", lr=0.01)
    X, Y, _, input_shape = as_training_data(X, y, options)
    weights = np.ones(len(X))
    trainer = new_trainer(options, input_shape, Y.shape[1], RandomSource(5))
    trainer.run(X, Y, weights, 2)
    slower = trainer.continued(Options.create(hidden=3, optimizer="adam", lr=0.001), None)
    assert slower.steps == trainer.steps and slower.state is trainer.state and slower.weights is trainer.weights
    with pytest.raises(ValueError, match="cannot change hidden"):
        trainer.continued(Options.create(hidden=4, optimizer="adam"), None)
    with pytest.raises(ValueError, match="cannot change optimizer"):
        trainer.continued(Options.create(hidden=3), None)


def test_a_layered_network_trains_alike_in_a_kernel_call_per_batch_or_per_epoch(compiled_backend, monkeypatch):
    """An epoch of 300 rows in batches of 128 ends with a batch of 44, which is cut into chunks as the others are
    (``chunk_rows`` of the batch size), whether the epoch runs in one kernel call or in one call per batch."""
    rng = np.random.default_rng(0)
    images, y = rng.random((300, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 300)
    layers = [Conv2D(4, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dropout(0.25)]
    models = []
    for work in (1, 10**12):  # a kernel call per batch, then one per epoch
        monkeypatch.setattr(fastbp._training, "LAYERED_CALL_WORK", work)
        options = {"output": "softmax", "optimizer": "adam", "lr": 0.01, "batch_size": 128, "epochs": 2, "seed": 0}
        models.append(fastbp.train(images, y, layers=layers, dtype=np.float32, backend=compiled_backend, **options))
    np.testing.assert_array_equal(models[0].weights, models[1].weights)
    np.testing.assert_array_equal(models[0].history, models[1].history)
