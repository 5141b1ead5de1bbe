"""The scikit-learn estimators: scikit-learn's own checks, its training loop reproduced, and drop-in use."""

import copy
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from xml.etree import ElementTree

import joblib
import numpy as np
import pytest
import sklearn
from sklearn import neural_network
from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.datasets import load_digits, load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp
from fastbp._training import Trainer
from fastbp.estimators import MLPClassifier, MLPRegressor

COMPILED_BACKENDS = [name for name in fastbp.available_backends() if name != "reference"]

#: Settings scikit-learn's checks run with: its default Adam (one batch on the checks' small data
#: sets), SGD on shuffled mini-batches with the adaptive rate, fastbp's full-batch rprop, and L-BFGS.
CHECKED_SETTINGS = [
    {"learning_rate_init": 0.01},
    {"solver": "sgd", "batch_size": 8, "learning_rate": "adaptive", "activation": "tanh"},
    {"solver": "rprop", "activation": "leaky_relu"},
    {"solver": "lbfgs", "activation": "logistic"},
]
MINI_BATCH_SAMPLE_WEIGHTS = (
    "a row of weight 2 is one row of one mini-batch, while its duplicate may fall into another batch and "
    "another place in the shuffled order, so the two fits take different steps (scikit-learn's own MLPs "
    "pass this check only with lbfgs or a single batch)"
)


def expected_failed_checks(estimator) -> dict[str, str]:
    if estimator.solver in ("rprop", "lbfgs") or estimator.batch_size == "auto":
        return {}
    return {
        "check_sample_weight_equivalence_on_dense_data": MINI_BATCH_SAMPLE_WEIGHTS,
        "check_sample_weight_equivalence_on_sparse_data": MINI_BATCH_SAMPLE_WEIGHTS,
    }


@pytest.mark.slow
# scikit-learn itself skips one check here, with its reason in the report: check_array_api_input needs
# SCIPY_ARRAY_API=1 and an array-API library; fastbp converts every input to numpy arrays anyway.
@parametrize_with_checks(
    [
        estimator(hidden_layer_sizes=(8,), max_iter=30, backend=backend, **settings)
        for estimator in (MLPClassifier, MLPRegressor)
        for settings in CHECKED_SETTINGS
        for backend in COMPILED_BACKENDS
    ],
    expected_failed_checks=expected_failed_checks,
    xfail_strict=True,
)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the checks train only a few epochs
        check(estimator)


#: scikit-learn's own tests of its MLPs (``sklearn/neural_network/tests/test_mlp.py`` of the installed
#: scikit-learn; a test's name, or its name with parameters) that fastbp's estimators do not pass, and why: every
#: other test there must pass.
SCIKIT_LEARN_TESTS_NOT_PASSED = {
    "test_gradient": "it calls scikit-learn's private _loss_grad_lbfgs (test_kernels.py's "
    "test_batch_gradient_equals_central_differences checks fastbp's gradients)",
    "test_learning_rate_warmstart": "it reads scikit-learn's private _optimizer "
    "(test_each_warm_start_fit_starts_the_invscaling_rate_anew_as_scikit_learn checks its rates)",
    "test_adaptive_learning_rate": "it reads scikit-learn's private _optimizer "
    "(test_stops_when_the_loss_stalls_as_scikit_learn_does checks the lowered rate)",
}


def standardized_iris():
    X, y = load_iris(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def smooth_regression(n_rows=600):
    X = np.random.default_rng(0).uniform(-1, 1, (n_rows, 2))
    return X, np.sin(2 * X[:, 0]) * X[:, 1]


def test_scikit_learns_own_mlp_tests_pass(tmp_path):
    """scikit-learn's tests of its MLPs, as its installed wheel ships them, run on fastbp's estimators (their
    import swapped): all pass but SCIKIT_LEARN_TESTS_NOT_PASSED, each of which still fails."""
    source = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
    if not source.is_file():
        pytest.skip(f"scikit-learn {sklearn.__version__} here does not ship its tests")
    theirs = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
    text = source.read_text()
    assert text.count(theirs) == 1, f"{source} no longer imports the estimators as {theirs!r}"
    (tmp_path / "test_mlp.py").write_text(text.replace(theirs, "from fastbp import MLPClassifier, MLPRegressor"))
    command = [sys.executable, "-m", "pytest", "-p", "sklearn.conftest", "-p", "no:cacheprovider", "-q"]
    run = subprocess.run([*command, "--junitxml=report.xml", "test_mlp.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    cases = list(ElementTree.parse(tmp_path / "report.xml").getroot().iter("testcase"))
    assert len(cases) > 50, run.stdout[-5000:]
    failed = {case.get("name") for case in cases if case.find("failure") is not None or case.find("error") is not None}
    known = {name for name in failed if {name, name.split("[")[0]} & set(SCIKIT_LEARN_TESTS_NOT_PASSED)}
    assert failed == known, f"unexpected failures: {sorted(failed - known)}\n{run.stdout[-5000:]}"
    passing_now = set(SCIKIT_LEARN_TESTS_NOT_PASSED) - failed - {name.split("[")[0] for name in failed}
    assert not passing_now, f"these pass now, take them out of SCIKIT_LEARN_TESTS_NOT_PASSED: {sorted(passing_now)}"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("batch_size", [150, 50])
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_sgd_steps_and_loss_curve_are_scikit_learns(estimator, batch_size, compiled_backend):
    """From the same weights, scikit-learn's own MLP takes the same steps, alpha and batches included."""
    X, labels = standardized_iris()
    y = labels if estimator is MLPClassifier else np.c_[X[:, 0] * X[:, 1], np.sin(X[:, 2])]
    params = {
        "hidden_layer_sizes": (7, 5), "activation": "tanh", "solver": "sgd", "momentum": 0.0, "alpha": 0.01,
        "learning_rate_init": 0.05, "batch_size": batch_size, "shuffle": False, "random_state": 0, "max_iter": 1,
    }  # fmt: skip
    ours = estimator(backend=compiled_backend, **params).fit(X, y)
    theirs = getattr(neural_network, estimator.__name__)(**params).fit(X, y)
    theirs.coefs_ = [coefs.copy() for coefs in ours.coefs_]
    theirs.intercepts_ = [intercepts.copy() for intercepts in ours.intercepts_]
    for model in (ours, theirs):
        model.set_params(warm_start=True, max_iter=5).fit(X, y)  # plain SGD keeps no optimizer state
    for mine, sklearns in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert mine.shape == sklearns.shape
        np.testing.assert_allclose(mine, sklearns, rtol=1e-12, atol=1e-14)
    # One batch: the loss is theirs exactly.  Several: the L2 term uses the weights each epoch starts from.
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-12 if batch_size == 150 else 1e-4)
    assert ours.t_ == theirs.t_ == 6 * len(X) and ours.n_iter_ == theirs.n_iter_ == 5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_shuffled_batches_and_held_out_rows_are_scikit_learns(estimator, early_stopping, compiled_backend):
    """The same random_state shuffles the rows into scikit-learn's mini-batches, epoch after epoch, and holds out
    its validation rows: scikit-learn's fit, to rounding, stopping at the same epoch; partial_fit too."""
    X, labels = standardized_iris()
    y = labels if estimator is MLPClassifier else X[:, 0] * X[:, 1]
    params = {
        "hidden_layer_sizes": (8,), "solver": "sgd", "learning_rate_init": 0.1, "batch_size": 16, "random_state": 0,
        "max_iter": 40, "early_stopping": early_stopping, "n_iter_no_change": 5, "alpha": 0.0,
    }  # fmt: skip
    ours = estimator(backend=compiled_backend, **params).fit(X, y)
    theirs = getattr(neural_network, estimator.__name__)(**params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ and (ours.n_iter_ < 40 or not early_stopping)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
    if early_stopping:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-6)
    for mine, sklearns in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(mine, sklearns, rtol=1e-5, atol=1e-7)
    if early_stopping:
        return
    classes = {"classes": np.unique(y)} if estimator is MLPClassifier else {}
    ours, theirs = estimator(backend=compiled_backend, **params), getattr(neural_network, estimator.__name__)(**params)
    for model in (ours, theirs):
        for _ in range(3):
            model.partial_fit(X, y, **classes)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_the_initial_weights_are_scikit_learns_for_the_same_random_state(estimator, compiled_backend):
    """init="sklearn" draws scikit-learn's numbers: one L-BFGS iteration later (a step along the first gradient,
    which needs no history), both estimators hold the same network."""
    X, labels = standardized_iris()
    y = labels if estimator is MLPClassifier else X[:, 0] * X[:, 1]
    params = {"hidden_layer_sizes": (6, 4), "activation": "logistic", "solver": "lbfgs", "max_iter": 1,
              "random_state": 5}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = estimator(backend=compiled_backend, **params).fit(X, y)
        theirs = getattr(neural_network, estimator.__name__)(**params).fit(X, y)
    for mine, sklearns in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(mine, sklearns, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "estimator, params",
    [
        (MLPClassifier, {"activation": "tanh", "alpha": 1e-3}),
        (MLPClassifier, {"activation": "relu", "alpha": 0.1, "sample_weight": True}),
        (MLPRegressor, {"activation": "logistic", "alpha": 1e-4, "sample_weight": True}),
    ],
)
def test_lbfgs_takes_scikit_learns_iterations(estimator, params, compiled_backend):
    """The same objective (log or squared loss, alpha's L2 term, sample weights as scikit-learn weighs them), the
    same gradient and the same SciPy L-BFGS-B: iteration for iteration scikit-learn's network, loss and count."""
    X, labels = standardized_iris()
    y = labels if estimator is MLPClassifier else np.sin(X[:, 0]) * X[:, 1]
    params = {"hidden_layer_sizes": (8,), "solver": "lbfgs", "max_iter": 12, "random_state": 1, **params}
    fit = {"sample_weight": np.linspace(0.5, 3.0, len(X))} if params.pop("sample_weight", False) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = estimator(backend=compiled_backend, **params).fit(X, y, **fit)
        theirs = getattr(neural_network, estimator.__name__)(**params).fit(X, y, **fit)
    for mine, sklearns in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(mine, sklearns, rtol=1e-7, atol=1e-9)
    assert ours.n_iter_ == theirs.n_iter_ == len(ours.loss_curve_) and ours.t_ == theirs.t_ == 0
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9) and ours.loss_curve_[-1] == pytest.approx(ours.loss_)
    assert np.all(np.diff(ours.loss_curve_) < 0)  # each iteration's line search lowers the objective


def test_lbfgs_stops_at_max_fun_or_tol_with_scikit_learns_warning(compiled_backend):
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (10,), "solver": "lbfgs", "random_state": 0, "backend": compiled_backend}
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        limited = MLPClassifier(max_fun=6, **params).fit(X, y)
    assert 1 <= limited.n_iter_ <= 6 and np.isfinite(limited.loss_)
    with pytest.warns(ConvergenceWarning, match=r"Increase the number of iterations.*max_iter=4"):
        MLPClassifier(max_iter=4, **params).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        converged = MLPClassifier(tol=1e-2, **params).fit(X, y)
    assert converged.n_iter_ < 200  # no gradient component above tol: stopped before max_iter, without a warning
    # warm_start goes on from the converged weights with a new L-BFGS memory: it starts where the first fit ended.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = MLPClassifier(tol=1e-2, warm_start=True, **params).fit(X, y)
        first_loss = again.loss_
        again.set_params(max_iter=3).fit(X, y)
    assert again.loss_ <= first_loss and len(again.loss_curve_) == again.n_iter_ + len(converged.loss_curve_)


