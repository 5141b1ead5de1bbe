"""Sparse input (scipy.sparse CSR and CSC): the kernels and every entry point give the network that the same
data gives dense, the first layer's work following the nonzeros."""

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import fastbp
from fastbp import MLPClassifier, MLPRegressor
from fastbp._backends import COMPILED, Data, SparseRows, available_backends, get_backend
from fastbp._layout import initial_weights
from fastbp._sparse import SparseFeatures
from fastbp._training import Options

sp = pytest.importorskip("scipy.sparse")

#: How close the sparse network must come to the dense one, in float64 (a different order of additions only).
SAME_AS_DENSE = 1e-12

COMPILED = [name for name in COMPILED if name in available_backends()]


def sparse_data(n_rows=50, n_features=30, density=0.15, seed=0, n_classes=3):
    """TF-IDF-like rows (non-negative, mostly zeros, a few empty rows), one label per row."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, n_features, density=density, format="csr", random_state=seed)
    X.data *= 3.0
    X = X.tolil()
    X[3] = 0.0  # an empty row
    X = X.tocsr()
    X.eliminate_zeros()
    return X, rng.integers(0, n_classes, n_rows)


def kernel_rows(X, dtype=np.float64):
    return SparseRows(X.indptr.astype(np.intp), X.indices.astype(np.intp), X.data.astype(dtype))


def assert_close(sparse, dense, dtype=np.float64):
    tolerance = SAME_AS_DENSE if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(sparse, dense, rtol=tolerance, atol=tolerance)


# The kernels: each optimizer, batch size and output, against the dense kernels on the same rows.
TRAININGS = {
    "sgd-online": dict(optimizer="sgd", batch_size=1),
    "sgd-batches": dict(optimizer="sgd", batch_size=7),
    "sgd-l2": dict(optimizer="sgd", batch_size=1, l2=0.01),
    "momentum": dict(optimizer="sgd", batch_size=7, momentum=0.9),
    "nesterov": dict(optimizer="sgd", batch_size=1, momentum=0.9, nesterov=True),
    "adam": dict(optimizer="adam", batch_size=7),
    "adam-l2": dict(optimizer="adam", batch_size=1, l2=0.01),
    "rprop": dict(optimizer="rprop"),
}
NETWORKS = {
    "relu-softmax": dict(hidden=(6,), activation="relu", output="softmax", loss="cross_entropy"),
    "sigmoid": dict(hidden=(5, 4), activation="sigmoid", output="sigmoid"),
    "no-hidden-layer": dict(layers=[], output="softmax", loss="cross_entropy"),
    "tanh-logistic": dict(hidden=(4,), activation="tanh", output="sigmoid", loss="cross_entropy"),
}


def kernel_case(training, network, dtype=np.float64, n_outputs=3):
    options = Options.create(**TRAININGS[training], **NETWORKS[network], lr=0.05, dtype=dtype)
    X, labels = sparse_data()
    layout = options.layout((X.shape[1],), n_outputs)
    weights = initial_weights(layout, "glorot", np.random.default_rng(1), dtype)
    Y = np.eye(n_outputs, dtype=dtype)[labels]
    sample_weight = np.random.default_rng(2).uniform(0.5, 1.5, len(labels)).astype(dtype)
    return options, layout, weights, X, Y, sample_weight


def train_kernel(backend, options, layout, weights, X, Y, sample_weight, epochs=3):
    """Train a copy of ``weights`` by the backend's kernels on ``X`` (dense or SparseRows); return the weights,
    the optimizer's state and the history."""
    n_rows = len(Y)
    batch_size = n_rows if options.optimizer == "rprop" else options.batch_size
    orders = np.stack([np.random.default_rng(e).permutation(n_rows) for e in range(epochs)]).astype(np.intp)
    schedule = options.schedule(orders, np.full(epochs, 0.05), batch_size, 0)
    weights, state, history = weights.copy(), np.zeros(2 * len(weights), weights.dtype), np.zeros(epochs)
    if options.optimizer == "rprop":
        state[: len(weights)] = 0.01
    data = Data(X, Y, sample_weight)
    net = layout.network(False, options.loss)
    if batch_size == 1:
        backend.train_online(net, weights, state, data, schedule, history)
    else:
        backend.train_batches(net, weights, state, data, schedule, history, 1)
    return weights, state, history


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("training", TRAININGS)
def test_sparse_training_equals_dense(compiled_backend, training, network):
    if training == "rprop" and "layers" in NETWORKS[network]:
        pytest.skip("rprop refuses networks given by layers")
    backend = get_backend(compiled_backend)
    options, layout, weights, X, Y, sample_weight = kernel_case(training, network)
    dense = train_kernel(backend, options, layout, weights, X.toarray(), Y, sample_weight)
    sparse = train_kernel(backend, options, layout, weights, kernel_rows(X), Y, sample_weight)
    assert not np.array_equal(dense[0], weights)
    for got, expected in zip(sparse, dense, strict=True):
        assert_close(got, expected)


