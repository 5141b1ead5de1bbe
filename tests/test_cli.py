"""The ``fastbp train`` and ``fastbp predict`` commands, run as the installed console script.

Every command runs in a subprocess from a temporary directory, so that the installed
package (with its compiled extension) is imported, as a user's shell would.
"""

import os
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
import threading

import numpy as np
import pytest

import fastbp
from fastbp import data

pytestmark = pytest.mark.slow  # every command runs in a process of its own

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def console_script() -> str:
    """The ``fastbp`` script installed beside the Python that runs the tests."""
    path = shutil.which("fastbp", path=sysconfig.get_path("scripts"))
    if path is None:
        pytest.fail("the fastbp console script is not installed: pip install -e .")
    return path


@pytest.fixture
def run(console_script, tmp_path):
    """Run ``fastbp *args`` in ``tmp_path``; return the finished process, its output as text."""

    def run(*args, env=None):
        command = [console_script, *map(str, args)]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)

    return run


@pytest.fixture
def toy_csv(tmp_path):
    """The tutorial's toy data as a CSV file, labels last."""
    X, y = data.tutorial_toy()
    path = tmp_path / "toy.csv"
    path.write_text("".join(",".join(map(str, [*row, label])) + "\n" for row, label in zip(X.tolist(), y)))
    return path


def fold_scores(stdout: str) -> list[str]:
    """The accuracies of the ``fold k: accuracy 92.857% ...`` lines, as printed."""
    return [line.split()[3] for line in stdout.splitlines() if line.startswith("fold ")]