def test_lbfgs_trains_float32_features_in_float32(compiled_backend):
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (10,), "solver": "lbfgs", "max_iter": 30, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = MLPClassifier(backend=compiled_backend, **params).fit(X.astype(np.float32), y)
        double = MLPClassifier(backend=compiled_backend, **params).fit(X, y)
    assert all(block.dtype == np.float32 for block in single.coefs_ + single.intercepts_)
    assert single.score(X, y) == pytest.approx(double.score(X, y), abs=0.02)


@pytest.mark.parametrize("learning_rate", ["constant", "adaptive"])
def test_stops_when_the_loss_stalls_as_scikit_learn_does(learning_rate, compiled_backend):
    """A tol no epoch can beat: after the first epoch, stop once n_iter_no_change + 1 epochs fail it, or
    divide the rate by 5 each time until it is below 1e-6 (8 times from 0.1) and then stop."""
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (5,), "solver": "sgd", "learning_rate": learning_rate, "learning_rate_init": 0.1,
              "tol": 10.0, "n_iter_no_change": 2, "random_state": 0}  # fmt: skip
    ours = MLPClassifier(backend=compiled_backend, **params).fit(X, y)
    theirs = neural_network.MLPClassifier(**params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == (1 + 3 if learning_rate == "constant" else 1 + 9 * 3)
    assert len(ours.loss_curve_) == ours.n_iter_ and ours.best_loss_ == min(ours.loss_curve_)
    lowered = 0.1 / 5**8 if learning_rate == "adaptive" else 0.1
    assert ours.model_.options["lr"] == pytest.approx(lowered)


def test_warns_when_max_iter_ends_training(capsys):
    X, y = standardized_iris()
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\)"):
        MLPClassifier((5,), max_iter=3, verbose=True, random_state=0).fit(X, y)
    assert capsys.readouterr().out.startswith("Iteration 1, loss = ")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_digits_held_out_accuracy_is_scikit_learns(compiled_backend):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, stratify=y, random_state=0)
    params = {"hidden_layer_sizes": (32,), "max_iter": 40, "learning_rate_init": 0.003, "random_state": 0}
    ours = MLPClassifier(backend=compiled_backend, **params).fit(X_train, y_train)
    theirs = neural_network.MLPClassifier(**params).fit(X_train, y_train)
    assert ours.score(X_test, y_test) > 0.94
    assert abs(ours.score(X_test, y_test) - theirs.score(X_test, y_test)) < 0.03
    assert ours.predict_proba(X_test).shape == (len(X_test), 10) and list(ours.classes_) == list(range(10))
    assert [coefs.shape for coefs in ours.coefs_] == [coefs.shape for coefs in theirs.coefs_]
    assert ours.n_layers_ == theirs.n_layers_ == 3 and ours.out_activation_ == theirs.out_activation_ == "softmax"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_regression_of_a_smooth_function_is_scikit_learns(compiled_backend):
    X, y = smooth_regression()
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    params = {"hidden_layer_sizes": (32, 32), "activation": "tanh", "max_iter": 300, "learning_rate_init": 0.01,
              "batch_size": 32}  # fmt: skip
    seeds = range(3)  # one seed's luck (an early stop on a plateau) can cost either library 0.02
    ours = np.mean([MLPRegressor(backend=compiled_backend, random_state=seed, **params).fit(X_train, y_train)
                    .score(X_test, y_test) for seed in seeds])  # fmt: skip
    theirs = np.mean([neural_network.MLPRegressor(random_state=seed, **params).fit(X_train, y_train)
                      .score(X_test, y_test) for seed in seeds])  # fmt: skip
    assert ours > 0.97
    assert abs(ours - theirs) < 0.02
    one = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X_train, y_train)
    assert one.predict(X_test).shape == (len(X_test),) and one.n_outputs_ == 1
    both = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X_train, np.c_[y_train, -y_train])
    assert both.predict(X_test).shape == (len(X_test), 2) and both.n_outputs_ == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pipeline_grid_search_and_cross_validation():
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(
        StandardScaler(), MLPClassifier((8,), max_iter=50, learning_rate_init=0.01, random_state=0)
    )
    search = GridSearchCV(pipeline, {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__solver": ["adam", "rprop"]})
    search.fit(X, y)
    assert search.best_score_ > 0.9 and search.best_params_["mlpclassifier__solver"] in ("adam", "rprop")
    regressor = MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, random_state=0)
    scores = cross_val_score(regressor, *smooth_regression(300), cv=3)
    assert scores.mean() > 0.5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pandas_feature_names():
    pandas = pytest.importorskip("pandas")
    X, y = standardized_iris()
    frame = pandas.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    model = MLPClassifier((5,), max_iter=20, random_state=0).fit(frame, pandas.Series(y))
    assert list(model.feature_names_in_) == list(frame.columns) and model.n_features_in_ == 4
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(model.predict(frame), model.predict(X))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame[frame.columns[::-1]])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_balanced_class_weight_favours_the_minority_class(compiled_backend):
    X, y = make_classification(n_samples=600, weights=[0.9], flip_y=0.05, class_sep=0.5, random_state=0)
    params = {"hidden_layer_sizes": (8,), "max_iter": 60, "learning_rate_init": 0.01, "random_state": 0}
    plain = MLPClassifier(backend=compiled_backend, **params).fit(X, y)
    balanced = MLPClassifier(backend=compiled_backend, class_weight="balanced", **params).fit(X, y)
    assert (balanced.predict(X) == 1).sum() > 1.5 * (plain.predict(X) == 1).sum()
    minority = y == 1
    assert (balanced.predict(X[minority]) == 1).mean() > (plain.predict(X[minority]) == 1).mean() + 0.1
    with pytest.raises(ValueError, match="balanced"):
        clone(balanced).partial_fit(X, y, classes=[0, 1])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sample_weights_count_relative_to_each_other(compiled_backend):
    """Weights are rescaled to mean 1, so multiplying them all by a constant changes no step (without alpha,
    which scikit-learn weighs against the rows' total weight, as if the weights counted repeated rows)."""
    X, y = standardized_iris()
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    fits = [
        MLPClassifier((5,), max_iter=5, batch_size=30, alpha=0.0, random_state=0, backend=compiled_backend)
        .fit(X, y, sample_weight=scale * weights)
        for scale in (1.0, 1000.0)
    ]  # fmt: skip
    for a, b in zip(fits[0].coefs_, fits[1].coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    with pytest.raises(ValueError, match="[Nn]egative"):
        clone(fits[0]).fit(X, y, sample_weight=-weights)
    days = np.arange(1, len(X) + 1).astype("timedelta64[D]")  # scikit-learn's own check counts their unit
    with pytest.raises(ValueError, match=r"sample_weight must be numeric, got values of dtype timedelta64\[D\]"):
        clone(fits[0]).fit(X, y, sample_weight=days)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_early_stopping_keeps_the_best_validated_weights(compiled_backend):
    X, y = make_classification(n_samples=400, n_informative=5, flip_y=0.2, random_state=0)
    params = {"hidden_layer_sizes": (32,), "learning_rate_init": 0.03, "early_stopping": True,
              "validation_fraction": 0.25, "random_state": 0, "backend": compiled_backend}  # fmt: skip
    model = MLPClassifier(max_iter=200, **params).fit(X, y)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ < 200 and model.best_validation_score_ == max(scores)
    assert model.best_loss_ is None and len(model.loss_curve_) == model.n_iter_
    best_epochs = int(np.argmax(scores)) + 1  # the same run cut short there ends with the best weights
    cut_short = MLPClassifier(max_iter=best_epochs, **params).fit(X, y)
    for a, b in zip(model.coefs_ + model.intercepts_, cut_short.coefs_ + cut_short.intercepts_):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        model.partial_fit(X, y)  # one epoch on a chunk has no validation split (scikit-learn's error)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_fits_follow_a_changed_stopping_rule_or_solver(compiled_backend):
    """set_params between warm_start fits may switch early stopping on or off, or change to L-BFGS (which has
    no early stopping) and back: each fit keeps the state its own rule needs."""
    X, y = standardized_iris()
    model = MLPClassifier((5,), max_iter=4, warm_start=True, random_state=0, backend=compiled_backend).fit(X, y)
    weights = model.coefs_[0].copy()
    model.set_params(early_stopping=True).fit(X, y)
    assert len(model.validation_scores_) == 4 and model.best_loss_ is None
    assert not np.array_equal(model.coefs_[0], weights)  # went on from the first fit's weights
    model.set_params(early_stopping=False).fit(X, y)
    assert model.validation_scores_ is None and model.best_loss_ == min(model.loss_curve_[-4:])
    model.set_params(solver="lbfgs", early_stopping=True).fit(X, y)
    assert model.n_iter_ == 4 and model.validation_scores_ is None
    model.set_params(solver="adam").fit(X, y)
    assert len(model.validation_scores_) == 4 and len(model.loss_curve_) == 20
    # partial_fit keeps the optimizer's memory, so its solver stays; its advice is its own
    with pytest.raises(ValueError, match="partial_fit continues the network trained before, so solver cannot change; "
                       "clone the estimator to train a new network"):  # fmt: skip
        model.set_params(solver="sgd", early_stopping=False).partial_fit(X, y)
    with pytest.raises(ValueError, match="warm_start continues .* so hidden_layer_sizes cannot change; set warm_start"):
        model.set_params(solver="adam", hidden_layer_sizes=(6,)).fit(X, y)


@pytest.mark.parametrize("solver, learning_rate", [("sgd", "constant"), ("sgd", "invscaling"), ("adam", "constant")])
def test_warm_start_continues_the_weights_with_a_new_optimizer(solver, learning_rate, compiled_backend):
    # As scikit-learn: each fit starts its optimizer anew. Plain SGD at a constant rate has no memory, so two warm
    # fits of 5 epochs are one of 10; the invscaling rate starts again from learning_rate_init, and Adam's moments
    # and bias correction start again, so theirs are not.
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (6,), "solver": solver, "learning_rate": learning_rate, "momentum": 0.0,
              "tol": 0.0, "n_iter_no_change": 100, "random_state": 0, "backend": compiled_backend}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        once = MLPClassifier(max_iter=10, **params).fit(X, y)
        twice = MLPClassifier(max_iter=5, warm_start=True, **params).fit(X, y)
        first_half = [a.copy() for a in twice.coefs_]
        twice.fit(X, y)
    same = [np.array_equal(a, b) for a, b in zip(once.coefs_ + once.intercepts_, twice.coefs_ + twice.intercepts_)]
    assert all(same) if learning_rate == "constant" and solver == "sgd" else not any(same)
    assert not any(np.array_equal(a, b) for a, b in zip(first_half, twice.coefs_))  # it went on from there
    assert twice.n_iter_ == 5 and twice.t_ == once.t_ == 10 * len(X)
    assert twice.loss_curve_[:5] == once.loss_curve_[:5] and len(twice.loss_curve_) == 10
    other = "adam" if solver == "sgd" else "sgd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        twice.set_params(solver=other).fit(X, y)  # a new optimizer may be another one
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        twice.set_params(hidden_layer_sizes=(7,)).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_each_warm_start_fit_starts_the_invscaling_rate_anew_as_scikit_learn(compiled_backend):
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (5,), "max_iter": 2, "random_state": 0, "solver": "sgd",
              "learning_rate": "invscaling", "learning_rate_init": 0.5, "momentum": 0.0, "shuffle": False,
              "batch_size": 50, "alpha": 0.0, "warm_start": True}  # fmt: skip
    ours, theirs = MLPClassifier(backend=compiled_backend, **params), neural_network.MLPClassifier(**params)
    for _ in range(3):
        ours.fit(X, y)
        theirs.fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    assert ours.t_ == theirs.t_ == 6 * len(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_on_chunks_equals_one_epoch_of_fit(estimator, compiled_backend):
    X, labels = standardized_iris()
    y = labels if estimator is MLPClassifier else X[:, 0] * X[:, 1]
    params = {"hidden_layer_sizes": (6,), "solver": "sgd", "batch_size": 1, "shuffle": False,
              "learning_rate_init": 0.01, "random_state": 0, "backend": compiled_backend}  # fmt: skip
    whole = estimator(max_iter=1, **params).fit(X, y)
    chunked = estimator(**params)
    classes = {"classes": np.unique(labels)} if estimator is MLPClassifier else {}
    for rows in np.array_split(np.arange(len(X)), 4):
        chunked.partial_fit(X[rows], y[rows], **classes)
    for a, b in zip(whole.coefs_ + whole.intercepts_, chunked.coefs_ + chunked.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert chunked.n_iter_ == 1 and chunked.t_ == len(X) and len(chunked.loss_curve_) == 4


def test_partial_fit_needs_the_classes_first_and_refuses_new_ones():
    X, y = standardized_iris()
    model = MLPClassifier((4,))
    with pytest.raises(ValueError, match="classes must be passed"):
        model.partial_fit(X, y)
    model.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert model.predict_proba(X).shape == (len(X), 3)
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        model.partial_fit(X, y + 1)
    for names in (np.array(["a", "b", "c"]), np.array(["a", "b", "c"], dtype=object)):
        model = MLPClassifier((4,)).partial_fit(X[y < 2], names[y[y < 2]], classes=names)
        with pytest.raises(ValueError, match=r"not in `self.classes_`: \['d'\]"):
            model.partial_fit(X, np.r_[names, ["d"]][np.minimum(y + 1, 3)])


def test_partial_fit_checks_the_parameters_set_since_its_last_call():
    X, y = standardized_iris()
    model = MLPClassifier((4,), solver="sgd", random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    coefs, params = [coef.copy() for coef in model.coefs_], model.get_params()
    for name, value in (("learning_rate_init", -1.0), ("solver", "bogus"), ("tol", -1.0)):
        model.set_params(**{name: value})
        with pytest.raises(ValueError, match=f"'{name}' parameter of MLPClassifier"):
            model.partial_fit(X, y)
        model.set_params(**{name: params[name]})
    model.partial_fit(X, y)
    assert len(model.loss_curve_) == 2 and not np.array_equal(model.coefs_[0], coefs[0])


@pytest.mark.parametrize("labels", [[0, 1, 2], ["a", "b"], [True, False], np.array(["x", "y", "z"], dtype=object)])
def test_early_stoppings_accuracy_is_accuracy_scores_to_the_bit(labels):
    """The validation accuracy early stopping scores each epoch by is accuracy_score's, weighted or not; multilabel
    rows (all labels right or not) too."""
    rng = np.random.default_rng(0)
    labels = np.asarray(labels)
    truth, predicted = labels[rng.integers(0, len(labels), 57)], labels[rng.integers(0, len(labels), 57)]
    for weights in (np.ones(57), rng.random(57), np.r_[np.zeros(56), 3.0]):
        got = fastbp.estimators._accuracy(truth, predicted, sample_weight=weights)
        assert got == accuracy_score(truth, predicted, sample_weight=weights)
    rows = rng.integers(0, 2, (57, 3))
    flipped = rows ^ (rng.random((57, 3)) < 0.1)
    weights = rng.random(57)
    want = accuracy_score(rows, flipped, sample_weight=weights)
    assert fastbp.estimators._accuracy(rows, flipped, sample_weight=weights) == want < 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataConversionWarning")  # the column of targets
def test_score_is_scikit_learns_to_the_bit_and_refuses_what_it_refuses():
    """score gives ClassifierMixin's and RegressorMixin's value (accuracy, R^2) to the bit, weighted or not, for
    labels in arrays or lists, one output or several, a column, integers; and their errors for mixed label types, NaN,
    lengths that differ."""
    X, y = standardized_iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    weights = np.random.default_rng(0).random(len(X))
    for labels in (y, names, names.astype(object)):
        model = MLPClassifier((4,), max_iter=3, random_state=0).fit(X, labels)
        for truth in (labels, labels[::-1].copy(), list(labels)):
            for weight in (None, weights, list(weights)):
                got = model.score(X, truth, sample_weight=weight)
                assert got == ClassifierMixin.score(model, X, truth, sample_weight=weight)
    targets = np.c_[X[:, 0] * 2, X[:, 1]]
    for truth in (targets, targets[:, 0], targets[:, :1].copy(), (targets[:, 0] * 10).astype(int)):
        model = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, truth)
        for weight in (None, weights):
            assert model.score(X, truth, sample_weight=weight) == RegressorMixin.score(model, X, truth, weight)
    with pytest.raises(ValueError, match="Mix of label input types"):
        MLPClassifier((4,), max_iter=3, random_state=0).fit(X, names).score(X, y.astype(float))
    with pytest.raises(ValueError, match="NaN"):
        model.score(X, np.where(y == 0, np.nan, y))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.score(X, targets[:-1, 0])


@pytest.mark.parametrize("n_outputs", [None, 1, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_early_stoppings_r2_is_r2_scores_to_the_bit(n_outputs, dtype):
    """The validation R^2 early stopping scores a regressor by each epoch is r2_score's, weighted or not, for one
    output or several (float32 predictions of float32 models), a constant target or perfect predictions too."""
    rng = np.random.default_rng(1)
    shape = (41,) if n_outputs is None else (41, n_outputs)
    truth = (rng.normal(size=shape) * 10).astype(dtype)
    predicted = (truth + rng.normal(size=shape)).astype("float32" if dtype == "float32" else "float64")
    constant = np.full(shape, 2, dtype=dtype)
    cases = [
        (truth, predicted),
        (truth, truth.astype(predicted.dtype)),
        (constant, predicted),
        (constant, constant * 1.0),
    ]
    for weights in (np.ones(41), rng.random(41)):
        for y_true, y_pred in cases:
            want = r2_score(y_true, y_pred, sample_weight=weights)
            assert fastbp.estimators._r2(y_true, y_pred, sample_weight=weights) == want


@pytest.mark.parametrize(
    "labels",
    [[3, 7], ["no", "yes"], [1.0, 2.0, 3.0], ["setosa", "versicolor", "virginica"], [True, False], ["one class"],
     np.array(["a", "b", "c", "d"], dtype=object)],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_targets_are_scikit_learns_binarized_labels(labels):
    """The targets trained on are LabelBinarizer's for every kind of labels: after a fit, and for a partial_fit
    whose chunk holds some of the classes passed."""
    X, y = standardized_iris()
    labels = np.asarray(labels)
    y = labels[y % len(labels)]
    fitted = MLPClassifier((3,), max_iter=1, random_state=0).fit(X, y)
    chunk = y[y != labels[0]] if len(labels) > 2 else y
    partial = MLPClassifier((3,), random_state=0).partial_fit(X[: len(chunk)], chunk, classes=labels)
    for model, rows in ((fitted, y), (fitted, y[::-1]), (partial, chunk)):
        targets = model._binarized(rows)
        np.testing.assert_array_equal(targets, model._label_binarizer.transform(rows))
        assert targets.shape == (len(rows), model.n_outputs_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pickles_and_clones(compiled_backend, tmp_path):
    X, y = standardized_iris()
    labels = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    model = MLPClassifier((5,), max_iter=10, random_state=0, backend=compiled_backend).fit(X, labels)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    for continued in (model, restored):  # the optimizer's state travels too (each call shuffles from random_state)
        continued.partial_fit(X, labels)
    np.testing.assert_array_equal(restored.coefs_[0], model.coefs_[0])
    assert model._trainer.shuffle is None  # no row order kept to make pickles larger
    model._trainer.shuffle = np.random.default_rng(0)  # as pickled when trainers kept their Generator
    kept_generator = pickle.loads(pickle.dumps(model))
    model._trainer.shuffle = None
    kept_generator.partial_fit(X, labels)
    model.partial_fit(X, labels)
    np.testing.assert_array_equal(kept_generator.coefs_[0], model.coefs_[0])
    assert clone(model).get_params() == model.get_params() and not hasattr(clone(model), "coefs_")
    assert not hasattr(clone(model), "model_")
    older = dict(model.__getstate__())  # as pickled when model_ was an attribute of its own
    older["model_"] = older.pop("_model")
    unpickled = MLPClassifier.__new__(MLPClassifier)
    unpickled.__setstate__(older)
    np.testing.assert_array_equal(unpickled.model_.predict_proba(X), model.predict_proba(X))
    assert unpickled.model_.weights is unpickled.coefs_[0].base or np.shares_memory(
        unpickled.model_.weights, unpickled.coefs_[0]
    )
    model.model_.save(tmp_path / "model.npz")
    loaded = fastbp.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def lbfgs_pair(estimator, X, y, **params):
    """fastbp's estimator and scikit-learn's, fitted by 10 L-BFGS iterations from the same initial weights."""
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "solver": "lbfgs", "max_iter": 10, "random_state": 2,
              **params}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator(**params).fit(X, y), getattr(neural_network, estimator.__name__)(**params).fit(X, y)


def assert_same_network(ours, theirs, rtol=1e-7):
    assert (ours.n_outputs_, ours.out_activation_) == (theirs.n_outputs_, theirs.out_activation_)
    for mine, sklearns in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(mine, sklearns, rtol=rtol, atol=rtol * 1e-2)


def test_two_classes_and_multilabel_targets_train_logistic_units_as_scikit_learn(tmp_path):
    """One logistic unit for two classes, one per label for multilabel targets, with the binary cross-entropy:
    scikit-learn's network, probabilities, labels and loss; a binary model_ in a file predicts the same."""
    X, labels = standardized_iris()
    binary = np.array(["no", "yes"])[(labels == 2).astype(int)]
    multilabel = np.c_[labels == 0, X[:, 0] > 0, X[:, 1] > 0.5].astype(int)
    for y, n_outputs in ((binary, 1), (multilabel, 3)):
        ours, theirs = lbfgs_pair(MLPClassifier, X, y)
        assert ours.n_outputs_ == n_outputs and ours.out_activation_ == "logistic"
        assert_same_network(ours, theirs)
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        if n_outputs == 1:
            ours.model_.save(tmp_path / "binary.npz")
            loaded = fastbp.load(tmp_path / "binary.npz")
            np.testing.assert_array_equal(loaded.predict(X), ours.predict(X))
            np.testing.assert_array_equal(loaded.predict_proba(X), ours.predict_proba(X))
    assert ours.predict_proba(X).shape == (len(X), 3) and ours.score(X, multilabel) > 0.8  # each label's own
    # Three classes or more keep the softmax.
    assert lbfgs_pair(MLPClassifier, X, labels)[0].out_activation_ == "softmax"
    with pytest.raises(ValueError, match="multilabel"):
        MLPClassifier(class_weight="balanced").fit(X, multilabel)
    # partial_fit of multilabel chunks, the labels' count from the first chunk.
    chunked = MLPClassifier((6,), solver="sgd", random_state=0)
    for start in range(0, len(X), 50):
        chunked.partial_fit(X[start : start + 50], multilabel[start : start + 50], classes=[0, 1, 2])
    assert chunked.n_outputs_ == 3 and chunked.predict(X).shape == multilabel.shape


def test_the_poisson_loss_trains_an_exponential_output_as_scikit_learn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]))
    ours, theirs = lbfgs_pair(MLPRegressor, X, y, loss="poisson")
    assert ours.out_activation_ == "exp"
    assert_same_network(ours, theirs)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9) and (ours.predict(X) > 0).all()
    with pytest.raises(ValueError, match="negative"):
        MLPRegressor(loss="poisson").fit(X, y - 1.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_assigned_or_edited_coefs_and_intercepts_are_the_networks_weights(compiled_backend):
    """As in scikit-learn, whose weights are those arrays: writing into them or assigning new ones changes the
    predictions and the training that follows, also after unpickling."""
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (5,), "solver": "sgd", "momentum": 0.0, "learning_rate_init": 0.1,
              "max_iter": 3, "random_state": 0, "shuffle": False}  # fmt: skip
    model = MLPClassifier(backend=compiled_backend, **params).fit(X, y)
    model.coefs_[0][:] = 0.0  # every hidden unit then puts out its bias alone: one output for every row
    assert np.ptp(model.predict_proba(X), axis=0).max() == 0
    rng = np.random.default_rng(1)
    chosen = (
        [rng.normal(size=coefs.shape) for coefs in model.coefs_],
        [rng.normal(size=b.shape) for b in model.intercepts_],
    )
    restored = pickle.loads(pickle.dumps(model))
    theirs = neural_network.MLPClassifier(**params).fit(X, y)
    for network in (model, restored, theirs):
        network.coefs_, network.intercepts_ = ([a.copy() for a in arrays] for arrays in chosen)
    hidden = np.maximum(X @ chosen[0][0] + chosen[1][0], 0)
    logits = hidden @ chosen[0][1] + chosen[1][1]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.model_.predict_proba(X), expected, rtol=1e-12)  # before any predict
    for network in (model, restored):
        np.testing.assert_allclose(network.predict_proba(X), expected, rtol=1e-12)
        network.partial_fit(X, y)  # one epoch of plain SGD from the assigned weights, as scikit-learn's
    theirs.partial_fit(X, y)
    assert_same_network(model, theirs, rtol=1e-10)
    assert_same_network(restored, theirs, rtol=1e-10)
    assigned = MLPClassifier(solver="adam", **{k: v for k, v in params.items() if k != "solver"})
    assigned.coefs_, assigned.intercepts_ = ([a.copy() for a in arrays] for arrays in chosen)
    assigned.partial_fit(X, y, classes=[0, 1, 2])  # Adam from assigned weights: scikit-learn sets a network so
    assert assigned.n_iter_ == 1 and not np.array_equal(assigned.coefs_[0], chosen[0][0])
    model.intercepts_ = model.intercepts_[:1]
    with pytest.raises(ValueError, match="intercepts_ has 1 arrays, for a network of 2 layers"):
        model.predict(X)
    model.intercepts_, model.coefs_[1] = theirs.intercepts_, np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"coefs_\[1\] has shape \(4, 3\), where the network takes \(5, 3\)"):
        model.predict(X)
    for value, message in ((1j, r"Complex data not supported: coefs_\[1\] must be real"), (np.nan, "finite")):
        model.coefs_[1] = np.full((5, 3), value)
        with pytest.raises(ValueError, match=message):
            model.predict(X)
    single = MLPClassifier(backend=compiled_backend, dtype=np.float32, **params).fit(X, y)
    single.coefs_ = [np.full(coefs.shape, 1e300) for coefs in single.coefs_]  # infinity in float32
    with pytest.raises(ValueError, match=r"coefs_\[0\] must be finite numbers within the float32 range"):
        single.predict(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_the_same_weights_predict_scikit_learns_labels_ties_included(kind, compiled_backend):
    """Labels from the outputs as scikit-learn's label binarizer gives them: a tie goes to the first class, an
    output of exactly 0.5 to the negative one (all-zero weights make every output a tie)."""
    X, labels = standardized_iris()
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)
    y = {
        "binary": names[1:][(labels == 2).astype(int)],
        "multiclass": names[labels],
        "multilabel": np.c_[labels == 0, X[:, 0] > 0, X[:, 1] > 0.5].astype(int),
    }[kind]
    params = {"hidden_layer_sizes": (5,), "max_iter": 5, "random_state": 0}
    ours = MLPClassifier(backend=compiled_backend, **params).fit(X, y)
    theirs = neural_network.MLPClassifier(**params).fit(X, y)
    rows = np.r_[X, np.zeros((1, 4))]
    for weights in ("trained", "zeros"):
        if weights == "zeros":
            for network in (ours, theirs):
                network.coefs_ = [np.zeros_like(coefs) for coefs in ours.coefs_]
                network.intercepts_ = [np.zeros_like(b) for b in ours.intercepts_]
        else:
            theirs.coefs_, theirs.intercepts_ = ours.coefs_, ours.intercepts_
        for X_as in (rows, rows.astype(np.float32), np.asfortranarray(rows), rows.tolist()):
            predicted = ours.predict(X_as)
            np.testing.assert_array_equal(predicted, theirs.predict(rows))
            assert predicted.dtype == theirs.predict(rows).dtype


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_unpickled_estimators_coefs_and_intercepts_are_its_weights_again(compiled_backend, tmp_path):
    """Pickle copies views: unpickled, coefs_ and intercepts_ are views of the weights again, so writing into
    them changes the predictions as in the estimator pickled (and nothing is read back at each prediction)."""
    X, y = standardized_iris()
    model = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0, backend=compiled_backend).fit(X, y)
    model.intercepts_[1] = np.array([7.0])  # assigned, not a view: read back at each prediction
    predicted = model.predict(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), predicted)
    assert all(np.shares_memory(array, restored.model_.weights) for array in restored.coefs_ + restored.intercepts_)
    assert not np.shares_memory(model.intercepts_[1], model.model_.weights)
    assigned = model.intercepts_[1]
    copy.copy(model)  # shares the lists: unpickling its state must not change the original's
    assert model.intercepts_[1] is assigned and "_views" not in model.__getstate__()  # made again, not stored
    joblib.dump(model, tmp_path / "model.joblib")
    mapped = joblib.load(tmp_path / "model.joblib", mmap_mode="r")
    for network in (model, restored, mapped):
        network.coefs_[1][:] = 0.0
        np.testing.assert_array_equal(network.predict(X), np.full(len(X), 7.0))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_precision_follows_the_features_unless_dtype_says_otherwise():
    X, y = standardized_iris()
    single = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(X.astype(np.float32), y)
    assert single.predict(X).dtype == np.float32 and single.coefs_[0].dtype == single.intercepts_[0].dtype == np.float32
    single.partial_fit(X, y)  # float64 features: a continued network keeps its precision
    assert single.coefs_[0].dtype == np.float32
    double = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(X.astype(np.int64), y)
    assert double.coefs_[0].dtype == np.float64
    chosen = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, dtype=np.float32, random_state=0).fit(X, y)
    assert chosen.predict(X).dtype == np.float32 and chosen.coefs_[0].dtype == np.float32


