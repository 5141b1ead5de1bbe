"""Model files: exact round trips for every backend, activation and dtype; bad files refused clearly."""

import json
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp import data

NETWORKS = {
    "tutorial": {"hidden": 2, "init": "tutorial", "lr": 0.5},
    "tanh-softmax": {"hidden": (4, 3), "activation": "tanh", "output": "softmax"},
    "relu-leaky": {"hidden": (5, 4), "activation": ("relu", "leaky_relu")},
    "identity-float32": {"hidden": 3, "activation": "identity", "dtype": np.float32},
    "regression": {"hidden": 4, "output": "identity", "lr": 0.05},
    "regression-2d-float32": {"hidden": 4, "output": "identity", "lr": 0.05, "dtype": np.float32},
}


def trained(network, backend="auto", labels=None):
    X, y = data.tutorial_toy()
    options = NETWORKS[network]
    if options.get("output") == "identity":
        y = X[:, 0] * 0.1 if network == "regression" else X * 0.1
    elif labels is not None:
        y = np.array(labels)[y]
    return X, fastbp.train(X, y, epochs=5, seed=1, backend=backend, **options)


def backends_for(network):
    """The reference backend trains only the tutorial's network; the compiled ones train all."""
    return [name for name in fastbp.available_backends() if name != "reference" or network == "tutorial"]


@pytest.mark.parametrize(
    "network, backend", [(network, backend) for network in NETWORKS for backend in backends_for(network)]
)
def test_save_and_load_round_trip_exactly(backend, network, tmp_path):
    X, model = trained(network, backend)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastbp.load(path)
    assert loaded.sizes == model.sizes and loaded.activations == model.activations
    assert loaded.dtype == model.dtype and loaded.backend == model.backend
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.history, model.history)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    assert loaded.options == model.options and loaded.options["hidden"] == list(model.sizes[1:-1])
    if model.classes is not None:
        np.testing.assert_array_equal(loaded.classes, model.classes)
        assert loaded.classes.dtype == model.classes.dtype


@pytest.mark.parametrize("labels", [["no", "yes"], [2.0, -1.0], [True, False], [10, 20]])
def test_labels_of_every_plain_type_survive(labels, tmp_path):
    X, model = trained("tutorial", labels=labels)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.classes.tolist() == model.classes.tolist()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_a_model_saved_by_one_backend_predicts_identically_with_another(compiled_backend, tmp_path):
    X, model = trained("tanh-softmax", "numba")
    model.save(tmp_path / "m.npz")
    other = fastbp.load(tmp_path / "m.npz", backend=compiled_backend)
    assert other.backend == compiled_backend
    np.testing.assert_array_equal(other.forward(X), model.forward(X))


