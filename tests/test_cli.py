"""The ``fastbp train`` and ``fastbp predict`` commands, run as the installed console script.

Every command runs in a subprocess from a temporary directory, so that the installed
package (with its compiled extension) is imported, as a user's shell would.
"""

import io
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
from fastbp import cli, data

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
    done = run("predict", "model.npz", features_only, "--predictions", "predictions.csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert (tmp_path / "predictions.csv").read_text().splitlines() == expected

    done = run("predict", "model.npz", features_only, "--output", "old.csv")  # the old spelling still works
    assert done.returncode == 0, done.stderr
    assert done.stderr == "fastbp: warning: predict's --output is deprecated: use --predictions\n"
    assert (tmp_path / "old.csv").read_text().splitlines() == expected

    model.options["minmax"] = {"min": [0.0, 0.0], "max": [1.0, 1.0]}  # bounds of another model's features
    model.save(tmp_path / "two-bounds.npz")
    done = run("predict", "two-bounds.npz", features_only)
    assert done.returncode == 1 and done.stdout == ""
    assert "two-bounds.npz: its 'minmax' option cannot scale DATA: bounds must be 7 minimums" in done.stderr


def test_train_and_predict_read_a_header_and_the_label_by_name(run, tmp_path):
    sklearn = pytest.importorskip("sklearn.datasets")
    frame = sklearn.load_breast_cancer(as_frame=True).frame  # 30 named features, then "target"
    frame.to_csv(tmp_path / "bc.csv", index=False)
    options = ["--hidden", "4", "--epochs", "3", "--folds", "2"]
    by_name = run("train", "bc.csv", "--label", "target", *options, "--save", "model.npz")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.startswith("bc.csv: 569 rows, 30 features, 2 classes; 2-fold cross-validation")
    detected = run("train", "bc.csv", *options)  # the header detected, the label the last column
    forced = run("train", "bc.csv", "--header", "--delimiter", ",", "--label", "30", *options)
    assert detected.stdout == forced.stdout == by_name.stdout.rsplit("saved the model", 1)[0]

    # The label moved to the first column, and the features alone, predict the same.
    frame[["target", *frame.columns[:-1]]].to_csv(tmp_path / "label-first.csv", index=False, sep=";")
    frame.drop(columns="target").to_csv(tmp_path / "features.csv", index=False, sep="\t")
    label_first = run("predict", "model.npz", "label-first.csv", "--label", "target")
    features = run("predict", "model.npz", "features.csv")
    assert label_first.returncode == 0 and features.returncode == 0, label_first.stderr + features.stderr
    assert label_first.stdout == features.stdout and len(features.stdout.splitlines()) == 569


def test_train_reads_semicolons_tabs_and_quoted_fields_alike(run, toy_csv, tmp_path):
    X, y = data.tutorial_toy()
    rows = [[*map(str, features), f"class {label}"] for features, label in zip(X.tolist(), y)]
    (tmp_path / "semicolons.csv").write_text("x;y;class\n" + "".join(";".join(row) + "\n" for row in rows))
    (tmp_path / "tabs.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))
    (tmp_path / "quoted.csv").write_text("".join(",".join(f'"{field}"' for field in row) + "\n" for row in rows))
    options = ["--hidden", "2", "--epochs", "20", "--folds", "2"]
    expected = run("train", toy_csv, *options)
    assert expected.returncode == 0, expected.stderr
    for name in ("semicolons.csv", "tabs.tsv", "quoted.csv"):
        done = run("train", name, *options)
        assert done.returncode == 0, done.stderr
        assert fold_scores(done.stdout) == fold_scores(expected.stdout)
        assert "10 rows, 2 features, 2 classes" in done.stdout


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
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header-only.csv").write_text("x,y,label\n")
    (tmp_path / "ragged.csv").write_text("x,y,label\n1,2,a\n3,4\n")
    (tmp_path / "named.csv").write_text("x,y,label\n1,2,a\n3,4,b\n")
    (tmp_path / "lr=0.1").mkdir()  # a sweep's folder: its name is the user's, never taken for an option
    (tmp_path / "lr=0.1" / "text.csv").write_text("1.0,2.0,a\n3.0,heavy,b\n")
    return {
        "missing file": (["train", "missing.csv"], "missing.csv: No such file or directory"),
        "text feature": (["train", "text.csv"], "text.csv, line 2: non-numeric feature 'heavy' in column 2"),
        "option-like path": (["train", "lr=0.1/text.csv"], "error: lr=0.1/text.csv, line 2: non-numeric feature"),
        "empty file": (["train", "empty.csv"], "empty.csv: no data rows (the file is empty)"),
        "header only": (["train", "header-only.csv"], "header-only.csv: a header row and no data rows"),
        "ragged rows": (["train", "ragged.csv"], "ragged.csv, line 3: 2 fields, expected 3"),
        "unknown label": (["train", "named.csv", "--label", "class"], "the header names no column 'class'"),
        "label index": (["train", "named.csv", "--label", "3"], "label column 3 is out of range"),
        "long delimiter": (["train", "named.csv", "--delimiter", ";;"], "--delimiter: not one character: ';;'"),
        "no epochs": (["train", toy_csv, "--epochs", "0"], "argument --epochs: not a positive integer: '0'"),
        "no hidden neurons": (["train", toy_csv, "--hidden", "4,0"], "--hidden: not a comma-separated list of positi"),
        "no batch": (["train", toy_csv, "--batch-size", "0"], "argument --batch-size: not a positive integer: '0'"),
        "one fold": (["train", toy_csv, "--folds", "1"], "argument --folds: not an integer >= 2: '1'"),
        "negative seed": (["train", toy_csv, "--seed", "-1", "--save", "m.npz"], "--seed: not an integer >= 0: '-1'"),
        "loss of no classifier": (["train", toy_csv, "--loss", "poisson"], "--loss: invalid choice: 'poisson'"),
        # fastbp.train's own checks, naming the flags where fastbp.train names its options
        "lr nan": (["train", toy_csv, "--lr", "nan"], "error: --lr must be a finite number, got nan"),
        "more folds than rows": (["train", toy_csv, "--folds", "99"], "error: --folds 99 is more than the "),
        "full batch": (
            ["train", toy_csv, "--optimizer", "lbfgs", "--batch-size", "4"],
            "lbfgs is a full-batch method: it takes no --batch-size",
        ),
        "loss for output": (
            ["train", toy_csv, "--output", "softmax", "--loss", "mse"],
            "--loss must be one of ('cross_entropy',) with --output softmax, got 'mse'",
        ),
        "reference backend": (
            ["train", toy_csv, "--backend", "reference", "--optimizer", "rprop"],
            "runs only the tutorial's training (online plain SGD, --batch-size 1, without l2 or sample weights); use "
            "--backend cython or --backend numba",
        ),
        # outputs that would overwrite an input or each other, refused before anything is read or trained
        "save over the data": (["train", toy_csv, "--save", toy_csv], f"--save {toy_csv} would overwrite DATA"),
        "plot over the save": (
            ["train", toy_csv, "--save", "m.npz", "--plot", "./m.npz"],
            "--save m.npz and --plot ./m.npz name the same file",
        ),
        "predictions over the data": (
            ["predict", "m.npz", "named.csv", "--predictions", "named.csv"],
            "--predictions named.csv would overwrite DATA (named.csv)",
        ),
        "predictions over the model": (
            ["predict", "m.npz", "named.csv", "--predictions", "m.npz"],
            "--predictions m.npz would overwrite MODEL (m.npz)",
        ),
        "tutorial init": (["train", toy_csv, "--tutorial", "--init", "he"], "--tutorial trains with --init tutorial"),
        "not a model": (["predict", toy_csv, toy_csv], "is not a fastbp model file: it is not a complete .npz archive"),
        "missing model": (["predict", "missing.npz", toy_csv], "missing.npz: no such model file"),
        "malformed size": (["train", toy_csv, "--hidden", "5,x"], "not a comma-separated list of positive integers"),
        "unknown choice": (["train", toy_csv, "--optimizer", "newton"], "invalid choice: 'newton'"),
        "one class": (["train", "one-class.csv"], "a classifier needs two classes or more"),
        "long field": (["train", "long-field.csv"], "long-field.csv, line 1: field larger than field limit"),
        "not utf-8": (["train", "latin1.csv"], "latin1.csv is not UTF-8 text"),
        "plot to a folder": (["train", toy_csv, "--plot", "folder"], "cannot write folder: it is a folder"),
        "save nowhere": (["train", toy_csv, "--save", "none/m.npz"], "the folder none does not exist"),
        "huge network": (["train", toy_csv, "--hidden", "100000000000"], "more than fastbp's"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing file", "text feature", "option-like path", "empty file", "header only", "ragged rows", "unknown label",
     "label index",
     "long delimiter", "no epochs", "no hidden neurons", "no batch", "one fold", "negative seed",
     "loss of no classifier", "lr nan", "more folds than rows", "full batch", "loss for output", "reference backend",
     "save over the data", "plot over the save", "predictions over the data", "predictions over the model",
     "tutorial init",
     "not a model", "missing model", "malformed size", "unknown choice", "one class", "long field", "not utf-8",
     "plot to a folder", "save nowhere", "huge network"],
)  # fmt: skip
def test_bad_input_ends_with_one_error_line(run, bad_inputs, case):
    args, message = bad_inputs[case]
    done = run(*args)
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert line.startswith("fastbp: error: ") and message in line


def test_each_folds_warnings_are_shown_naming_the_fold_and_the_flags(run, toy_csv):
    # A learning rate this large saturates every softmax output in both folds: each fold says so, and its advice
    # names the flag to change; under Python's own filters all the same.
    args = ["train", toy_csv, "--folds", "2", "--epochs", "50", "--output", "softmax", "--loss", "cross_entropy",
            "--lr", "1000"]  # fmt: skip
    done = run(*args)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert [line.split(": ")[:2] for line in lines] == [["fastbp", "warning"]] * 2
    assert [line.split(": ")[2] for line in lines] == ["fold 1", "fold 2"]
    assert all("with every softmax output saturated" in line for line in lines)
    assert all(line.endswith("try a smaller --lr, or scale the features") for line in lines)
    assert run(*args, env={**os.environ, "PYTHONWARNINGS": "ignore"}).stderr == ""


def test_predict_refuses_a_header_that_orders_a_models_named_features_otherwise(run, tmp_path):
    pandas = pytest.importorskip("pandas")
    X, y = data.tutorial_toy()
    frame = pandas.DataFrame(X, columns=["width", "height"]).assign(label=y)
    fastbp.train(frame[["width", "height"]], y, epochs=3, seed=1).save(tmp_path / "named.npz")
    frame.to_csv(tmp_path / "same.csv", index=False)
    frame[["height", "width", "label"]].to_csv(tmp_path / "swapped.csv", index=False)
    assert run("predict", "named.npz", "same.csv").returncode == 0
    swapped = run("predict", "named.npz", "swapped.csv")
    assert swapped.returncode == 1 and swapped.stdout == ""
    assert "swapped.csv: its header names the features ['height', 'width'], but the model was trained on " in (
        swapped.stderr
    )


def test_predict_rejects_rows_of_the_wrong_width(run, toy_csv, tmp_path):
    assert run("train", toy_csv, "--epochs", "2", "--folds", "2", "--save", "model.npz").returncode == 0
    (tmp_path / "wide.csv").write_text("1,2,3,4\n")
    done = run("predict", "model.npz", "wide.csv")
    assert done.returncode == 1
    assert done.stderr == "fastbp: error: wide.csv, line 1: 4 fields, expected 2 features (or 3 fields, one a label)\n"


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


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so that ``fastbp train`` shows its progress bar there."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_moves_with_the_kernels_chunks_not_every_epoch(toy_csv, tmp_path, monkeypatch):
    # A callback makes the kernels return to Python after every epoch, which costs tiny runs more than training:
    # each training advances the bar itself, after each chunk of epochs.
    callbacks = []

    def recording_train(*args, **kwargs):
        callbacks.append(kwargs.get("callback"))
        assert callable(kwargs["progress"].update)
        return fastbp.train(*args, **kwargs)

    monkeypatch.setattr(cli, "train", recording_train)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "toy.csv", "--epochs", "40", "--folds", "2", "--save", "model.npz"]) == 0
    assert callbacks == [None, None, None]  # two folds and the saved model
    assert "120/120 [" in sys.stderr.getvalue()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.npz", "toy.csv"]  # no file left by checks


@pytest.fixture
def untrainable(monkeypatch):
    """Training that fails the test: a refused ``--save`` must be refused before any."""

    def refuse(*args, **kwargs):
        raise AssertionError("trained before checking --save")

    monkeypatch.setattr(cli, "train", refuse)


def test_save_to_a_read_only_folder_is_refused_before_training(untrainable, toy_csv, tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    (tmp_path / "read-only").mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "toy.csv", "--save", "read-only/model.npz"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "fastbp: error: cannot write read-only/model.npz: Permission denied (in the folder read-only)\n"
    assert list((tmp_path / "read-only").iterdir()) == []


@pytest.mark.parametrize(
    "target, message",
    [
        ("missing/model.npz", "cannot write missing/model.npz: the folder missing does not exist"),
        ("folder", "cannot write folder: it is a folder"),
        ("fifo", "cannot write fifo: it is a FIFO, not a regular file"),
    ],
)
def test_save_where_no_file_can_be_written_is_refused_before_training(
    untrainable, toy_csv, tmp_path, monkeypatch, capsys, target, message
):
    (tmp_path / "folder").mkdir()
    if target == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("FIFOs are POSIX's")
        os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "toy.csv", "--save", target]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"fastbp: error: {message}\n"