def test_early_stopping_scores_the_held_out_rows_by_their_sample_weights_not_their_class_weights(monkeypatch):
    """Class weights weigh the training loss; the validation score weighs rows by sample_weight alone, as
    scikit-learn's SGDClassifier scores them (a skewed class_weight would otherwise stop an untrained network)."""
    X, y = standardized_iris()
    sample_weight = np.linspace(0.5, 2.0, len(y))
    scored = []

    def accuracy(y_true, y_pred, *, sample_weight=None):
        scored.append(sample_weight)
        return fastbp.estimators._accuracy(y_true, y_pred, sample_weight=sample_weight)

    monkeypatch.setattr(MLPClassifier, "_score_function", staticmethod(accuracy))
    settings = dict(hidden_layer_sizes=(4,), early_stopping=True, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(class_weight={0: 1000.0, 1: 1e-4}, **settings).fit(X, y, sample_weight=sample_weight)
    assert len(scored) == 5 and all(len(weights) == 15 and np.isin(weights, sample_weight).all() for weights in scored)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # scoring huge predictions
def test_a_diverging_fit_raises_scikit_learns_error_or_keeps_the_best_weights_with_early_stopping():
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (16,), "activation": "identity", "solver": "sgd", "learning_rate_init": 1e6,
              "max_iter": 20, "random_state": 0}  # fmt: skip
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights") as raised:
        MLPRegressor(**params).fit(X, y)
    assert isinstance(raised.value, FloatingPointError) and isinstance(raised.value, fastbp.NonFiniteError)
    assert "in iteration 4 of this fit" in str(raised.value)  # the fit's, where each epoch is a kernel call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPRegressor(early_stopping=True, **params).fit(X, y)
    assert np.isnan(model.validation_scores_[-1]) and np.isnan(model.loss_curve_[-1])
    assert len(model.validation_scores_) == len(model.loss_curve_) == model.n_iter_ < 20
    assert all(np.isfinite(block).all() for block in model.coefs_ + model.intercepts_)
    assert np.isfinite(model.predict(X)).all()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_a_fit_that_diverges_leaves_the_estimator_as_it_was(solver, compiled_backend):
    X, y = standardized_iris()
    params = {"hidden_layer_sizes": (8,), "activation": "identity", "solver": solver, "batch_size": 10,
              "max_iter": 20, "random_state": 0, "backend": compiled_backend}  # fmt: skip
    huge = X * 1e300
    fresh = MLPRegressor(learning_rate_init=1e6, **params)
    with pytest.raises(fastbp.NonFiniteError):
        fresh.fit(huge, y)
    with pytest.raises(NotFittedError):  # not half-fitted, with weights that are not finite
        fresh.predict(X)
    fitted = MLPRegressor(**params).fit(X, y)
    before = fitted.predict(X), fitted.loss_curve_.copy(), fitted.n_iter_, fitted.t_
    continuing = [True] if solver == "lbfgs" else [True, False]  # warm_start, then partial_fit
    for warm_start in continuing:
        untouched = pickle.loads(pickle.dumps(fitted))
        fitted.set_params(warm_start=warm_start, learning_rate_init=1e6)
        with pytest.raises(fastbp.NonFiniteError):
            fitted.fit(huge, y) if warm_start else fitted.partial_fit(huge, y)
        after = fitted.predict(X), fitted.loss_curve_, fitted.n_iter_, fitted.t_
        np.testing.assert_array_equal(after[0], before[0])
        assert after[1:] == before[1:]
        # the optimizer's memory, the counters and the shuffling stream too: the next fit is the one it would be
        for model in (fitted, untouched):
            model.set_params(warm_start=warm_start, learning_rate_init=0.01, shuffle=True)
            model.fit(X, y) if warm_start else model.partial_fit(X, y)
        np.testing.assert_array_equal(fitted.predict(X), untouched.predict(X))
        before = fitted.predict(X), fitted.loss_curve_.copy(), fitted.n_iter_, fitted.t_


