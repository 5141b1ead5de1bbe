"""W5: TF-IDF-like sparse features (scipy.sparse CSR), 20,000 rows x 50,000 columns at 0.2% density.

A network of 100 relu units and a softmax over 5 classes (cross-entropy), 5 million
weights in its first layer.  fastbp on the CSR matrix (its first layer's work
following the nonzeros) against fastbp on the same rows densified and against
scikit-learn's ``MLPClassifier`` on the same CSR matrix:

* ``W5-tfidf-sgd``: online plain SGD (batch size 1, no L2), where a row's update
  moves only the weights of its own nonzero inputs (about 100 of the 50,000);
* ``W5-tfidf-adam``: scikit-learn's defaults (Adam, batches of 200, ``alpha=1e-4``),
  the estimators on both sides, where every update moves every weight.

Densified, the rows would take 8 GB: the dense runs train on the first
:data:`DENSE_ROWS` rows only, and samples per second compare the three.
"""

import warnings

import numpy as np
import pytest
from conftest import COMPILED
from sklearn.exceptions import ConvergenceWarning

import fastbp

#: Columns of the generated data per mode (the smoke run's few, so it costs seconds).
FEATURES = {"full": 50_000, "quick": 50_000, "smoke": 2_000}
DENSITY = 0.002
CLASSES = 5
#: The columns that mark each class.
KEYWORDS = 50
#: The most rows the dense runs take (densified, each row of 50,000 float64 is 400 kB).
DENSE_ROWS = 1_000
NETWORK = {"hidden": 100, "activation": "relu", "output": "softmax", "loss": "cross_entropy", "init": "glorot"}
ESTIMATOR = {"hidden_layer_sizes": (100,), "random_state": 0, "tol": 0.0, "shuffle": False}


@pytest.fixture
def tfidf(mode, size):
    """Rows of about 0.2% nonzeros (at least 20), each scaled to unit length, like TF-IDF: half of a row's
    terms are drawn from its class's :data:`KEYWORDS` columns, the rest from all of them."""
    sparse = pytest.importorskip("scipy.sparse")
    n_rows, n_features = size.rows, FEATURES[mode]
    per_row = max(20, round(DENSITY * n_features))
    rng = np.random.default_rng(5)
    y = rng.integers(0, CLASSES, n_rows)
    topical = rng.random((n_rows, per_row)) < 0.5
    keywords = y[:, None] * KEYWORDS + rng.integers(0, KEYWORDS, (n_rows, per_row))
    columns = np.where(topical, keywords, rng.integers(0, n_features, (n_rows, per_row)))
    values = np.log1p(rng.integers(1, 5, (n_rows, per_row))).astype(np.float64)
    values /= np.sqrt((values**2).sum(axis=1, keepdims=True))
    indptr = np.arange(0, n_rows * per_row + 1, per_row)
    X = sparse.csr_matrix((values.ravel(), columns.ravel(), indptr), shape=(n_rows, n_features))
    X.sum_duplicates()
    return X, y


def dense_part(X, y):
    return X[:DENSE_ROWS].toarray(), y[:DENSE_ROWS]


@pytest.mark.benchmark(group="W5-tfidf-sgd")
@pytest.mark.parametrize("form", ["sparse", "dense"])
@pytest.mark.parametrize("backend", COMPILED)
def bench_tfidf_sgd(timed, size, tfidf, assert_learned, backend, form):
    X, y = tfidf if form == "sparse" else dense_part(*tfidf)
    options = dict(NETWORK, lr=0.1, batch_size=1, epochs=size.epochs, backend=backend, seed=0)
    fastbp.train(X[:64], y[:64], **{**options, "epochs": 1})  # warm up: load or compile the kernels
    model = timed(
        lambda: fastbp.train(X, y, **options),
        samples=X.shape[0] * size.epochs,
        slow=form == "dense",
        library="fastbp",
        implementation=f"fastbp {backend} float64 {form}",
        path="sparse kernel" if form == "sparse" else "online kernel",
        batch_size=1,
    )
    assert_learned(model.predict(X), y)


@pytest.mark.benchmark(group="W5-tfidf-adam")
@pytest.mark.parametrize(
    ("library", "form"),
    [*[(name, form) for name in COMPILED for form in ("sparse", "dense")], ("scikit-learn", "sparse")],
)
def bench_tfidf_adam(timed, size, tfidf, assert_learned, library, form):
    from sklearn import neural_network

    X, y = tfidf if form == "sparse" else dense_part(*tfidf)
    params = dict(ESTIMATOR, max_iter=size.epochs, n_iter_no_change=size.epochs + 1)
    if library == "scikit-learn":
        estimator, info = neural_network.MLPClassifier, {"library": library, "path": "MLPClassifier(solver='adam')"}
    else:
        estimator, params = fastbp.MLPClassifier, {**params, "backend": library}
        info = {"library": "fastbp", "path": "sparse kernel" if form == "sparse" else "mini-batch kernel (BLAS)"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator(**{**params, "max_iter": 1}).fit(X[:64], y[:64])  # warm up: load or compile the kernels

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reaching max_iter is the point
            return estimator(**params).fit(X, y)

    model = timed(
        fit, samples=X.shape[0] * size.epochs, slow=library == "scikit-learn" or form == "dense",
        implementation=f"{'fastbp ' if library != 'scikit-learn' else ''}{library} float64 {form}", batch_size=200,
        **info,
    )  # fmt: skip
    assert_learned(model.predict(X), y)
