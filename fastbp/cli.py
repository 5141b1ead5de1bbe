"""The ``fastbp`` command line: ``demo`` (the default), ``train`` and ``predict``.

``fastbp train DATA.csv`` cross-validates a classifier on a CSV of numeric features
and a label, read by :func:`fastbp.data.read_table`: a header row and the delimiter are
detected (or given by ``--header``/``--no-header`` and ``--delimiter``), and ``--label``
names the label's column (default: the last).  Features are min-max scaled by
the bounds of each fold's training rows, or with ``--tutorial`` by those of the whole
data set (the tutorial's protocol, which then gives the same scores as
:func:`fastbp.evaluate`).  ``--save MODEL.npz`` keeps a model trained on all the
rows, scaled by the whole data set's bounds, which it stores in its ``options`` under
``"minmax"`` as ``{"min": [...], "max": [...]}`` (one value per feature), so that
``fastbp predict`` scales new rows the same way.

Every error ends the command with one line on stderr, ``fastbp: error: ...``, naming the
flags involved, and a non-zero exit status: 2 for a malformed command line, 1 for
anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import itertools
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np

from . import __version__, data
from ._api import Evaluation, evaluate, train
from ._backends import BACKENDS, get_backend
from ._concepts import HIDDEN_ACTIVATIONS, INITS, LOSSES, OPTIMIZER_OPTIONS, OPTIMIZERS, OUTPUTS
from ._files import replaced_atomically
from ._model import load
from ._training import Options
from ._validate import RandomSource

#: The demo's cross-validation on the wine data.
CV_OPTIONS = {"hidden": (5,), "lr": 0.3, "epochs": 500, "init": "tutorial"}
#: The key of a saved model's ``options`` that holds the features' bounds.
MINMAX = "minmax"
#: :func:`fastbp.train`'s defaults, which the ``train`` command's options share.
#: fastbp.train's defaults, with the hidden layers' spelled out (the tutorial's, which ``None`` stands for there).
TRAIN_DEFAULTS = {
    **{name: parameter.default for name, parameter in inspect.signature(train).parameters.items()},
    "hidden": Options.hidden,
    "activation": Options.activation[0],
}
#: fastbp.train's options that the ``train`` command sets by flags of the same names (``--batch-size`` for
#: ``batch_size``), and the cross-validation's folds: the words among them are options in fastbp's errors
#: before "must" or "=" only (``loss must be ...``, ``with output='softmax'``), the names anywhere.
FLAGGED_WORDS = ("hidden", "activation", "output", "loss", "optimizer", "init", "backend", "folds")
FLAGGED_NAMES = ("lr", "batch_size")
OPTION_NAME = re.compile(
    r"(?<![\w-])(?:(?P<word>{})(?=\s+must\b|=)|(?P<name>{})\b)(?:=(?P<value>'[^']*'|[^\s,;:()]+))?".format(
        "|".join(FLAGGED_WORDS), "|".join(FLAGGED_NAMES)
    )
)


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a malformed command on one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fastbp: error: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.command(args)
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # the reader left, as `fastbp predict ... | head` does: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the flush at exit
            return 1
        except (ValueError, TypeError, OSError, FloatingPointError, ImportError, MemoryError) as error:
            print(f"fastbp: error: {_one_line(error)}", file=sys.stderr)
            return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command line's one ``fastbp: warning:`` line, without the source line of its origin."""
    print(f"fastbp: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastbp", description="Small neural networks trained by backpropagation, compiled.")
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    _add_demo_options(parser, defaults=True)
    parser.set_defaults(command=_demo)
    commands = parser.add_subparsers(title="commands", metavar="{demo,train,predict}")

    demo = commands.add_parser(
        "demo",
        help="the tutorial's toy run, then a cross-validation timed against the pure-Python reference (the default)",
        description="The tutorial's toy run (its epoch errors and predictions), then a 5-fold cross-validation "
        "on scikit-learn's wine data, timed against the pure-Python reference.  Nothing is downloaded.",
    )
    _add_demo_options(demo, defaults=False)
    demo.set_defaults(command=_demo)

    train_parser = commands.add_parser(
        "train",
        help="cross-validate a classifier on a CSV file, and optionally save one trained on all of it",
        description="Cross-validate a classifier on DATA (CSV: numeric features and a label, by default in the "
        "last column) and print each fold's accuracy, the mean, and the Zero Rule baseline on the same folds.",
    )
    train_parser.add_argument("data", metavar="DATA.csv", help="rows of numeric features and a label")
    _add_table_options(
        train_parser,
        label_help="the label's column: its name in the header, or its index from 0 "
        "(negative from the end; default: -1, the last)",
    )
    _add_train_options(train_parser)
    train_parser.set_defaults(command=_train)

    predict = commands.add_parser(
        "predict",
        help="predict the rows of a CSV file with a saved model",
        description="Predict each row of DATA with a model saved by 'fastbp train --save', scaling the features "
        "by the bounds stored with it (a model saved from Python, which has none, gets them as they are).  "
        "DATA holds as many features as the model takes, and may hold a label column too (ignored).  "
        "Writes one prediction per row, as CSV.",
    )
    predict.add_argument("model", metavar="MODEL.npz", help="a model file")
    predict.add_argument("data", metavar="DATA.csv", help="rows of numeric features, with or without the label")
    _add_table_options(
        predict,
        label_help="where DATA's label column is, if it has one (ignored): its name in the "
        "header, or its index from 0 (negative from the end; default: -1, the last)",
    )
    predict.add_argument("--predictions", metavar="PRED.csv", help="write the predictions here (default: stdout)")
    # The old spelling, which 'train --output' (output units) made confusing: still read, with a warning.
    predict.add_argument("--output", dest="old_predictions", help=argparse.SUPPRESS)
    predict.set_defaults(command=_predict)
    return parser


