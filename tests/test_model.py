"""Model files: exact round trips for every backend, activation and dtype; bad files refused clearly."""

import io
import json
import os
import random
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import fastbp
from fastbp import cli, data
from fastbp._backends import get_backend

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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_large_network_in_the_fast_mode_predicts_numpys_outputs_the_same_in_every_backend(dtype):
    """From PRODUCTS_MIN_WEIGHTS weights, a network of dense layers in the fast mode predicts by BLAS's
    products: the outputs of a plain NumPy forward pass within rounding, the same bits in each backend."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(203, 100)), rng.integers(0, 5, 203)
    options = dict(hidden=90, activation="tanh", output="softmax", batch_size=32, epochs=2, seed=0, dtype=dtype)
    backends = [name for name in fastbp.available_backends() if name != "reference"]
    outputs = []
    for backend in backends:
        model = fastbp.train(X, y, backend=backend, **options)
        assert get_backend(backend).predicts_by_products(model._layout.network(model.options["exact"]))
        outputs.append(model.forward(X))
    assert all(other.tobytes() == outputs[0].tobytes() for other in outputs[1:])
    hidden, output = (layer.astype(np.float64) for layer in model.layers)
    sums = np.tanh(X @ hidden[:, :-1].T + hidden[:, -1]) @ output[:, :-1].T + output[:, -1]
    expected = np.exp(sums - sums.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(outputs[0], expected, rtol=tolerance, atol=tolerance)


def test_saving_replaces_a_file_whole_and_leaves_no_temporary(tmp_path):
    X, first = trained("tutorial")
    _, second = trained("tanh-softmax")
    path = tmp_path / "m.npz"
    first.save(path)
    second.save(path)
    assert fastbp.load(path).activations == second.activations
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt("Ctrl-C")])
def test_a_failed_or_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch, failure):
    X, model = trained("tutorial")
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def broken(file, **arrays):
        file.write(b"half a model")
        raise failure

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(type(failure), match=str(failure)):
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
        ({"classes": np.array([1, 1])}, "classes are not distinct labels"),
        ({"classes": np.array([np.nan, 1.0])}, r"classes must be labels, not NaN or infinity: \[nan, 1.0\]"),
        ({"activations": np.array(["sigmoid", "identity"])}, "classes given for a network whose 'identity' output"),
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


def test_a_history_longer_than_files_hold_is_refused_before_writing(tmp_path, monkeypatch):
    """load caps each field a file may declare; save refuses what load would, rather than write it."""
    monkeypatch.setattr(fastbp._model, "HISTORY_BYTES", 8 * 10)
    X, y = data.tutorial_toy()
    model = fastbp.train(X, y, hidden=2, epochs=12, seed=1)
    path = tmp_path / "model.npz"
    message = r"history of 12 epochs is longer than model files hold \(10\): .* model.history\[-10:\]"
    with pytest.raises(ValueError, match=message):
        model.save(path)
    assert list(tmp_path.iterdir()) == []
    model.history = model.history[-10:]
    model.save(path)
    np.testing.assert_array_equal(fastbp.load(path).history, model.history)


def test_object_labels_cannot_be_saved(tmp_path):
    X, y = data.tutorial_toy()
    model = fastbp.train(X, y, epochs=1)
    model.classes = np.array([None, 1], dtype=object)
    with pytest.raises(ValueError, match="cannot be saved"):
        model.save(tmp_path / "m.npz")
    for mixed in ([1, "1"], [True, 2], [1, 2.5]):  # as one type they would be one label, or other labels
        model.classes = np.array(mixed, dtype=object)
        with pytest.raises(ValueError, match=r"cannot be saved: a model file keeps numbers or strings, all of one"):
            model.save(tmp_path / "m.npz")


@pytest.mark.parametrize("dtype", [object, "category", "string"])
def test_pandas_string_labels_are_saved_as_strings(dtype, tmp_path):
    pandas = pytest.importorskip("pandas")
    X, y = data.tutorial_toy()
    labels = pandas.Series(np.array(["no", "yes"])[y], dtype=dtype)
    model = fastbp.train(X, labels, hidden=2, epochs=3, seed=0)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.classes.tolist() == ["no", "yes"] and loaded.classes.dtype.kind == "U"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


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


# Hostile files.  Each is written by hand (write_zip), so that its headers can declare what zipfile and numpy
# never write; every one must load, or be refused with a ValueError naming the file, reading little of it.

MiB = 2**20
FIELDS = ["format", "version", "sizes", "activations", "input_shape", "layers", "weights", "classes",
          "flat_targets", "feature_names", "history", "backend", "options"]  # fmt: skip
LZMA, UNKNOWN_METHOD, ENCRYPTED = 14, 99, 0x1


def npy(array):
    """``array`` as the bytes of an ``.npy`` file (an object array pickled, as a hostile file may hold one)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def npy_header(shape):
    """The header of an ``.npy`` file of float64 values of ``shape``, without its data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def member(data, method=zipfile.ZIP_STORED, size=None, crc=None, flags=0):
    """A member as write_zip writes it: ``data`` as it lies in the archive, then what its headers declare (by
    default, the truth for stored data): compression method, uncompressed size, CRC-32 and flag bits."""
    return data, method, len(data) if size is None else size, zlib.crc32(data) if crc is None else crc, flags


def deflated(raw):
    """A member holding ``raw`` deflated, as numpy's savez_compressed writes it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return member(compressor.compress(raw) + compressor.flush(), zipfile.ZIP_DEFLATED, len(raw), zlib.crc32(raw))


