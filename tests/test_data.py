"""The data protocol: CSV reading, label encoding, normalisation, the split, scoring."""

import random
from pathlib import Path

import numpy as np
import pytest

from fastbp import data


def tutorial_split(dataset, n_folds, rng):
    """The tutorial's ``cross_validation_split``, verbatim but for the explicit rng: the oracle."""
    dataset_split = list()
    dataset_copy = list(dataset)
    fold_size = int(len(dataset) / n_folds)
    for _ in range(n_folds):
        fold = list()
        while len(fold) < fold_size:
            index = rng.randrange(len(dataset_copy))
            fold.append(dataset_copy.pop(index))
        dataset_split.append(fold)
    return dataset_split


def test_load_csv_tolerates_blank_lines_padding_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeff1.5, 2,a\n\n  \n3,4.25 , b\n5,6,a", encoding="utf-8")
    X, y = data.load_csv(path)
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, [[1.5, 2.0], [3.0, 4.25], [5.0, 6.0]])
    assert y.tolist() == ["a", "b", "a"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no data rows"),
        ("1,2,a\n3,a\n", "line 2: 2 fields, expected 3"),
        ("1,x,a\n", "line 1: non-numeric feature"),
        ("1,2,a\nnan,2,b\n", "line 2: feature 'nan' in column 1 is not a finite number"),
        ("a\n", "at least one feature"),
        ("1,2,\n", "line 1: the label .* is empty"),
    ],
)
def test_load_csv_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        data.load_csv(path)


def test_load_csv_reads_wheat_seeds(shared_data):
    X, y = data.load_csv(shared_data / "wheat-seeds.csv")
    assert X.shape == (210, 7)
    assert sorted(set(y.tolist())) == ["1", "2", "3"]
    np.testing.assert_array_equal(X[0], [15.26, 14.84, 0.871, 5.763, 3.312, 2.221, 5.22])


def test_load_features_reads_rows_with_or_without_their_label(tmp_path):
    with_labels, without = tmp_path / "labelled.csv", tmp_path / "features.csv"
    with_labels.write_text("1.5,2,a\n\n3, 4.25,b\n")
    without.write_text("\ufeff1.5,2\n3,4.25\n")
    for path in (with_labels, without):
        np.testing.assert_array_equal(data.load_features(path, 2), [[1.5, 2.0], [3.0, 4.25]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no data rows"),
        ("1,2,3,4\n", "line 1: 4 fields, expected 2 features \\(or 3 fields, the last a label\\)"),
        ("1,2\n1,2,a\n", "line 2: 3 fields, expected 2"),
        ("1,2,a\n1,x,b\n", "line 2: non-numeric feature"),
        ("1,-inf\n", "line 1: feature '-inf' in column 2 is not a finite number"),
    ],
)
def test_load_features_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        data.load_features(path, 2)


def test_read_table_reads_a_header_and_the_label_by_name_or_as_the_last_column(tmp_path):
    sklearn = pytest.importorskip("sklearn.datasets")
    frame = sklearn.load_breast_cancer(as_frame=True).frame  # 30 named features, then "target"
    path = tmp_path / "bc.csv"
    frame.to_csv(path, index=False)
    X, y = data.read_table(path, label="target")
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, frame.drop(columns="target").to_numpy())
    assert y.tolist() == frame["target"].astype(str).tolist()
    for by_default in (data.read_table(path), data.read_table(path, label=-1, header=True, delimiter=",")):
        np.testing.assert_array_equal(by_default[0], X)
        np.testing.assert_array_equal(by_default[1], y)


@pytest.mark.parametrize(
    "text",
    [
        "x;y;label\n1.5;2.25;a\n3;4.5;b\n",  # semicolons, decimal points
        "x\ty\tlabel\n1.5\t2.25\ta\n3\t4.5\tb\n",
        "x|y|label\n1.5|2.25|a\n3|4.5|b\n",
        '"x","y","label"\n"1.5","2.25","a"\n"3","4.5","b"\n',
        '"1.5", "2.25", "a"\n\n"3", "4.5", "b"\n',  # quoted after a space, a blank line, no header
        "\ufeff1.5,2.25,a\r\n3,4.5,b",  # a byte order mark, Windows line ends, no final one
    ],
)
def test_read_table_detects_the_delimiter_quotes_and_header(tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8", newline="")
    X, y = data.read_table(path)
    np.testing.assert_array_equal(X, [[1.5, 2.25], [3.0, 4.5]])
    assert y.tolist() == ["a", "b"]


def test_read_table_takes_the_label_from_any_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("class;x;y\na;1;2\nb;3;4\n")
    for label in ("class", 0, -3):
        X, y = data.read_table(path, label=label)
        np.testing.assert_array_equal(X, [[1.0, 2.0], [3.0, 4.0]])
        assert y.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match=r"line 2: non-numeric feature 'a' in column 'class'"):
        data.read_table(path, label="y")