@pytest.mark.parametrize("training", ["sgd-online", "adam"])
def test_sparse_training_equals_dense_in_float32(compiled_backend, training):
    backend = get_backend(compiled_backend)
    options, layout, weights, X, Y, sample_weight = kernel_case(training, "relu-softmax", np.float32)
    dense = train_kernel(backend, options, layout, weights, X.toarray().astype(np.float32), Y, sample_weight)
    sparse = train_kernel(backend, options, layout, weights, kernel_rows(X, np.float32), Y, sample_weight)
    assert sparse[0].dtype == np.float32
    assert_close(sparse[0], dense[0], np.float32)


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("training", TRAININGS)
def test_the_backends_agree_bit_for_bit_on_sparse_rows(training, network, dtype):
    """Numba and Cython run the same operations in the same order."""
    if training == "rprop" and "layers" in NETWORKS[network]:
        pytest.skip("rprop refuses networks given by layers")
    results = []
    for name in ("numba", "cython"):
        backend = get_backend(name)
        options, layout, weights, X, Y, sample_weight = kernel_case(training, network, dtype)
        results.append(train_kernel(backend, options, layout, weights, kernel_rows(X, dtype), Y, sample_weight))
    for numba, cython in zip(*results, strict=True):
        assert numba.tobytes() == cython.tobytes()


@pytest.mark.parametrize("training", ["sgd-online", "sgd-batches"])
def test_plain_sgd_moves_only_the_weights_of_nonzero_inputs(compiled_backend, training):
    """Without L2 or momentum, a first-layer weight whose input is zero in every row never moves, not even by
    rounding; with L2 every weight decays."""
    backend = get_backend(compiled_backend)
    options, layout, weights, X, Y, sample_weight = kernel_case(training, "relu-softmax")
    X = X.tolil()
    X[:, [0, 7]] = 0.0
    X = X.tocsr()
    X.eliminate_zeros()
    trained = train_kernel(backend, options, layout, weights, kernel_rows(X), Y, sample_weight)[0]
    first, trained_first = layout.layer_views(weights)[0], layout.layer_views(trained)[0]
    unused = [0, 7]
    np.testing.assert_array_equal(trained_first[:, unused], first[:, unused])
    assert (trained_first[:, 1] != first[:, 1]).any() and (trained_first[:, -1] != first[:, -1]).all()
    decayed = options.__class__.create(**{**TRAININGS[training], **NETWORKS["relu-softmax"]}, lr=0.05, l2=0.1)
    trained = train_kernel(backend, decayed, layout, weights, kernel_rows(X), Y, sample_weight)[0]
    assert (layout.layer_views(trained)[0][:, unused] != first[:, unused]).all()


def test_sparse_gradient_and_prediction_equal_dense(compiled_backend):
    backend = get_backend(compiled_backend)
    options, layout, weights, X, Y, sample_weight = kernel_case("adam", "sigmoid")
    X, _ = sparse_data(n_rows=150)  # more rows than one prediction chunk
    Y = np.eye(3)[np.arange(150) % 3]
    sample_weight = np.ones(150)
    net = layout.network(False, options.loss)
    before = weights.copy()
    rows = np.random.default_rng(0).permutation(150)[:90].astype(np.intp)
    grads = []
    for features in (X.toarray(), kernel_rows(X)):
        grad = np.full_like(weights, np.nan)
        loss = backend.batch_gradient(net, weights, Data(features, Y, sample_weight), rows, grad)
        grads.append((loss, grad))
        out = np.empty((150, 3))
        backend.predict_batch(net, weights, features, out)
        grads.append((0.0, out))
    assert_close(grads[2][0], grads[0][0])
    assert_close(grads[2][1], grads[0][1])
    assert_close(grads[3][1], grads[1][1])
    np.testing.assert_array_equal(weights, before)  # read through a transposed copy