def _add_demo_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The demo's options, for bare ``fastbp`` and for ``fastbp demo``.

    Without ``defaults`` an option the subcommand is not given keeps the value the
    main parser set, so that ``fastbp --backend numba demo`` works too.
    """
    _add_backend_option(parser, defaults=defaults)
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="do not time the pure-Python reference",
    )


def _add_backend_option(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    parser.add_argument(
        "--backend",
        default="auto" if defaults else argparse.SUPPRESS,
        choices=["auto", *BACKENDS],
        help="kernels to run (default: auto, the fastest compiled ones)",
    )


def _add_table_options(parser: argparse.ArgumentParser, *, label_help: str) -> None:
    """How to read DATA: :func:`fastbp.data.read_table`'s options, detected by default."""
    table = parser.add_argument_group("reading DATA (detected by csv.Sniffer unless given)")
    table.add_argument("--label", type=_column, default=-1, metavar="COLUMN", help=label_help)
    table.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        help="whether the first row names the columns (default: detected; --label NAME implies one)",
    )
    table.add_argument(
        "--delimiter",
        type=_delimiter,
        metavar="CHAR",
        help="the character between fields, or 'tab' (default: detected among comma, semicolon, tab and vertical bar)",
    )


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    defaults = TRAIN_DEFAULTS
    network = parser.add_argument_group("network and training (as fastbp.train takes them)")
    network.add_argument(
        "--hidden",
        type=_layer_sizes,
        default=defaults["hidden"],
        metavar="N[,N...]",
        help=f"neurons per hidden layer, e.g. 5 or 16,8 (default: {','.join(map(str, defaults['hidden']))})",
    )
    network.add_argument(
        "--epochs", type=_integer(1), default=defaults["epochs"], help="passes over the data (default: %(default)s)"
    )
    network.add_argument(
        "--lr",
        type=float,
        default=defaults["lr"],
        help=f"learning rate (default: {OPTIMIZERS['sgd'].default_lr} for sgd, {OPTIMIZERS['adam'].default_lr} for "
        f"adam, {OPTIMIZERS['rmsprop'].default_lr} for rmsprop)",
    )
    network.add_argument(
        "--batch-size",
        type=_integer(1),
        default=defaults["batch_size"],
        help="rows per update (default: 1, online; all of them for the full-batch optimizers, rprop and lbfgs)",
    )
    network.add_argument(
        "--activation",
        type=_names,
        default=defaults["activation"],
        metavar="NAME[,NAME...]",
        help=f"hidden layers' activation, one name or one per layer: {', '.join(HIDDEN_ACTIVATIONS)} "
        "(default: %(default)s)",
    )
    network.add_argument(
        "--output",
        choices=[name for name, output in OUTPUTS.items() if output.classifies],  # accuracy scores classifiers
        default=defaults["output"],
        help="output units (default: %(default)s)",
    )
    network.add_argument(
        "--loss",
        choices=[
            name for name in LOSSES if any(name in output.losses for output in OUTPUTS.values() if output.classifies)
        ],
        default=defaults["loss"],
        help="default: the one that fits --output",
    )
    network.add_argument(
        "--optimizer", choices=OPTIMIZER_OPTIONS, default=defaults["optimizer"], help="default: %(default)s"
    )
    network.add_argument(
        "--init", choices=list(INITS), default=defaults["init"], help="initial weights (default: each activation's)"
    )
    _add_backend_option(network, defaults=False)

    protocol = parser.add_argument_group("protocol and output")
    protocol.add_argument("--folds", type=_integer(2), default=5, help="cross-validation folds (default: %(default)s)")
    protocol.add_argument(
        "--seed",
        type=_integer(0),
        default=1,
        help="seeds the fold split and every network's draws (default: %(default)s)",
    )
    protocol.add_argument(
        "--tutorial",
        action="store_true",
        help="the tutorial's exact protocol: features min-max scaled over the whole data set, and --init tutorial",
    )
    protocol.add_argument(
        "--save", metavar="MODEL.npz", help="train one more model on all the data and save it here, for 'predict'"
    )
    protocol.add_argument(
        "--plot", metavar="CURVE.png", help="draw each fold's loss per epoch here (needs matplotlib: fastbp[plot])"
    )
    protocol.add_argument("--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)")