def test_read_table_header_can_be_forced_either_way(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,3\n4,5,a\n6,7,b\n")  # a header of numbers looks like data
    X, y = data.read_table(path, header=True)
    np.testing.assert_array_equal(X, [[4.0, 5.0], [6.0, 7.0]])
    assert data.read_table(path, label="3")[1].tolist() == ["a", "b"]
    assert data.read_table(path)[1].tolist() == ["3", "a", "b"]
    path.write_text("x,y,label\n1,2,a\n")
    with pytest.raises(ValueError, match=r"line 1: non-numeric feature 'x' in column 1"):
        data.read_table(path, header=False)


@pytest.mark.parametrize(
    "text, rows",
    [
        ("1,2,a\n", 1),  # csv.Sniffer.has_header takes a lone row for a header
        ("x,label\n1,aaaaa\n2,bbbbb\n", 2),  # and misses this one, whose labels are as long as "label"
        ("1.5,2,x\n3,4,y\n", 2),  # a file of numbers but the labels
    ],
)
def test_read_table_never_takes_a_row_of_numbers_for_a_header_nor_names_for_data(tmp_path, text, rows):
    path = tmp_path / "d.csv"
    path.write_text(text)
    assert len(data.read_table(path)[0]) == rows


def test_read_table_keeps_a_given_delimiter_when_detecting_the_header(tmp_path):
    path = tmp_path / "d.csv"
    # csv.Sniffer prefers the commas; read with semicolons, the first row is a header by its column types.
    path.write_text("x;2020;ab,cd\n1;2;a,bb\n3;4;c,dd\n5;6;e,ff\n")
    X, y = data.read_table(path, delimiter=";")
    np.testing.assert_array_equal(X, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert y.tolist() == ["a,bb", "c,dd", "e,ff"]


@pytest.mark.parametrize(
    "text, options, message",
    [
        ("", {}, "no data rows \\(the file is empty\\)"),
        ("\n \n", {}, "no data rows \\(the file is empty\\)"),
        ("x,y,label\n", {}, "a header row and no data rows"),
        ("x,y,label\n1,2,a\n", {"label": "class"}, "the header names no column 'class' \\(it has 'x', 'y', 'label'\\)"),
        ("x,y,x\n1,2,a\n", {"label": "x"}, "the header names more than one column 'x'"),
        ("1,2,a\n", {"label": "label", "header": False}, "'label', but the file is to be read without a header row"),
        ("1,2,a\n", {"label": "label"}, "the header names no column 'label' \\(it has '1', '2', 'a'\\)"),
        ("1,2,a\n", {"label": 3}, "label column 3 is out of range: the rows have 3 fields"),
        ("1,2,a\n", {"label": -4}, "label column -4 is out of range"),
        ("x,y,label\n1,2,a\n3,4\n", {}, "line 3: 2 fields, expected 3"),
        ("1,2,a\n3,4,b,c\n", {}, "line 2: 4 fields, expected 3"),
        ("x,y,label\n1,2,a\n3,?,b\n", {}, "line 3: non-numeric feature '\\?' in column 'y'"),
        ("x,y,label\n1,2,a\n3,,b\n", {}, "line 3: non-numeric feature '' in column 'y'"),
        ("x,y,label\n1,1e999,a\n", {}, "line 2: feature '1e999' in column 'y' is not a finite number"),
        # decimal commas between semicolons: the sniffer takes the commas for the delimiter; given ';', the commas
        ("5,1;3,5;a\n4,9;3,0;b\n", {}, "'1;3' in column 2 \\(if ';' separates the fields, give it as the delimiter; n"),
        ("5,1;3,5;a\n4,9;3,0;b\n", {"delimiter": ";", "header": False}, "'5,1' in column 1 \\(numbers are read wi"),
        ('1;"2;5";a\n', {"delimiter": ";", "header": False}, "'2;5' in column 2$"),  # never the delimiter read by
        ("x,y,label\n1,2,\n", {}, "line 2: the label \\(column 'label'\\) is empty"),
        ("1\n2\n", {}, "line 1: need at least one feature and a label"),
    ],
)
def test_read_table_rejects_malformed_files(tmp_path, text, options, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        data.read_table(path, **options)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"delimiter": ";;"}, ValueError, "one character"),
        ({"delimiter": '"'}, ValueError, "not a quote"),
        ({"label": 1.0}, TypeError, "label must be a column's index or name"),
        ({"label": True}, TypeError, "label must be"),
        ({"header": "yes"}, TypeError, "header must be True, False or None"),
    ],
)
def test_read_table_rejects_bad_options(tmp_path, options, error, message):
    path = tmp_path / "d.csv"
    path.write_text("1,2,a\n")
    with pytest.raises(error, match=message):
        data.read_table(path, **options)


