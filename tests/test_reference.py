"""The pure-Python reference reproduces every figure the tutorial prints (TUTORIAL.md)."""

import random

import numpy as np
import pytest

from fastbp import data, reference

# Figure 3's epoch errors, as printed to 3 decimals.
TOY_EPOCH_ERRORS = [6.350, 5.531, 5.221, 4.951, 4.519, 4.173, 3.835, 3.506, 3.192, 2.898,
                    2.626, 2.377, 2.153, 1.953, 1.774, 1.614, 1.472, 1.346, 1.233, 1.132]  # fmt: skip


def toy_rows():
    X, y = data.tutorial_toy()
    return [[*features, int(label)] for features, label in zip(X.tolist(), y.tolist())]


def tutorial_network():
    """``initialize_network(2, 1, 2)`` after ``seed(1)``, as printed by the tutorial."""
    return [
        [{"weights": [0.13436424411240122, 0.8474337369372327, 0.763774618976614]}],
        [{"weights": [0.2550690257394217, 0.49543508709194095]}, {"weights": [0.4494910647887381, 0.651592972722763]}],
    ]


def test_initialize_network_draws_in_tutorial_order():
    network = reference.initialize_network(2, 1, 2, random.Random(1))
    assert network == tutorial_network()


def test_figure_1_forward_pass():
    assert reference.forward_propagate(tutorial_network(), [1, 0, None]) == [0.6629970129852887, 0.7253160725279748]


def test_figure_2_deltas():
    network = tutorial_network()
    for neuron, output in zip([*network[0], *network[1]], [0.7105668883115941, 0.6213859615555266, 0.6573693455986976]):
        neuron["output"] = output
    reference.backward_propagate_error(network, [0, 1])
    assert network[0][0]["delta"] == 0.0005348048046610517
    assert [neuron["delta"] for neuron in network[1]] == [0.14619064683582808, -0.0771723774346327]


def test_figure_3_training_on_toy_data(capsys):
    rng = random.Random(1)
    network = reference.initialize_network(2, 2, 2, rng)
    history = reference.train_network(network, toy_rows(), 0.5, 20, 2, verbose=True)
    assert [round(error, 3) for error in history] == TOY_EPOCH_ERRORS
    assert network[0][0]["weights"] == [-1.4688375095432327, 1.850887325439514, 1.0858178629550297]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == ">epoch=0, lrate=0.500, error=6.350"
    assert printed[-1] == ">epoch=19, lrate=0.500, error=1.132"


def test_figure_4_printed_network_predicts_every_toy_row():
    network = [
        [{"weights": [-1.482313569067226, 1.8308790073202204, 1.078381922048799]},
         {"weights": [0.23244990332399884, 0.3621998343835864, 0.40289821191094327]}],
        [{"weights": [2.5001872433501404, 0.7887233511355132, -1.1026649757805829]},
         {"weights": [-2.429350576245497, 0.8357651039198697, 1.0699217181280656]}],
    ]  # fmt: skip
    rows = toy_rows()
    assert [reference.predict(network, row) for row in rows] == [row[-1] for row in rows]


def test_transfer_derivative_is_the_sigmoid_slope():
    activation, step = 0.3, 1e-6
    slope = (reference.transfer(activation + step) - reference.transfer(activation - step)) / (2 * step)
    assert reference.transfer_derivative(reference.transfer(activation)) == pytest.approx(slope, rel=1e-8)


def test_pack_and_unpack_round_trip():
    network = reference.initialize_network(3, 4, 2, random.Random(7))
    flat = reference.pack(network)
    assert flat.shape == (4 * 4 + 2 * 5,)
    assert reference.unpack(flat, (3, 4, 2)) == [[{"weights": n["weights"]} for n in layer] for layer in network]
    with pytest.raises(ValueError, match="need 26"):
        reference.unpack(np.zeros(25), (3, 4, 2))


def test_reference_never_touches_the_global_random_state():
    state = random.getstate()
    reference.initialize_network(7, 5, 3, random.Random(1))
    assert random.getstate() == state