def test_scikit_learns_parameters_and_errors_carry_over():
    for ours, theirs in ((MLPClassifier, neural_network.MLPClassifier), (MLPRegressor, neural_network.MLPRegressor)):
        params = theirs(max_fun=100).get_params()
        assert ours(**params).get_params() | params == ours(**params).get_params()
        assert not hasattr(ours(solver="lbfgs"), "partial_fit")  # no stochastic solver, no partial_fit
    with pytest.raises(ValueError, match="max_fun"):
        MLPClassifier(max_fun=0).fit(*standardized_iris())
    # Early stopping splits a binary problem by class as scikit-learn does, and its message names those classes.
    with pytest.raises(ValueError, match=r"too few members are: \['True'\]"):
        MLPClassifier(early_stopping=True).fit([[1, 2], [2, 3], [3, 4], [4, 5]], ["a", "a", "a", "b"])
    with pytest.raises(ValueError, match=r"validation_fraction=0.0 holds out no rows for early_stopping=True"):
        MLPClassifier(early_stopping=True, validation_fraction=0.0).fit(*standardized_iris())
    with pytest.raises(ValueError, match=r"positive integers, one at least \(fastbp trains networks with a hidden"):
        MLPClassifier(hidden_layer_sizes=()).fit(*standardized_iris())
    with pytest.raises(ValueError, match=r"hidden_layer_sizes must be positive integers, got \(5, -1\)"):
        MLPClassifier(hidden_layer_sizes=(5, -1)).fit(*standardized_iris())