def test_read_table_features_reads_rows_with_or_without_their_label(tmp_path):
    labelled, without, one_column = tmp_path / "labelled.csv", tmp_path / "features.csv", tmp_path / "one.csv"
    labelled.write_text("class;x;y\na;1.5;2\nb;3;4.25\n")
    without.write_text("x\ty\n1.5\t2\n3\t4.25\n")
    np.testing.assert_array_equal(data.read_table_features(labelled, 2, label="class"), [[1.5, 2.0], [3.0, 4.25]])
    np.testing.assert_array_equal(data.read_table_features(labelled, 2, label=0), [[1.5, 2.0], [3.0, 4.25]])
    np.testing.assert_array_equal(data.read_table_features(without, 2, label="class"), [[1.5, 2.0], [3.0, 4.25]])
    one_column.write_text("1.5\n2\n")  # nothing for csv.Sniffer to find: read as comma-separated
    np.testing.assert_array_equal(data.read_table_features(one_column, 1), [[1.5], [2.0]])
    with pytest.raises(ValueError, match="line 1: 3 fields, expected 1 features \\(or 2 fields, one a label\\)"):
        data.read_table_features(labelled, 1)
    # A model's feature names: a header must give them in their order, a file without one is taken as it is.
    names = ("x", "y")
    expected = [[1.5, 2.0], [3.0, 4.25]]
    np.testing.assert_array_equal(data.read_table_features(labelled, 2, label=0, feature_names=names), expected)
    np.testing.assert_array_equal(data.read_table_features(one_column, 1, feature_names=["x"]), [[1.5], [2.0]])
    with pytest.raises(ValueError, match=r"header names the features \['x', 'y'\], but the model was trained on \['y'"):
        data.read_table_features(without, 2, feature_names=("y", "x"))
    years = tmp_path / "years.csv"  # a header of numbers, which only the model's names tell from a row
    years.write_text("2019,2020,label\n1.5,2,a\n3,4.25,b\n")
    np.testing.assert_array_equal(data.read_table_features(years, 2, feature_names=[2019, " 2020"]), expected)
    assert data.read_table_features(years, 2).shape == (3, 2)


def test_encode_labels_sorts_by_default_and_takes_an_explicit_mapping():
    codes, classes = data.encode_labels(["2", "1", "3", "1"])
    assert codes.tolist() == [1, 0, 2, 0] and classes.tolist() == ["1", "2", "3"]
    codes, classes = data.encode_labels(["2", "1", "3", "1"], classes=["2", "1", "3"])
    assert codes.tolist() == [0, 1, 2, 1] and classes.tolist() == ["2", "1", "3"]


@pytest.mark.parametrize(
    "y, classes, message",
    [
        (["a", "b"], ["a"], "'b' is not in classes"),
        (["a"], ["a", "a"], "repeated"),
        (["a"], [], "non-empty"),
        ([["a"]], None, "one-dimensional"),
        (np.array(["a", 1, None], dtype=object), None, "cannot be sorted"),
        ([0.0, 1.0], [0.0, 1.0, np.nan], r"classes must be labels, not NaN or infinity: \[0.0, 1.0, nan\]"),
        ([0.0, 1.0], [0.0, 1.0, np.inf], "not NaN or infinity"),
        ([0.0, 1.0], np.array([0.0, 1.0, np.nan], dtype=object), "not NaN or infinity"),
    ],
)
def test_encode_labels_rejects_bad_mappings(y, classes, message):
    with pytest.raises(ValueError, match=message):
        data.encode_labels(y, classes)


def test_minmax_normalize_matches_the_tutorial_formula_and_handles_constant_columns():
    X = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, -2.0], [2.0, 5.0, 0.0]])
    expected = [[(x - min(col)) / (max(col) - min(col)) if max(col) > min(col) else 0.0
                 for x, col in zip(row, zip(*X.tolist()))] for row in X.tolist()]  # fmt: skip
    np.testing.assert_array_equal(data.minmax_normalize(X), expected)


def test_minmax_normalize_scales_by_given_bounds():
    train, test = np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[2.0, 4.0], [5.0, 5.0]])
    bounds = data.minmax_bounds(train)
    np.testing.assert_array_equal(bounds, [[1.0, 5.0], [3.0, 5.0]])
    np.testing.assert_array_equal(data.minmax_normalize(train, bounds), data.minmax_normalize(train))
    np.testing.assert_array_equal(data.minmax_normalize(test, bounds), [[0.5, -1.0], [2.0, 0.0]])