def _integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
        return number

    return parse


def _layer_sizes(text: str) -> tuple[int, ...]:
    """``"16,8"`` as ``(16, 8)``."""
    try:
        return tuple(map(_integer(1), text.split(",")))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of positive integers: {text!r}") from None


def _column(text: str) -> int | str:
    """``--label``: an integer is a column's index, anything else its name."""
    try:
        return int(text)
    except ValueError:
        return text


def _delimiter(text: str) -> str:
    delimiter = "\t" if text in ("tab", "\\t") else text
    if len(delimiter) != 1:
        raise argparse.ArgumentTypeError(f"not one character: {text!r}")
    return delimiter


def _names(text: str) -> str | tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    return names[0] if len(names) == 1 else names


@contextlib.contextmanager
def _named_as_flags(where: str | None = None):
    """Errors and warnings of fastbp.train and its checks, naming the flags that set the options (``--loss must
    be one of ... with --output softmax``, ``try a smaller --lr``) where fastbp.train's name them as Python does
    (``loss must be ... with output='softmax'``), and preceded by ``where`` (``fold 2: ...``) where given.  Only
    around calls whose errors quote no file name, column or label: those are the user's own text, which may hold
    ``lr=0.01``."""

    def as_flag(match: re.Match) -> str:
        flag = "--" + (match["word"] or match["name"]).replace("_", "-")
        return flag if match["value"] is None else flag + " " + match["value"].strip("'")

    def as_flags(message: object) -> str:
        return ("" if where is None else f"{where}: ") + OPTION_NAME.sub(as_flag, str(message))

    # A fresh memory of the warnings shown, so that each training's are (every fold's may differ); they pass
    # Python's filters (``python -W``) as fastbp gave them, and are shown reworded.
    with warnings.catch_warnings():
        show = warnings.showwarning
        warnings.showwarning = lambda message, *args, **kwargs: show(as_flags(message), *args, **kwargs)
        try:
            yield
        except (ValueError, TypeError) as error:
            raise type(error)(as_flags(error)) from None


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split())