@pytest.mark.parametrize(
    "params, message",
    [
        ({"backend": "reference"}, "backend"),
        ({"activation": "softmax"}, "activation"),
        ({"momentum": 1.0}, "momentum"),
        ({"dtype": np.int32}, "dtype"),
    ],
)
def test_bad_parameters_are_refused_when_fitting(params, message):
    X, y = standardized_iris()
    model = MLPClassifier(**params)  # stored as given
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


# --- streaming: partial_fit over chunks from lists, memory-mapped files and Dask arrays ---------------------------

#: Uneven chunk boundaries over the 150 rows: a chunk of one row, large and small ones, a tail.
CHUNK_BOUNDS = [0, 7, 40, 41, 99, 150]
#: Rows per chunk read from a memory-mapped file or a Dask array (the last chunk is shorter).
BLOCK_ROWS = 32
#: Online SGD without shuffling, with and without (Nesterov's) momentum, and Adam.
STREAMED_SOLVERS = {
    "sgd": {"solver": "sgd", "momentum": 0.0},
    "momentum": {"solver": "sgd", "momentum": 0.9},
    "adam": {"solver": "adam"},
}


def listed_chunks(X, y, tmp_path):
    """A list of array slices of uneven sizes."""
    return [(X[start:stop], y[start:stop]) for start, stop in zip(CHUNK_BOUNDS[:-1], CHUNK_BOUNDS[1:])]