@pytest.mark.parametrize(
    "bounds, message",
    [(([0.0], [1.0]), "2 minimums and 2 maximums"), (([0.0, np.inf], [1.0, 1.0]), "bounds contain NaN or infinity")],
)
def test_minmax_normalize_rejects_bounds_that_do_not_fit(bounds, message):
    with pytest.raises(ValueError, match=message):
        data.minmax_normalize([[1.0, 2.0]], bounds)


def test_minmax_normalize_rejects_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinity"):
        data.minmax_normalize([[1.0, np.nan], [2.0, 3.0]])
    with pytest.raises(ValueError, match="2-D"):
        data.minmax_normalize([1.0, 2.0])


def test_cross_validation_split_draws_like_the_tutorial():
    ours = data.cross_validation_split(23, 4, random.Random(3))
    theirs = tutorial_split(range(23), 4, random.Random(3))
    assert [fold.tolist() for fold in ours] == theirs
    assert all(len(fold) == 5 for fold in ours)


@pytest.mark.parametrize("folds", [1, 0, 2.0, True, 11])
def test_cross_validation_split_rejects_bad_fold_counts(folds):
    with pytest.raises(ValueError, match="folds"):
        data.cross_validation_split(10, folds, random.Random(1))


def test_cross_validation_split_takes_numpy_integers_and_needs_a_random_instance():
    assert [f.tolist() for f in data.cross_validation_split(10, np.int64(2), random.Random(1))] == tutorial_split(
        range(10), 2, random.Random(1)
    )
    with pytest.raises(TypeError, match="random.Random"):
        data.cross_validation_split(10, 2, 1)


def test_accuracy_is_a_percentage():
    assert data.accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 75.0
    assert data.accuracy(["a"] * 42, ["a"] * 38 + ["b"] * 4) == 90.47619047619048
    with pytest.raises(ValueError, match="one length"):
        data.accuracy([1, 2], [1])
    with pytest.raises(TypeError, match="different kinds of labels"):
        data.accuracy(["1", "2"], [1, 2])


def test_zero_rule_predicts_the_most_common_training_label():
    assert data.zero_rule(["b", "a", "b", "c"], 3).tolist() == ["b", "b", "b"]
    assert data.zero_rule([2, 1, 1, 2], 2).tolist() == [2, 2]  # a tie goes to the first seen
    with pytest.raises(ValueError, match="empty"):
        data.zero_rule([], 1)
    with pytest.raises(ValueError, match="n_predictions"):
        data.zero_rule([1], 2.5)


def test_zero_rule_baseline_on_wheat_seeds_is_28_095_percent(wheat):
    X, y = wheat
    split = data.cross_validation_split(len(y), 5, random.Random(1))
    scores = []
    for k, test in enumerate(split):
        fit = np.concatenate([fold for j, fold in enumerate(split) if j != k])
        scores.append(data.accuracy(y[test], data.zero_rule(y[fit], len(test))))
    assert f"{sum(scores) / len(scores):.3f}" == "28.095"


def test_tutorial_toy_data():
    X, y = data.tutorial_toy()
    assert X.shape == (10, 2) and y.tolist() == [0] * 5 + [1] * 5


def test_minmax_normalize_keeps_columns_wider_than_the_float_range_finite():
    X = np.array([[1e308, 1.0], [-1e308, 2.0], [0.0, 3.0]])
    scaled = data.minmax_normalize(X)
    np.testing.assert_allclose(scaled, [[1.0, 0.0], [0.0, 0.5], [0.5, 1.0]])


def test_minmax_normalize_refuses_rows_whose_scaled_values_would_overflow():
    """Held-out rows far outside a tiny span: (x - min) / (max - min) is beyond the float range, not infinity."""
    with pytest.raises(
        ValueError, match=r"column 1 has values too far outside the bounds it is scaled by \(from 0.0 to"
    ):
        data.minmax_normalize([[0.5, 1.0], [0.5, 0.0]], bounds=([0.0, 0.0], [1.0, 1e-310]))
    np.testing.assert_array_equal(data.minmax_normalize([[1e-310], [0.0]], bounds=([0.0], [1e-310])), [[1.0], [0.0]])


def test_a_file_without_line_breaks_is_refused_not_read_forever(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_LINE", 100)
    path = tmp_path / "one-line.csv"
    path.write_text("1," * 60 + "a\n")
    with pytest.raises(ValueError, match=r"line 1: longer than 100 characters, so not a CSV file"):
        data.load_csv(path)
    path.write_text("1,2,a\n" * 30)  # many short lines are fine
    assert data.load_csv(path)[0].shape == (30, 2)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="/dev/zero exists on POSIX systems only")
def test_an_endless_device_is_refused():
    with pytest.raises(ValueError, match="not a CSV file"):
        data.load_csv("/dev/zero")