def zeros_bomb(header, n_zeros, size=None, crc=0):
    """A deflated member of ``header`` then ``n_zeros`` zero bytes (whole MiBs), built without compressing them:
    after a full flush deflate starts afresh, so each MiB of zeros compresses to the same thousand bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    one_mib = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = start + one_mib * (n_zeros // MiB) + compressor.flush()
    return member(stream, zipfile.ZIP_DEFLATED, len(header) + n_zeros if size is None else size, crc)


def write_zip(path, members):
    """Write ``members``, pairs of a name and a :func:`member`, as a zip archive at ``path``."""
    body, directory = bytearray(), bytearray()
    for name, (stored, method, size, crc, flags) in members:
        encoded = name.encode()
        # What both headers declare: flags, method, time, date (1980-01-01), CRC, sizes, name and extra lengths.
        declared = (flags, method, 0, 33, crc, len(stored), size, len(encoded), 0)
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, *declared, 0, 0, 0, 0, len(body)) + encoded
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, *declared) + encoded + stored
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0)
    path.write_bytes(bytes(body + directory + end))


@pytest.fixture(scope="module")
def valid_members(tmp_path_factory):
    """The members of a saved model that has every optional field, as write_zip takes them."""
    _, model = trained("tutorial")
    model.feature_names = ("width", "height")
    path = tmp_path_factory.mktemp("valid") / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        return {info.filename.removesuffix(".npy"): member(archive.read(info)) for info in archive.infolist()}


def hostile(path, valid_members, extra=(), **changes):
    """Write at ``path`` the valid model with some members replaced (None: removed), then ``extra`` pairs."""
    members = {**valid_members, **changes}
    write_zip(path, [(f"{name}.npy", value) for name, value in members.items() if value is not None] + list(extra))
    return path


BOMB = zeros_bomb(npy_header((512 * MiB // 8,)), 512 * MiB)
SMALL_HEADER = npy_header((16,))
#: name: (the changes that make the file hostile, what the error says, or None where it loads).
HOSTILE = {
    "bomb in history": ({"history": BOMB}, "history member declares 536871040 bytes, more than the 134217728 allowed"),
    "bomb behind a small declared size": (
        {
            "history": zeros_bomb(
                SMALL_HEADER, 512 * MiB, len(SMALL_HEADER) + 128, zlib.crc32(SMALL_HEADER + bytes(128))
            )
        },
        None,  # what the headers declare is read; the rest is never inflated
    ),
    "bomb in an extra member": ({"extra": [("bomb.npy", BOMB)]}, None),  # never read
    "huge declared shape": ({"weights": member(npy_header((2**40,)) + bytes(96))}, r"shape \(1099511627776,\)"),
    "declared size past the cap": ({"history": member(npy(np.zeros(16)), size=2**31)}, "declares 2147483648 bytes"),
    "declared size short of the array": (
        {"history": member(npy(np.zeros(16)), size=len(npy(np.zeros(16))) - 8, crc=zlib.crc32(npy(np.zeros(16))[:-8]))},
        "where its array takes",
    ),
    "stored data short of the declared size": (
        {"history": member(npy(np.zeros(16))[:-8], size=len(npy(np.zeros(16))))},
        "history member ends after 120 of its 128 bytes of data",
    ),
    "corrupted deflate": (
        {"weights": member(b"\xff" * 64, zipfile.ZIP_DEFLATED, size=len(npy(np.zeros(12))))},
        "weights member is damaged: .*invalid block type",
    ),
    "bad CRC": ({"history": member(npy(np.zeros(16)), crc=12345)}, "history member is damaged: Bad CRC-32"),
    "corrupted LZMA": ({"weights": member(b"\x09\x04\x05\x00" + b"\xa5" * 96, LZMA)}, "method 14"),
    "unknown compression method": ({"weights": member(npy(np.zeros(12)), UNKNOWN_METHOD)}, "method 99"),
    "encrypted member": ({"weights": member(npy(np.zeros(12)), flags=ENCRYPTED)}, "weights member is encrypted"),
    "pickled classes": ({"classes": member(npy(np.array([{"x": 1}, None], dtype=object)))}, "Python objects"),
    "two weights members": ({"extra": [("weights.npy", member(npy(np.zeros(12))))]}, "two members named 'weights'"),
    "structured weights": ({"weights": member(npy(np.zeros(12, dtype="f8,f8")))}, "neither numbers nor text"),
}


def hostile_file(tmp_path, valid_members, case):
    changes, _ = HOSTILE[case]
    changes = dict(changes)
    return hostile(tmp_path / f"{case}.npz", valid_members, changes.pop("extra", ()), **changes)


def test_the_hand_written_zip_of_a_valid_model_loads(tmp_path, valid_members):
    model = fastbp.load(hostile(tmp_path / "m.npz", valid_members))
    assert model.feature_names == ("width", "height")


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_file_loads_or_is_refused_naming_the_file_and_the_problem(tmp_path, valid_members, case):
    path = hostile_file(tmp_path, valid_members, case)
    message = HOSTILE[case][1]
    if message is None:
        assert fastbp.load(path).sizes == (2, 2, 2)
        return
    with pytest.raises(ValueError, match=message) as refused:
        fastbp.load(path)
    assert str(refused.value).startswith(str(path))


def test_bombs_are_read_within_their_caps(tmp_path, valid_members):
    paths = [hostile_file(tmp_path, valid_members, case) for case in HOSTILE if "bomb" in case or "huge" in case]
    tracemalloc.start()
    try:
        for path in paths:
            try:
                fastbp.load(path)
            except ValueError:
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB  # each inflates to 512 MiB (or declares 8 TiB), were it read


GARBAGE = {
    "missing": None,
    "an empty member": member(b""),
    "random bytes": member(random.Random(0).randbytes(64)),
    "a header alone": member(npy_header((3,))),
    "an empty array": member(npy(np.array([]))),
    "a matrix": member(npy(np.zeros((2, 2)))),
    "text": member(npy(np.array("garbage"))),
    "empty text": member(npy(np.array([], dtype=str))),
    "big-endian numbers": member(npy(np.arange(2, dtype=">i8"))),
}


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_missing_empty_or_garbage_is_refused_or_harmless(tmp_path, valid_members, field):
    version_2 = {"version": member(npy(np.array(2)))} if field in ("input_shape", "layers") else {}
    for kind, value in GARBAGE.items():
        path = hostile(tmp_path / f"{kind}.npz", valid_members, **version_2, **{field: value})
        try:
            fastbp.load(path)
        except ValueError as error:
            assert str(error).startswith(str(path)), (kind, error)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_random_truncations_and_bit_flips_load_or_are_refused_naming_the_file(tmp_path, valid_members, compressed):
    members = {name: deflated(stored) for name, (stored, *_) in valid_members.items()} if compressed else {}
    original = hostile(tmp_path / "m.npz", valid_members, **members).read_bytes()
    rng = random.Random(1)
    escaped, refused = [], 0
    for attempt in range(150):
        damaged = bytearray(original)
        if attempt % 2:
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        else:
            del damaged[rng.randrange(len(damaged)) :]
        path = tmp_path / f"damaged-{attempt}.npz"
        path.write_bytes(damaged)
        try:
            fastbp.load(path)
        except ValueError as error:
            refused += 1
            assert str(error).startswith(str(path))
        except Exception as error:  # noqa: BLE001 - any other exception is the failure counted here
            escaped.append((attempt, repr(error)))
    assert escaped == []
    assert refused > 100  # every truncation, and most flips (those in padding or in unread fields load)


def test_devices_and_fifos_are_refused_without_reading_them(tmp_path):
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="cannot read /dev/zero: it is a character device"):
            fastbp.load("/dev/zero")
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(ValueError, match="pipe.npz: it is a FIFO, not a regular file"):
        fastbp.load(tmp_path / "pipe.npz")  # without waiting for a writer that never comes


@pytest.mark.parametrize("path", [0, 3, None])
def test_a_path_that_is_not_one_is_refused_not_taken_for_a_file_descriptor(path):
    with pytest.raises(TypeError, match=f"a file's path must be a str or path-like, got {type(path).__name__}"):
        fastbp.load(path)


@pytest.mark.parametrize("kind, error", [("folder", IsADirectoryError), ("FIFO", ValueError)])
def test_save_refuses_a_folder_or_a_fifo_and_leaves_it_as_it_was(tmp_path, kind, error):
    target = tmp_path / "m.npz"
    if kind == "folder":
        target.mkdir()
    elif hasattr(os, "mkfifo"):
        os.mkfifo(target)
    else:
        pytest.skip("no FIFOs here")
    _, model = trained("tutorial")
    with pytest.raises(error, match=f"cannot write {re.escape(str(target))}: it is a {kind}"):
        model.save(target)
    assert [path.name for path in tmp_path.iterdir()] == ["m.npz"]
    assert target.is_dir() or target.is_fifo()


@pytest.mark.parametrize("case", ["bomb in history", "corrupted deflate", "pickled classes", "encrypted member"])
def test_predict_on_a_hostile_file_prints_one_error_line(tmp_path, valid_members, capsys, case):
    path = hostile_file(tmp_path, valid_members, case)
    rows = tmp_path / "rows.csv"
    rows.write_text("0.5,0.5\n")
    assert cli.main(["predict", str(path), str(rows)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"fastbp: error: {path} is not a valid fastbp model file: ")


def test_score_is_a_classifiers_accuracy_and_a_regressions_r2(compiled_backend, wheat):
    X, y = wheat
    classifier = fastbp.train(X, y, hidden=3, epochs=5, seed=2, backend=compiled_backend)
    predicted = classifier.predict(X)
    assert 0.3 < classifier.score(X, y) < 1  # partly trained: a score that counts wrong rows too
    assert classifier.score(X, y) == np.mean(predicted == y)
    weights = np.arange(len(y)) % 3
    assert classifier.score(X, y, sample_weight=weights) == pytest.approx(
        np.sum(weights * (predicted == y)) / np.sum(weights)
    )

    targets = np.column_stack([X[:, 0] - X[:, 1], X[:, 2]])
    regression = fastbp.train(X, targets, hidden=3, output="identity", lr=0.01, epochs=5, seed=2)
    residuals = ((targets - regression.predict(X)) ** 2).sum(axis=0)
    totals = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    assert regression.score(X, targets) == pytest.approx(np.mean(1 - residuals / totals))


def test_score_refuses_targets_and_weights_as_train_refuses_them(wheat, monkeypatch):
    X, y = wheat
    model = fastbp.train(X, y, hidden=3, epochs=1, seed=2)
    with monkeypatch.context() as patch:  # refused before the forward pass
        patch.setattr(model, "forward", lambda *args, **kwargs: pytest.fail("predicted before checking y"))
        with pytest.raises(ValueError, match=f"y has {len(y) - 1} rows, X has {len(y)}"):
            model.score(X, y[:-1])
    with pytest.raises(TypeError, match="y must be an array of one target per row, got NoneType"):
        model.score(X, None)
    for weights in (-np.ones(len(y)), np.zeros(len(y)), np.full(len(y), np.nan)):
        with pytest.raises(ValueError, match="sample_weight must be finite, non-negative and not all zero"):
            model.score(X, y, sample_weight=weights)
    with pytest.raises(ValueError, match=rf"sample_weight must have shape \({len(y)},\)"):
        model.score(X, y, sample_weight=np.ones(3))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_multilabel_classifiers_units_score_every_label_of_a_row(wheat):
    X, y = wheat
    labels = np.column_stack([y == y[0], X[:, 0] > np.median(X[:, 0])]).astype(int)
    estimator = fastbp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0).fit(X, labels)
    units = estimator.model_
    assert units.classes is None
    assert units.score(X, labels) == np.mean(((units.predict(X) > 0.5) == labels).all(axis=1))
    assert units.score(X, labels) == estimator.score(X, labels)