def test_the_kernels_refuse_sparse_rows_that_do_not_fit(compiled_backend):
    backend = get_backend(compiled_backend)
    options, layout, weights, X, Y, sample_weight = kernel_case("sgd-online", "relu-softmax")
    net = layout.network(False, options.loss)
    rows = kernel_rows(X)
    out = np.empty((len(Y), 3))
    with pytest.raises(ValueError, match="X.indices"):
        backend.predict_batch(net, weights, rows._replace(indices=rows.indices.astype(np.int32)), out)
    with pytest.raises(ValueError, match="X.values"):
        backend.predict_batch(net, weights, rows._replace(values=rows.values.astype(np.float32)), out)
    with pytest.raises(ValueError, match="X.indptr points outside"):
        backend.predict_batch(net, weights, rows._replace(indptr=rows.indptr + 1), out)
    with pytest.raises(ValueError, match="out"):
        backend.predict_batch(net, weights, rows, out[1:])
    with pytest.raises(ValueError, match="lockstep"):
        backend.train_lockstep(net, weights[:, None], Data(rows, Y, sample_weight), None, None, None)
    with pytest.raises(ValueError, match="backend has no kernels for sparse rows"):
        get_backend("reference").predict_batch(net, weights, rows, out)


# SparseFeatures: the Python layer's sparse rows.


def test_sparse_features_pick_rows_as_scipy_does():
    X, _ = sparse_data()
    features = SparseFeatures.of(X.tocsc(), np.dtype(np.float64))
    assert features.shape == X.shape and len(features) == X.shape[0] and features.nnz == X.nnz
    mask = np.arange(X.shape[0]) % 3 == 0
    for index in (slice(5, 17), slice(None, 4), slice(40, 80), np.array([9, 2, 2, 30, 3]), mask, [-1, 0]):
        picked = features[index]
        np.testing.assert_array_equal(picked.toarray(), X[index].toarray())
    view = features[10:20]
    assert view.rows.values is features.rows.values  # a range of rows shares the arrays
    assert features.astype(np.dtype(np.float32)).dtype == np.float32


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (sp.csr_matrix(np.array([[0.0, np.nan], [1.0, 0.0]])), "NaN or infinity"),
        (sp.csr_matrix(np.array([[0.0, np.inf], [1.0, 0.0]])), "NaN or infinity"),
        (sp.csr_matrix((0, 4)), "at least one row"),
        (sp.csr_matrix((3, 0)), "at least one row and one feature"),
        (sp.csr_matrix(np.array([[1j, 0.0]])), "must be numeric"),
    ],
)
def test_bad_sparse_features_are_refused(X, message):
    with pytest.raises(ValueError, match=message):
        fastbp.train(X, np.arange(X.shape[0]) % 2, epochs=1)


def _malformed(indices, indptr, kind=sp.csr_matrix):
    """A compressed matrix of 3 rows by 3 features built from arrays that scipy does not check."""
    return kind((np.ones(len(indices)), np.array(indices), np.array(indptr)), shape=(3, 3))


def _coordinates(row, col):
    """A COO matrix of 3 rows by 3 features whose coordinates are set afterwards, unchecked."""
    X = sp.coo_array(np.eye(3))
    X.row, X.col = np.array(row, dtype=X.row.dtype), np.array(col, dtype=X.col.dtype)
    return X