def test_saving_replaces_a_file_whole_and_leaves_no_temporary(tmp_path):
    X, first = trained("tutorial")
    _, second = trained("tanh-softmax")
    path = tmp_path / "m.npz"
    first.save(path)
    second.save(path)
    assert fastbp.load(path).activations == second.activations
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    X, model = trained("tutorial")
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def rewrite(path, **changes):
    """Rewrite a saved model with some arrays replaced (None: removed)."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": np.array("something.else")}, "format is not 'fastbp.model'"),
        ({"version": np.array(3)}, "written by a newer fastbp"),
        ({"version": np.array(2)}, "has no .input_shape. field"),
        ({"weights": None}, "weights"),
        ({"weights": np.zeros(3)}, "12 values"),
        ({"weights": np.full(12, np.nan)}, "not finite"),
        ({"weights": np.zeros(12, dtype=np.int64)}, "not finite float64 or float32"),
        ({"sizes": np.array([2, 0, 2])}, "layer sizes"),
        ({"activations": np.array(["sigmoid", "no_such_activation"])}, "no_such_activation"),
        ({"classes": np.array([0, 1, 2])}, "3 labels for 2 outputs"),
        ({"options": np.array("[1, 2]")}, "options"),
        ({"options": np.array("{not json")}, "Expecting property name"),
        ({"options": np.array("[" * 100_000 + "]" * 100_000)}, "recursion"),
        ({"version": None}, "has no 'version' field"),
        ({"activations": np.array(["softmax", "sigmoid"])}, "are not a network's"),
        ({"classes": np.array([1j, 2j])}, "classes are not"),
        ({"flat_targets": np.array("yes")}, "flat_targets is not a boolean"),
        ({"feature_names": np.array([1, 2])}, "feature_names are not a list of strings"),
        ({"feature_names": np.array(["a", "b", "c"])}, "3 feature names given for 2 inputs"),
        # Offsets that wrap around in 64 bits would let the kernels write outside their buffers.
        (
            {
                "sizes": np.array(
                    [1, 2**62 + 2**32, 2**62 + 2**32, 2**64 + 1 - 2 * (2**62 + 2**32), 1], dtype=np.uint64
                ).astype(np.int64)
            },
            "layer sizes",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_tampered_file_is_refused_naming_the_problem(tmp_path, changes, message):
    _, model = trained("tutorial")
    path = tmp_path / "m.npz"
    model.save(path)
    rewrite(path, **changes)
    with pytest.raises(ValueError, match=message):
        fastbp.load(path)


def test_truncated_foreign_and_pickled_files_are_refused(tmp_path):
    _, model = trained("tutorial")
    path = tmp_path / "m.npz"
    model.save(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="not a"):
        fastbp.load(truncated)
    text = tmp_path / "notes.csv"
    text.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="not a complete .npz archive"):
        fastbp.load(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array("fastbp.model"), version=np.array(1), payload=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable fastbp model file"):
        fastbp.load(pickled)  # object arrays need pickle, which load never allows
    with pytest.raises(FileNotFoundError, match="no such model file"):
        fastbp.load(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="folder .* does not exist"):
        model.save(tmp_path / "nowhere" / "m.npz")


def test_the_file_is_documented_npz_with_json_options(tmp_path):
    _, model = trained("relu-leaky")
    model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        names = sorted(name.removesuffix(".npy") for name in archive.namelist())
    assert names == sorted(["format", "version", "sizes", "activations", "weights", "classes", "flat_targets",
                            "history", "backend", "options"])  # fmt: skip
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        assert json.loads(str(archive["options"]))["activation"] == ["relu", "leaky_relu"]


def test_object_labels_cannot_be_saved(tmp_path):
    X, y = data.tutorial_toy()
    model = fastbp.train(X, y, epochs=1)
    model.classes = np.array([None, 1], dtype=object)
    with pytest.raises(ValueError, match="cannot be saved"):
        model.save(tmp_path / "m.npz")


def test_an_unknown_backend_is_blamed_on_the_caller_not_the_file(tmp_path):
    _, model = trained("tutorial")
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="^backend must be 'auto' or one of"):
        fastbp.load(tmp_path / "m.npz", backend="bogus")


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os

    _, model = trained("tutorial")
    previous = os.umask(0o022)
    try:
        model.save(tmp_path / "m.npz")
    finally:
        os.umask(previous)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o644


def test_a_dataframes_column_names_are_kept_checked_and_saved(backend, tmp_path):
    pandas = pytest.importorskip("pandas")
    X, y = data.tutorial_toy()
    frame = pandas.DataFrame(X, columns=["width", "height"])
    model = fastbp.train(frame, y, epochs=3, seed=1, backend=backend)
    assert model.feature_names == ("width", "height")
    np.testing.assert_array_equal(model.predict(frame), model.predict(X))  # plain arrays are taken as they are
    with pytest.raises(ValueError, match=r"columns \['height', 'width'\] are not the ones .* \['width', 'height'\]"):
        model.predict(frame[["height", "width"]])
    with pytest.raises(ValueError, match="are not the ones"):
        model.predict(frame.rename(columns={"width": "depth"}))
    model.save(tmp_path / "m.npz")
    assert fastbp.load(tmp_path / "m.npz").feature_names == ("width", "height")
    assert fastbp.train(X, y, epochs=1).feature_names is None
    assert fastbp.train(pandas.DataFrame(X), y, epochs=1).feature_names is None  # integer column names
    many = fastbp.train_many(frame, y, seeds=[1, 2], epochs=2, backend=backend)
    assert [network.feature_names for network in many] == [("width", "height")] * 2