def test_tutorial_protocol_reproduces_the_tutorials_wheat_seeds_mean(run, shared_data):
    wheat = shared_data / "wheat-seeds.csv"
    done = run("train", wheat, "--tutorial", "--hidden", "5", "--epochs", "500", "--lr", "0.3", "--folds", "5",
               "--seed", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mean accuracy: 93.333% (Zero Rule baseline: 28.095%)" in done.stdout
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    X, y = data.load_csv(wheat)
    expected = fastbp.evaluate(data.minmax_normalize(X), y, folds=5, seed=1, hidden=5, lr=0.3, epochs=500,
                               init="tutorial")  # fmt: skip
    assert fold_scores(done.stdout) == [f"{score:.3f}%" for score in expected.scores]


def test_train_scales_features_by_each_training_folds_bounds(run, shared_data):
    wheat = shared_data / "wheat-seeds.csv"
    done = run("train", wheat, "--hidden", "4", "--epochs", "30", "--folds", "3", "--seed", "7")
    assert done.returncode == 0, done.stderr
    X, y = data.load_csv(wheat)
    rng = random.Random(7)
    split = data.cross_validation_split(len(X), 3, rng)
    expected = []
    for k, test in enumerate(split):
        fit = np.concatenate([fold for j, fold in enumerate(split) if j != k])
        low, high = X[fit].min(axis=0), X[fit].max(axis=0)
        model = fastbp.train((X[fit] - low) / (high - low), y[fit], hidden=4, epochs=30, seed=rng)
        expected.append(data.accuracy(y[test], model.predict((X[test] - low) / (high - low))))
    assert fold_scores(done.stdout) == [f"{score:.3f}%" for score in expected]
    assert "scaled by each training fold's bounds" in done.stdout


def test_saved_model_predicts_as_it_did_in_training(run, shared_data, tmp_path):
    wheat = shared_data / "wheat-seeds.csv"
    done = run("train", wheat, "--hidden", "6", "--epochs", "20", "--folds", "2", "--save", "model.npz")
    assert done.returncode == 0, done.stderr
    assert "saved the model trained on all 210 rows to model.npz" in done.stdout

    X, y = data.load_csv(wheat)
    model = fastbp.load(tmp_path / "model.npz")
    assert model.options["minmax"] == {"min": X.min(axis=0).tolist(), "max": X.max(axis=0).tolist()}
    again = fastbp.train(data.minmax_normalize(X), y, hidden=6, epochs=20, seed=1)
    np.testing.assert_array_equal(model.weights, again.weights)  # trained on all rows from --seed
    expected = model.predict(data.minmax_normalize(X)).tolist()

    done = run("predict", "model.npz", wheat)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected

    features_only = tmp_path / "features.csv"
    features_only.write_text("".join(",".join(map(repr, row)) + "\n" for row in X.tolist()))
    done = run("predict", "model.npz", features_only, "--output", "predictions.csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert (tmp_path / "predictions.csv").read_text().splitlines() == expected


def test_plot_draws_a_png_of_the_learning_curves(run, toy_csv, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    done = run("train", toy_csv, "--hidden", "2", "--epochs", "25", "--folds", "2", "--plot", "curves.png")
    assert done.returncode == 0, done.stderr
    assert "learning curves drawn in curves.png" in done.stdout
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    done = run("train", toy_csv, "--hidden", "2", "--epochs", "2", "--folds", "2", "--plot", "bare-name")
    assert (tmp_path / "bare-name").read_bytes().startswith(PNG_SIGNATURE)  # the name as given, nothing added
    pixels = image.imread(tmp_path / "curves.png")
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.min() < pixels.max()  # something is drawn


def test_plot_without_matplotlib_says_how_to_install_it(run, toy_csv, tmp_path):
    hidden = tmp_path / "no_matplotlib" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": str(hidden.parent)}
    done = run("train", toy_csv, "--epochs", "5", "--plot", "curves.png", env=env)
    assert done.returncode != 0
    assert done.stderr.splitlines() == ['fastbp: error: --plot needs matplotlib: pip install "fastbp[plot]"']
    assert done.stdout == ""  # it says so before training
    assert not (tmp_path / "curves.png").exists()


@pytest.fixture
def bad_inputs(toy_csv, tmp_path):
    """Command lines that must fail, and what their error line says."""
    (tmp_path / "text.csv").write_text("1.0,2.0,a\n3.0,heavy,b\n")
    (tmp_path / "one-class.csv").write_text("1.0,2.0,a\n3.0,4.0,a\n5.0,6.0,a\n")
    (tmp_path / "long-field.csv").write_text("1" * 200_000 + ",a\n")
    (tmp_path / "latin1.csv").write_bytes("1.0,caf\xe9\n".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    return {
        "missing file": (["train", "missing.csv"], "missing.csv: No such file or directory"),
        "text feature": (["train", "text.csv"], "line 2: non-numeric feature"),
        "negative epochs": (["train", toy_csv, "--epochs", "-1"], "epochs must be a non-negative integer"),
        "no hidden neurons": (["train", toy_csv, "--hidden", "0"], "hidden must be a positive integer"),
        "lr nan": (["train", toy_csv, "--lr", "nan"], "lr must be a finite number, got nan"),
        "one fold": (["train", toy_csv, "--folds", "1"], "folds must be an integer >= 2"),
        "tutorial init": (["train", toy_csv, "--tutorial", "--init", "he"], "--tutorial trains with --init tutorial"),
        "not a model": (["predict", toy_csv, toy_csv], "is not a fastbp model file: it is not a complete .npz archive"),
        "missing model": (["predict", "missing.npz", toy_csv], "missing.npz: no such model file"),
        "malformed size": (["train", toy_csv, "--hidden", "5,x"], "not a comma-separated list of integers"),
        "unknown choice": (["train", toy_csv, "--optimizer", "newton"], "invalid choice: 'newton'"),
        "one class": (["train", "one-class.csv"], "a classifier needs two classes or more"),
        "long field": (["train", "long-field.csv"], "long-field.csv, line 1: field larger than field limit"),
        "not utf-8": (["train", "latin1.csv"], "latin1.csv is not UTF-8 text"),
        "plot to a folder": (["train", toy_csv, "--plot", "folder"], "folder is a folder: give a file name"),
        "save nowhere": (["train", toy_csv, "--save", "none/m.npz"], "the folder none does not exist"),
        "huge network": (["train", toy_csv, "--hidden", "100000000000"], "more than fastbp's"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing file", "text feature", "negative epochs", "no hidden neurons", "lr nan", "one fold", "tutorial init",
     "not a model", "missing model", "malformed size", "unknown choice", "one class", "long field", "not utf-8",
     "plot to a folder", "save nowhere", "huge network"],
)  # fmt: skip
def test_bad_input_ends_with_one_error_line(run, bad_inputs, case):
    args, message = bad_inputs[case]
    done = run(*args)
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert line.startswith("fastbp: error: ") and message in line


def test_predict_rejects_rows_of_the_wrong_width(run, toy_csv, tmp_path):
    assert run("train", toy_csv, "--epochs", "2", "--folds", "2", "--save", "model.npz").returncode == 0
    (tmp_path / "wide.csv").write_text("1,2,3,4\n")
    done = run("predict", "model.npz", "wide.csv")
    assert done.returncode == 1
    assert (
        done.stderr
        == "fastbp: error: wide.csv, line 1: 4 fields, expected 2 features (or 3 fields, the last a label)\n"
    )


def _run_on_a_terminal(command: list[str], cwd) -> tuple[str, str]:
    """Run ``command`` with stderr on a 100-column pseudo-terminal; return stdout and what the terminal got."""
    fcntl, pty, termios = (pytest.importorskip(name) for name in ("fcntl", "pty", "termios"))
    terminal, stderr = pty.openpty()
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    shown = []

    def read_terminal():
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # Linux: the child's end is closed
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read_terminal)
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr) as process:
        os.close(stderr)
        reader.start()
        stdout = process.stdout.read()
    reader.join(timeout=60)
    os.close(terminal)
    return stdout.decode(), b"".join(shown).decode(errors="replace")


def test_progress_bar_shows_on_a_terminal_but_never_with_quiet(console_script, toy_csv, tmp_path):
    command = [console_script, "train", str(toy_csv), "--epochs", "50", "--folds", "2", "--save", "model.npz"]
    stdout, shown = _run_on_a_terminal(command, tmp_path)
    assert "mean accuracy: " in stdout
    assert "fold 1/2" in shown and "/150 [" in shown  # 2 folds and the saved model, 50 epochs each
    stdout, shown = _run_on_a_terminal([*command, "--quiet"], tmp_path)
    assert "mean accuracy: " in stdout
    assert shown == ""


def test_python_m_fastbp_runs_the_same_command(run, toy_csv, tmp_path):
    args = ["train", str(toy_csv), "--epochs", "10", "--folds", "2"]
    module = subprocess.run([sys.executable, "-m", "fastbp", *args], cwd=tmp_path, capture_output=True, text=True)
    assert module.returncode == 0, module.stderr
    assert module.stdout == run(*args).stdout