MALFORMED = [
    (_malformed([0, 1, 10**9], [0, 1, 2, 3]), r"its column indices must lie in \[0, 3\)"),
    (_malformed([0, 1, 3], [0, 1, 2, 3]), r"its column indices must lie in \[0, 3\)"),  # one past the weights
    (_malformed([0, 1, -1], [0, 1, 2, 3]), r"its column indices must lie in \[0, 3\)"),
    (_malformed([0, 1, 2], [0, 10**7, 2, 3]), "its indptr must rise from 0"),
    (_malformed([0, 1, 2], [0, 2, 1, 3]), "its indptr must rise from 0"),
    # Other formats are checked before scipy converts them, which follows their indices unchecked.
    (_malformed([0, 1, 10**9], [0, 1, 2, 3], sp.csc_matrix), r"its row indices must lie in \[0, 3\)"),
    (_malformed([0, 1, 2], [0, 10**7, 2, 3], sp.csc_array), "its indptr must rise from 0"),
    (_coordinates([0, 1, 10**9], [0, 1, 2]), r"its row indices must lie in \[0, 3\)"),
    (_coordinates([0, 1, 2], [0, 1, -5]), r"its column indices must lie in \[0, 3\)"),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # one iteration suffices here
@pytest.mark.parametrize(("X", "message"), MALFORMED)
def test_malformed_sparse_matrices_are_refused_before_any_kernel_reads_them(compiled_backend, X, message):
    """scipy builds a matrix from arrays given without checking them; the kernels index the weights by them."""
    message = "X is a malformed sparse matrix: " + message
    with pytest.raises(ValueError, match=message):
        fastbp.train(X, [0, 1, 0], hidden=2, epochs=1, backend=compiled_backend)
    model = fastbp.train(np.eye(3), [0, 1, 0], hidden=2, epochs=1, backend=compiled_backend)
    with pytest.raises(ValueError, match=message):
        model.predict(X)
    estimator = fastbp.MLPClassifier(hidden_layer_sizes=(2,), max_iter=1, backend=compiled_backend)
    with pytest.raises(ValueError, match=message):  # before scikit-learn's checks convert it
        estimator.fit(X, [0, 1, 0])
    with pytest.raises(ValueError, match=message):
        estimator.fit(np.eye(3), [0, 1, 0]).predict(X)


def test_values_stored_past_the_last_row_are_left_out():
    X = sp.csr_matrix((np.r_[np.ones(3), np.nan], np.array([0, 1, 2, 0]), np.array([0, 1, 2, 3])), shape=(3, 3))
    assert fastbp.train(X, [0, 1, 0], epochs=2, seed=0).weights.tobytes() == (
        fastbp.train(sp.csr_matrix(np.eye(3)), [0, 1, 0], epochs=2, seed=0).weights.tobytes()
    )


def test_integer_duplicate_and_unsorted_entries_train_as_their_dense_matrix():
    """Duplicates add up and unsorted columns read as sorted, as scipy's toarray() says."""
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 30, 300), rng.integers(0, 20, 300)
    X = sp.coo_matrix((rng.integers(1, 4, 300), (rows, cols)), shape=(30, 20)).tocsr(copy=False)
    assert X.dtype.kind == "i"
    y = np.arange(30) % 2
    options = dict(epochs=3, seed=0, hidden=(4,), output="softmax", loss="cross_entropy", backend="numba")
    coo = sp.coo_matrix((rng.integers(1, 4, 300), (rows, cols)), shape=(30, 20))
    unsorted = sp.csr_matrix((coo.data, (coo.row, coo.col)), shape=(30, 20))
    unsorted.has_sorted_indices = False
    for matrix in (X, coo, unsorted):
        assert_close(fastbp.train(matrix, y, **options).weights, fastbp.train(matrix.toarray(), y, **options).weights)


# Every entry point that takes X.

ENTRY_OPTIONS = dict(epochs=4, seed=3, hidden=(5,), activation="relu", output="softmax", loss="cross_entropy")


@pytest.mark.parametrize("sparse_format", ["csr", "csc"])
@pytest.mark.parametrize("training", [dict(), dict(optimizer="adam", batch_size=8), dict(optimizer="lbfgs")])
def test_train_on_sparse_rows_gives_the_dense_network(backend, sparse_format, training):
    X, y = sparse_data()
    X = X.asformat(sparse_format)
    options = {**ENTRY_OPTIONS, **training, "backend": backend}
    if backend == "reference":  # it densifies the rows
        if training:
            pytest.skip("the reference backend trains the tutorial's online SGD only")
        options = dict(epochs=4, seed=3, hidden=(5,), backend=backend)
    dense, sparse = fastbp.train(X.toarray(), y, **options), fastbp.train(X, y, **options)
    assert_close(sparse.weights, dense.weights)
    assert_close(sparse.history, dense.history)
    assert_close(dense.predict_proba(X), dense.predict_proba(X.toarray()))
    np.testing.assert_array_equal(dense.predict(X), dense.predict(X.toarray()))


def test_many_trainings_on_sparse_rows(compiled_backend):
    """train_many (whose lockstep kernels take dense rows: the networks train one by one), evaluate and search."""
    X, y = sparse_data()
    options = {**ENTRY_OPTIONS, "backend": compiled_backend}
    del options["seed"]
    dense = fastbp.train_many(X.toarray(), y, seeds=range(8), **options)
    sparse = fastbp.train_many(X, y, seeds=range(8), **options)
    for got, expected in zip(sparse, dense, strict=True):
        assert_close(got.weights, expected.weights)
    folds = dict(folds=3, seed=0, **options)
    assert fastbp.evaluate(X, y, **folds) == fastbp.evaluate(X.toarray(), y, **folds)
    grid = dict(lr=[0.1, 0.3])
    sparse_search = fastbp.search(X, y, grid, folds=2, seed=0, **options)
    dense_search = fastbp.search(X.toarray(), y, grid, folds=2, seed=0, **options)
    assert sparse_search.evaluations == dense_search.evaluations