def _demo(args: argparse.Namespace) -> int:
    """The main job: the tutorial's toy run, then the wine cross-validation timed against the reference."""
    backend = get_backend(args.backend).name  # "auto" warns where it passes over a backend that did not import

    X, y = data.tutorial_toy()
    print(f"fastbp {__version__}: the tutorial's toy data, 2-2-2 network, lr 0.5, 20 epochs, seed 1")
    model = train(X, y, hidden=2, epochs=20, lr=0.5, seed=1, init="tutorial", backend=backend)
    for epoch, error in enumerate(model.history):
        print(">epoch=%d, lrate=%.3f, error=%.3f" % (epoch, 0.5, error))
    correct = int(np.count_nonzero(model.predict(X) == y))
    print(f"predicts {correct} of {len(y)} rows correctly\n")

    from sklearn.datasets import load_wine

    wine = load_wine()
    X, y = data.minmax_normalize(wine.data), wine.target
    print(
        f"scikit-learn's wine data ({X.shape[0]} rows, {X.shape[1]} features, {len(np.unique(y))} classes), "
        "min-max normalised; 5-fold cross-validation, hidden 5, lr 0.3, 500 epochs, seed 1"
    )
    result, seconds = _timed(evaluate, X, y, seed=1, backend=backend, **CV_OPTIONS)
    scores = ", ".join(f"{score:.2f}" for score in result.scores)
    print(f"fold accuracies (%): {scores}")
    print(f"mean accuracy: {result.mean:.3f}% (Zero Rule baseline: {result.baseline_mean:.3f}%)")
    # The toy run above already loaded (or compiled) the kernels: this times training alone.
    print(f"{backend} backend: {seconds:.3f} s")
    if not args.skip_reference and backend != "reference":
        reference, reference_seconds = _timed(evaluate, X, y, seed=1, backend="reference", **CV_OPTIONS)
        agree = "same scores" if reference.scores == result.scores else "DIFFERENT scores"
        print(f"reference (pure Python): {reference_seconds:.2f} s, {agree}")
        print(f"speed-up over the reference: {reference_seconds / seconds:.0f}x")
    return 0


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def _train(args: argparse.Namespace) -> int:
    """Cross-validate with :func:`fastbp.evaluate`'s protocol, scaling the features inside each training fold
    (or, with ``--tutorial``, over all rows); then save and plot as asked."""
    # Everything that can be checked before the data is read and the folds trained, is.
    figure_class = _matplotlib_figure() if args.plot else None
    _check_distinct({"--save": args.save, "--plot": args.plot}, {"DATA": args.data})
    for path in (args.save, args.plot):
        _check_writable(path)
    if args.tutorial and args.init not in (None, "tutorial"):
        raise ValueError(f"--tutorial trains with --init tutorial, not --init {args.init}")
    network = {
        "hidden": args.hidden, "lr": args.lr, "batch_size": args.batch_size, "activation": args.activation,
        "output": args.output, "loss": args.loss, "optimizer": args.optimizer,
        "init": "tutorial" if args.tutorial else args.init, "backend": args.backend,
    }  # fmt: skip
    with _named_as_flags():
        Options.create(**network)
    options = {**network, "epochs": args.epochs}
    X, y = data.read_table(args.data, label=args.label, header=args.header, delimiter=args.delimiter)
    whole = data.minmax_bounds(X)
    _, classes = data.encode_labels(y)
    if len(classes) < 2:
        label = str(classes[0])
        raise ValueError(f"{args.data}: every row has the label {label!r}; a classifier needs two classes or more")
    rng = RandomSource(args.seed).python()  # one stream draws the split, then each fold's network
    with _named_as_flags():
        split = data.cross_validation_split(len(X), args.folds, rng)
    scaling = "over all rows (the tutorial's protocol)" if args.tutorial else "by each training fold's bounds"
    unused = len(X) - sum(len(fold) for fold in split)
    print(
        f"{Path(args.data).name}: {len(X)} rows, {X.shape[1]} features, {len(classes)} classes; "
        f"{len(split)}-fold cross-validation, seed {args.seed}, features min-max scaled {scaling}"
        + (
            f"; {unused} row{'s' * (unused > 1)} left out by the equal-size folds (the tutorial's split)"
            if unused
            else ""
        )
    )
    scores, baseline_scores, histories = [], [], []
    n_trainings = len(split) + (args.save is not None)
    with _progress_bar(args.epochs * n_trainings, shown=not args.quiet and sys.stderr.isatty()) as bar:
        for k, test in enumerate(split):
            fit = np.concatenate([fold for j, fold in enumerate(split) if j != k])
            bounds = whole if args.tutorial else data.minmax_bounds(X[fit])
            bar.set_description(f"fold {k + 1}/{len(split)}")
            with _named_as_flags(f"fold {k + 1}"):
                model = train(data.minmax_normalize(X[fit], bounds), y[fit], seed=rng, classes=classes,
                              progress=bar, **options)  # fmt: skip
            scores.append(data.accuracy(y[test], model.predict(data.minmax_normalize(X[test], bounds))))
            baseline_scores.append(data.accuracy(y[test], data.zero_rule(y[fit], len(test))))
            histories.append(model.history)
            bar.write(f"fold {k + 1}: accuracy {scores[-1]:.3f}% (Zero Rule: {baseline_scores[-1]:.3f}%)", sys.stdout)
        result = Evaluation(scores, baseline_scores)
        bar.write(f"mean accuracy: {result.mean:.3f}% (Zero Rule baseline: {result.baseline_mean:.3f}%)", sys.stdout)
        if args.save is not None:
            bar.set_description("all rows")
            with _named_as_flags("all rows"):
                model = train(data.minmax_normalize(X, whole), y, seed=args.seed, classes=classes, progress=bar,
                              **options)  # fmt: skip
            model.options[MINMAX] = {"min": whole[0].tolist(), "max": whole[1].tolist()}
            model.save(args.save)
            bar.write(f"saved the model trained on all {len(X)} rows to {args.save}", sys.stdout)
    if figure_class is not None:
        _plot_learning_curves(figure_class, histories, model.options["loss"], args.plot, Path(args.data).name)
        print(f"learning curves drawn in {args.plot}")
    return 0