def memory_mapped_chunks(X, y, tmp_path):
    """Row blocks of ``.npy`` files opened read-only with ``mmap_mode="r"``: nothing is read before it is needed."""
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    X, y = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    assert isinstance(X, np.memmap) and not X.flags.writeable
    return [(X[start : start + BLOCK_ROWS], y[start : start + BLOCK_ROWS]) for start in range(0, len(X), BLOCK_ROWS)]


def dask_chunks(X, y, tmp_path):
    """The blocks of Dask arrays, each computed in turn."""
    from test_dask import require_dask

    dask_array = require_dask("dask.array")
    X = dask_array.from_array(X, chunks=(BLOCK_ROWS, X.shape[1]))
    y = dask_array.from_array(y, chunks=BLOCK_ROWS)
    assert X.numblocks == (5, 1)
    return [(X_block.compute(), y_block.compute()) for X_block, y_block in zip(X.blocks, y.blocks)]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("source", [listed_chunks, memory_mapped_chunks, dask_chunks])
@pytest.mark.parametrize("passes", [1, 3])
@pytest.mark.parametrize("solver", list(STREAMED_SOLVERS))
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_passes_over_chunks_equal_fit_on_all_rows(
    estimator, solver, passes, source, compiled_backend, tmp_path
):
    """``passes`` passes of ``partial_fit`` over the chunks train bit for bit the network that ``fit`` with
    ``max_iter=passes`` trains on the rows concatenated, with the same parameters and ``random_state``.

    The conditions: online updates (``batch_size=1``) in the rows' order (``shuffle=False``) at a constant
    learning rate, no sample weights, and ``fit`` never stopping early (``tol=0`` with a large
    ``n_iter_no_change``).  Then every row gets the same update in the same order either way: momentum and
    Adam's moments and step count carry over from chunk to chunk, and the L2 term, ``alpha`` over the batch's
    size, does not depend on the chunk's size (larger batches would be cut at the chunks' edges instead).
    """
    X, labels = standardized_iris()
    y = labels if estimator is MLPClassifier else X[:, 0] * X[:, 1]
    params = {
        "hidden_layer_sizes": (6, 4), "activation": "tanh", "batch_size": 1, "shuffle": False,
        "learning_rate": "constant", "learning_rate_init": 0.01, "alpha": 0.01, "tol": 0.0, "n_iter_no_change": 100,
        "random_state": 0, "backend": compiled_backend, **STREAMED_SOLVERS[solver],
    }  # fmt: skip
    whole = estimator(max_iter=passes, **params).fit(X, y)
    chunks = source(X, y, tmp_path)
    assert len(chunks) > 2 and sum(len(X_chunk) for X_chunk, _ in chunks) == len(X)
    streamed = estimator(**params)
    first = {"classes": np.unique(labels)} if estimator is MLPClassifier else {}
    for _ in range(passes):
        for X_chunk, y_chunk in chunks:
            streamed.partial_fit(X_chunk, y_chunk, **first)
            first = {}
    assert whole.n_iter_ == passes and streamed.n_iter_ == 1  # scikit-learn's meaning: epochs in the last call
    assert streamed.t_ == whole.t_ == passes * len(X)
    assert len(streamed.loss_curve_) == passes * len(chunks)
    for a, b in zip(whole.coefs_ + whole.intercepts_, streamed.coefs_ + streamed.intercepts_):
        assert np.array_equal(a, b)
    assert np.array_equal(streamed.predict(X), whole.predict(X))