def test_a_network_with_dropout_takes_sparse_rows_densified():
    X, y = sparse_data()
    layers = [fastbp.layers.Dense(6, activation="relu"), fastbp.layers.Dropout(0.2)]
    options = dict(epochs=2, seed=0, layers=layers, output="softmax", loss="cross_entropy", backend="numba")
    densified = fastbp.train(X.toarray(), y, **options)
    np.testing.assert_array_equal(fastbp.train(X, y, **options).weights, densified.weights)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_sparse_rows_outputs_depend_neither_on_the_rows_beside_it_nor_on_the_thread_count(compiled_backend, dtype):
    """Predicted in whole chunks above the first layer (BLAS rounds a row alike only within products of one
    shape): alone, in a batch, or in any thread's part of it, a row gets the same bits; and both backends agree."""
    X, y = sparse_data(n_rows=300, n_features=100, density=0.3, n_classes=5)
    options = dict(hidden=90, output="softmax", batch_size=32, epochs=1, seed=0, dtype=dtype)
    model = fastbp.train(X, y, backend=compiled_backend, **options)
    rows = sp.random(1000, 100, density=0.3, format="csr", random_state=1)
    batch = model.forward(rows, n_threads=1)
    for n_threads in (2, 3):
        assert model.forward(rows, n_threads=n_threads).tobytes() == batch.tobytes()
    for row in (0, 63, 64, 500, 999):
        assert model.forward(rows[row], n_threads=1).tobytes() == batch[row].tobytes()
    others = [fastbp.train(X, y, backend=name, **options) for name in COMPILED if name != compiled_backend]
    assert all(other.forward(rows, n_threads=1).tobytes() == batch.tobytes() for other in others)


def test_a_model_trained_on_sparse_rows_saves_and_predicts(tmp_path):
    X, y = sparse_data()
    model = fastbp.train(X, y, **ENTRY_OPTIONS, backend="numba")
    model.save(tmp_path / "model.npz")
    loaded = fastbp.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    with pytest.raises(ValueError, match="X has 29 features, the model expects 30"):
        model.predict(X[:, :29])


@pytest.mark.parametrize("sparse_format", ["csr", "csc"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_estimators_fit_sparse_rows_as_dense(compiled_backend, sparse_format, solver):
    X, y = sparse_data(n_rows=60)
    X = X.asformat(sparse_format)
    settings = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=5, random_state=0, backend=compiled_backend)
    targets = y.astype(float) * X.sum(axis=1).A1
    for estimator, labels in ((MLPClassifier(**settings), y), (MLPRegressor(**settings), targets)):
        with pytest.warns(Warning):  # too few iterations to converge
            sparse = estimator.fit(X, labels)
            sparse_coefs = [coef.copy() for coef in sparse.coefs_]
            sparse_out = sparse.predict(X)
            dense = estimator.fit(X.toarray(), labels)
        for got, expected in zip(sparse_coefs, dense.coefs_, strict=True):
            assert_close(got, expected)
        assert_close(sparse_out, dense.predict(X.toarray()))
        assert_close(dense.predict(X), dense.predict(X.toarray()))


def test_estimators_early_stopping_and_partial_fit_take_sparse_rows():
    X, y = sparse_data(n_rows=80)
    settings = dict(hidden_layer_sizes=(5,), max_iter=4, random_state=0, backend="numba")
    with pytest.warns(Warning):
        sparse = MLPClassifier(early_stopping=True, **settings).fit(X, y)
        dense = MLPClassifier(early_stopping=True, **settings).fit(X.toarray(), y)
    assert_close(np.array(sparse.validation_scores_), np.array(dense.validation_scores_))
    online = MLPClassifier(**settings).partial_fit(X, y, classes=[0, 1, 2]).partial_fit(X[:30], y[:30])
    dense = X.toarray()
    offline = MLPClassifier(**settings).partial_fit(dense, y, classes=[0, 1, 2]).partial_fit(dense[:30], y[:30])
    assert_close(online.coefs_[0], offline.coefs_[0])
    assert MLPClassifier().__sklearn_tags__().input_tags.sparse


@pytest.mark.filterwarnings("ignore:A column-vector y was passed")  # one column, as scikit-learn warns of it
@pytest.mark.parametrize("n_targets", [1, 2])
def test_a_regressors_sparse_targets_train_as_their_dense_matrix(n_targets):
    X, y = sparse_data(n_rows=40)
    targets = np.column_stack([y, X.sum(axis=1).A1])[:, :n_targets]
    settings = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, backend="numba")
    with pytest.warns(ConvergenceWarning):  # too few iterations
        sparse = MLPRegressor(**settings).fit(X, sp.csr_matrix(targets))
        dense = MLPRegressor(**settings).fit(X, targets)
    np.testing.assert_array_equal(sparse.predict(X), dense.predict(X))