class _Abandoned(Exception):
    """Raised inside :func:`replaced_atomically` to leave it without replacing the file."""


def _check_distinct(outputs: dict[str, str | None], inputs: dict[str, str]) -> None:
    """Refuse outputs (by flag) that would overwrite an input or each other, before the command reads or
    trains anything."""
    given = {flag: path for flag, path in outputs.items() if path is not None}
    for flag, path in given.items():
        for name, taken in inputs.items():
            if _same_file(path, taken):
                raise ValueError(f"{flag} {path} would overwrite {name} ({taken}): write it to another file")
    for (flag, path), (other, taken) in itertools.combinations(given.items(), 2):
        if _same_file(path, taken):
            raise ValueError(f"{flag} {path} and {other} {taken} name the same file: give each its own")


def _same_file(path: str, other: str) -> bool:
    """Whether two paths name one regular file, which writing to one would replace: the same path once
    resolved, or one file under two names.  A device or a pipe (``/dev/stdout``) is never replaced."""
    if any(os.path.exists(name) and not os.path.isfile(name) for name in (path, other)):
        return False
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    with contextlib.suppress(OSError):  # one of them does not exist yet
        return os.path.samefile(path, other)
    return False


def _check_writable(path: str | None) -> None:
    """Refuse an output path that could not be written, before any training.

    Opening the save's temporary file and abandoning it runs every check the save
    will (a regular file or nothing yet, in a folder that exists) and proves the
    folder writable, leaving ``path`` as it was.
    """
    if path is None:
        return
    try:
        with replaced_atomically(path):
            raise _Abandoned
    except _Abandoned:
        pass
    except OSError as error:
        if error.strerror is None:  # the save's own refusals, which name the path
            raise
        # The temporary file beside path could not be made: say so of path, not of that file.
        raise type(error)(f"cannot write {path}: {error.strerror} (in the folder {Path(path).parent})") from None


def _progress_bar(total: int, *, shown: bool):
    """A tqdm bar over every epoch of every fold, on stderr; a do-nothing one when not ``shown``.

    Each training advances it after each call into the kernels (chunks of epochs of
    tens of milliseconds), never after each epoch: a call per epoch would cost a tiny
    network more than its training.
    """
    from tqdm import tqdm

    return tqdm(total=total, unit="epoch", file=sys.stderr, disable=not shown)


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('--plot needs matplotlib: pip install "fastbp[plot]"') from None
    return Figure


def _plot_learning_curves(figure_class, histories: list[np.ndarray], loss: str, path: str, title: str) -> None:
    """One line per fold: its loss summed over the training rows, per epoch.

    A bare ``Figure`` draws with Agg, without pyplot or a display.
    """
    figure = figure_class(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for k, history in enumerate(histories):
        axes.plot(history, label=f"fold {k + 1}")
    ylabel = "sum of squared errors" if loss == "mse" else "cross-entropy (summed over rows)"
    axes.set(xlabel="epoch", ylabel=ylabel, title=f"{title}: learning curves")
    axes.legend()
    figure.savefig(path, format="png")  # the name as given: matplotlib would add ".png" to a bare one


def _predict(args: argparse.Namespace) -> int:
    """Predict each row of a CSV with a saved model, scaling its features by the bounds stored with it."""
    if args.old_predictions is not None:
        print("fastbp: warning: predict's --output is deprecated: use --predictions", file=sys.stderr)
    output = args.predictions or args.old_predictions
    _check_distinct({"--predictions": output}, {"MODEL": args.model, "DATA": args.data})
    model = load(args.model, as_model=True)
    X = data.read_table_features(
        args.data,
        model.sizes[0],
        label=args.label,
        header=args.header,
        delimiter=args.delimiter,
        feature_names=model.feature_names,
    )
    bounds = model.options.get(MINMAX)
    if bounds is not None:
        if not isinstance(bounds, dict) or bounds.keys() != {"min", "max"}:
            raise ValueError(f"{args.model}: its {MINMAX!r} option is not {{'min': [...], 'max': [...]}}")
        try:
            X = data.minmax_normalize(X, (bounds["min"], bounds["max"]))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{args.model}: its {MINMAX!r} option cannot scale DATA: {error}") from None
    predictions = model.predict(X)
    rows = predictions[:, np.newaxis] if predictions.ndim == 1 else predictions
    with open(output, "w", newline="") if output else contextlib.nullcontext(sys.stdout) as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows.tolist())
    return 0