def test_negative_class_weights_are_refused():
    X, y = np.eye(6), np.arange(6) % 2
    with pytest.raises(ValueError, match="class_weight must be finite and non-negative"):
        MLPClassifier(class_weight={0: -1.0, 1: 1.0}, max_iter=2).fit(X, y)


@pytest.mark.parametrize(("early_stopping", "incremental"), [(False, False), (True, False), (False, True)])
def test_an_interrupted_fit_is_the_fit_of_its_complete_epochs(monkeypatch, early_stopping, incremental):
    """Ctrl-C inside an epoch (after its kernels ran) leaves the estimator as after the epoch before: its weights,
    loss_curve_ and t_ those of a fit that many epochs long, n_iter_ its epochs; and a later fit works.  (One
    epoch a kernel call here; several a call: the next test.)"""
    monkeypatch.setattr(fastbp._training, "CHUNK_WORK", 1)  # an epoch a kernel call
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    settings = dict(hidden_layer_sizes=(4,), solver="adam", batch_size=16, shuffle=True, random_state=0)
    settings.update(early_stopping=early_stopping, validation_fraction=0.2, backend="numba")
    epochs = 1 if incremental else 3
    completed = MLPClassifier(max_iter=max(epochs - 1, 1), **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if incremental:
            completed.partial_fit(X, y, classes=[0, 1])
        else:
            completed.fit(X, y)
    train = Trainer._dense_epochs  # one kernel call: here, an epoch
    calls = []

    def interrupted_epoch(self, *args, **kwargs):
        history = train(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == epochs + (1 if incremental else 0):
            raise KeyboardInterrupt
        return history

    monkeypatch.setattr(Trainer, "_dense_epochs", interrupted_epoch)
    estimator = MLPClassifier(max_iter=5, **settings)
    with pytest.warns(UserWarning, match="interrupted"):
        if incremental:  # the second partial_fit is interrupted
            estimator.partial_fit(X, y, classes=[0, 1]).partial_fit(X, y)
        else:
            estimator.fit(X, y)
    for coef, expected in zip(estimator.coefs_, completed.coefs_, strict=True):
        np.testing.assert_array_equal(coef, expected)
    assert estimator.loss_curve_ == completed.loss_curve_
    assert estimator.t_ == completed.t_
    assert estimator.n_iter_ == (0 if incremental else completed.n_iter_)  # a partial_fit's epochs, as scikit-learn
    np.testing.assert_array_equal(estimator.predict_proba(X), completed.predict_proba(X))
    monkeypatch.setattr(Trainer, "_dense_epochs", train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)
    assert estimator.n_iter_ == 5 or early_stopping


def test_a_ctrl_c_in_a_call_of_several_epochs_leaves_the_fit_of_the_calls_before(monkeypatch):
    """Without early stopping, a kernel call trains several epochs (up to n_iter_no_change + 1): Ctrl-C once the
    second call's kernels ran leaves the estimator as after the first call's epochs."""
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    settings = dict(hidden_layer_sizes=(4,), solver="adam", batch_size=16, n_iter_no_change=3, tol=0.0)
    settings.update(random_state=0, backend="numba")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first_call = MLPClassifier(max_iter=4, **settings).fit(X, y)  # n_iter_no_change + 1 epochs: one call
    train, calls = Trainer._dense_epochs, []

    def interrupted_call(self, *args, **kwargs):
        history = train(self, *args, **kwargs)
        calls.append(len(history))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return history

    monkeypatch.setattr(Trainer, "_dense_epochs", interrupted_call)
    estimator = MLPClassifier(max_iter=10, **settings)
    with pytest.warns(UserWarning, match="interrupted"):
        estimator.fit(X, y)
    assert calls == [4, 4]
    assert estimator.n_iter_ == first_call.n_iter_ == 4
    assert estimator.loss_curve_ == first_call.loss_curve_
    assert estimator.t_ == first_call.t_
    for coef, expected in zip(estimator.coefs_, first_call.coefs_, strict=True):
        np.testing.assert_array_equal(coef, expected)


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize(
    "settings",
    [
        dict(solver="adam", max_iter=60, tol=1e-2),
        dict(solver="sgd", learning_rate="adaptive", max_iter=80, tol=1e-2, n_iter_no_change=4),
        dict(solver="sgd", learning_rate="invscaling", momentum=0.5, max_iter=30, alpha=0.1),
        dict(solver="adam", max_iter=45, n_iter_no_change=40, tol=0.0, alpha=0.0, verbose=True),
        dict(solver="adam", max_iter=60, early_stopping=True, n_iter_no_change=6, alpha=0.0, verbose=True),
        dict(solver="sgd", learning_rate="adaptive", max_iter=80, early_stopping=True, tol=1e-2, n_iter_no_change=3),
    ],
    ids=[
        "adam, stops",
        "adaptive rate lowered, then stops",
        "invscaling",
        "fewer epochs than the rule's, no alpha",
        "early stopping, no alpha",
        "early stopping, adaptive rate lowered",
    ],
)
def test_several_epochs_a_kernel_call_give_the_fit_of_one_a_call(monkeypatch, capsys, backend, settings):
    """Several epochs a call fit the bits of one a call: the weights (with early stopping, the best epoch's), the
    loss curve with its penalties, the validation scores, the epoch the fit stops at, the lowered adaptive rate,
    the counters and the verbose lines."""
    X, y = load_digits(return_X_y=True)
    options = dict(hidden_layer_sizes=(16,), batch_size=128, random_state=0, backend=backend, **settings)
    fits, calls = [], []
    train = Trainer._dense_epochs

    def counted(self, *args, **kwargs):
        history = train(self, *args, **kwargs)
        calls[-1].append(len(history))
        return history

    monkeypatch.setattr(Trainer, "_dense_epochs", counted)
    for chunk_work in (1, fastbp._training.CHUNK_WORK):  # an epoch a call, then several
        monkeypatch.setattr(fastbp._training, "CHUNK_WORK", chunk_work)
        calls.append([])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(MLPClassifier(**options).fit(X / 16, y))
        fits[-1].printed = capsys.readouterr().out
    one, several = fits
    assert max(calls[1]) > 1 and len(calls[1]) < len(calls[0]) == one.n_iter_  # several epochs a call, indeed
    assert several.n_iter_ == one.n_iter_ and several.t_ == one.t_
    assert several.loss_curve_ == one.loss_curve_ and several.best_loss_ == one.best_loss_
    assert several.validation_scores_ == one.validation_scores_
    assert several.best_validation_score_ == one.best_validation_score_
    assert several._no_improvement_count == one._no_improvement_count
    assert several._trainer.options.lr == one._trainer.options.lr
    assert several.printed == one.printed
    for coef, expected in zip(several.coefs_, one.coefs_, strict=True):
        assert coef.tobytes() == expected.tobytes()


def diverging_fits(monkeypatch, **settings):
    """What a diverging fit of digits gives (its estimator, or its error) one epoch a call, then several."""
    X, y = load_digits(return_X_y=True)
    options = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=50.0, momentum=0.9, max_iter=40)
    results = []
    for chunk_work in (1, fastbp._training.CHUNK_WORK):
        monkeypatch.setattr(fastbp._training, "CHUNK_WORK", chunk_work)
        try:
            results.append(MLPRegressor(random_state=0, **options, **settings).fit(X * 100, y * 1e6))
        except fastbp.NonFiniteError as error:
            results.append(error)
    return results


def test_a_call_of_several_epochs_that_diverges_names_the_epoch_as_one_a_call_does(monkeypatch):
    messages = [str(error) for error in diverging_fits(monkeypatch)]
    assert "in iteration" in messages[0] and messages[0] == messages[1]


def test_a_call_of_several_epochs_that_diverges_with_early_stopping_ends_as_one_a_call_does(monkeypatch):
    """With early stopping, the epoch that diverged gets a nan loss and score, and the best epoch's weights stay."""
    one, several = diverging_fits(monkeypatch, early_stopping=True)
    assert 1 < one.n_iter_ < 40 and np.isnan(one.loss_curve_[-1]) and np.isnan(one.validation_scores_[-1])
    np.testing.assert_array_equal(several.loss_curve_, one.loss_curve_)
    np.testing.assert_array_equal(several.validation_scores_, one.validation_scores_)
    for coef, expected in zip(several.coefs_, one.coefs_, strict=True):
        assert coef.tobytes() == expected.tobytes()


@pytest.mark.parametrize("lands", ["before the first epoch", "as the third epoch begins", "after the last epoch"])
def test_a_ctrl_c_between_epochs_undoes_nothing(monkeypatch, lands):
    """Ctrl-C as the epochs' loop is entered leaves the initial network, with a warning; as an epoch begins (while
    its starting point is copied), the epochs before it; as the loop is left, after the last epoch, the whole fit
    (nothing rolled back): the state of an uninterrupted fit that long."""
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    settings = dict(hidden_layer_sizes=(4,), solver="adam", batch_size=16, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        completed = MLPClassifier(**settings, backend="numba").fit(X, y)
        two_epochs = MLPClassifier(**{**settings, "max_iter": 2}, backend="numba").fit(X, y)

    def no_epoch(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_dense_epochs", no_epoch)  # Ctrl-C as the first epoch begins: the initial network
    with pytest.warns(UserWarning, match="interrupted"):
        initial = MLPClassifier(**settings, backend="numba").fit(X, y)
    monkeypatch.undo()

    class Interrupted:
        def __enter__(self):
            if lands == "before the first epoch":
                raise KeyboardInterrupt

        def __exit__(self, *exception):
            if lands == "after the last epoch":
                raise KeyboardInterrupt

    monkeypatch.setattr(fastbp._training, "CHUNK_WORK", 1)  # an epoch a kernel call: a snapshot each
    snapshot, snapshots = Trainer.snapshot, []

    def interrupted_snapshot(self):
        snapshots.append(1)
        if lands == "as the third epoch begins" and len(snapshots) == 3:
            raise KeyboardInterrupt
        return snapshot(self)

    monkeypatch.setattr(fastbp.estimators, "one_blas_thread", Interrupted)
    monkeypatch.setattr(Trainer, "snapshot", interrupted_snapshot)
    estimator = MLPClassifier(**settings, backend="numba")
    with pytest.warns(UserWarning, match="interrupted"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)
    if lands != "before the first epoch":
        whole = completed if lands == "after the last epoch" else two_epochs
        assert estimator.n_iter_ == whole.n_iter_ == (3 if whole is completed else 2)
        assert estimator.loss_curve_ == whole.loss_curve_
        expected = whole.coefs_
    else:
        assert estimator.n_iter_ == 0 and estimator.loss_curve_ == []
        expected = initial.coefs_
    for coef, want in zip(estimator.coefs_, expected, strict=True):
        np.testing.assert_array_equal(coef, want)
