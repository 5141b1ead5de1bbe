"""The tutorial's backpropagation algorithm in plain Python: fastbp's ground truth.

A network is a list of layers; a layer is a list of neurons; a neuron is a dict
holding ``'weights'`` (one per input, bias last) and, once used, ``'output'`` and
``'delta'``.  Every function keeps the tutorial's arithmetic and summation order,
so the compiled kernels can be checked against it bit for bit.

Two deliberate departures, neither of which changes a single figure:

* random numbers come from an explicit ``random.Random`` instead of the global
  stream, so nothing here touches the interpreter's global state;
* ``train_network`` returns the per-epoch errors and prints them only when asked.

``math.exp`` raises ``OverflowError`` for activations below about -709, where the
compiled kernels return 0.0; the reference keeps the tutorial's behaviour (and
``backend="reference"`` reports it as a ``FloatingPointError``, see
:mod:`fastbp._kernels_reference`).

``pack`` and ``unpack`` convert between this representation and the flat
parameter buffer used by the kernels (see :mod:`fastbp._layout`).
"""

from __future__ import annotations

import random
from math import exp

import numpy as np

Network = list[list[dict]]


def initialize_network(n_inputs: int, n_hidden: int, n_outputs: int, rng: random.Random) -> Network:
    """Create a network with one hidden layer, weights uniform in [0, 1).

    Draws every hidden neuron's ``n_inputs + 1`` weights, neuron by neuron, then
    every output neuron's ``n_hidden + 1`` weights: the tutorial's order.
    """
    hidden_layer = [{"weights": [rng.random() for _ in range(n_inputs + 1)]} for _ in range(n_hidden)]
    output_layer = [{"weights": [rng.random() for _ in range(n_hidden + 1)]} for _ in range(n_outputs)]
    return [hidden_layer, output_layer]


def activate(weights: list[float], inputs: list[float]) -> float:
    """Weighted sum of the inputs: the bias first, then each input in order."""
    activation = weights[-1]
    for i in range(len(weights) - 1):
        activation += weights[i] * inputs[i]
    return activation


def transfer(activation: float) -> float:
    """Sigmoid transfer function."""
    return 1.0 / (1.0 + exp(-activation))


def forward_propagate(network: Network, row: list[float]) -> list[float]:
    """Propagate ``row`` through the network, storing each neuron's output."""
    inputs = row
    for layer in network:
        new_inputs = []
        for neuron in layer:
            activation = activate(neuron["weights"], inputs)
            neuron["output"] = transfer(activation)
            new_inputs.append(neuron["output"])
        inputs = new_inputs
    return inputs


def transfer_derivative(output: float) -> float:
    """Slope of the sigmoid, given its output."""
    return output * (1.0 - output)


def backward_propagate_error(network: Network, expected: list[float]) -> None:
    """Store each neuron's error signal as ``'delta'``, output layer first."""
    for i in reversed(range(len(network))):
        layer = network[i]
        errors = []
        if i != len(network) - 1:
            for j in range(len(layer)):
                error = 0.0
                for neuron in network[i + 1]:
                    error += neuron["weights"][j] * neuron["delta"]
                errors.append(error)
        else:
            for j in range(len(layer)):
                errors.append(layer[j]["output"] - expected[j])
        for j in range(len(layer)):
            neuron = layer[j]
            neuron["delta"] = errors[j] * transfer_derivative(neuron["output"])


def update_weights(network: Network, row: list[float], l_rate: float) -> None:
    """One SGD step: ``w -= l_rate * delta * input``, first layer first.

    ``row`` is a training row whose last element (the class) is not an input.
    """
    for i in range(len(network)):
        inputs = row[:-1]
        if i != 0:
            inputs = [neuron["output"] for neuron in network[i - 1]]
        for neuron in network[i]:
            for j in range(len(inputs)):
                neuron["weights"][j] -= l_rate * neuron["delta"] * inputs[j]
            neuron["weights"][-1] -= l_rate * neuron["delta"]


def train_network(
    network: Network,
    train: list[list],
    l_rate: float,
    n_epoch: int,
    n_outputs: int,
    verbose: bool = False,
) -> list[float]:
    """Online SGD over ``train`` (rows of inputs followed by an integer class).

    Returns each epoch's sum of squared errors; with ``verbose`` also prints the
    tutorial's ``>epoch=...`` lines.
    """
    history = []
    for epoch in range(n_epoch):
        sum_error = 0
        for row in train:
            outputs = forward_propagate(network, row)
            expected = [0 for _ in range(n_outputs)]
            expected[row[-1]] = 1
            sum_error += sum([(expected[i] - outputs[i]) ** 2 for i in range(len(expected))])
            backward_propagate_error(network, expected)
            update_weights(network, row, l_rate)
        history.append(sum_error)
        if verbose:
            print(">epoch=%d, lrate=%.3f, error=%.3f" % (epoch, l_rate, sum_error))
    return history


def predict(network: Network, row: list[float]) -> int:
    """Index of the largest output (the first one on ties)."""
    outputs = forward_propagate(network, row)
    return outputs.index(max(outputs))


def pack(network: Network) -> np.ndarray:
    """Flatten a network's weights into one float64 buffer, neuron-major, bias last."""
    return np.array([w for layer in network for neuron in layer for w in neuron["weights"]], dtype=np.float64)


def unpack(weights: np.ndarray, sizes: tuple[int, ...]) -> Network:
    """Build a network from a flat buffer laid out for layer ``sizes``."""
    flat = np.asarray(weights, dtype=np.float64).tolist()
    network, start = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layer = []
        for _ in range(n_out):
            layer.append({"weights": flat[start : start + n_in + 1]})
            start += n_in + 1
        network.append(layer)
    if start != len(flat):
        raise ValueError(f"weights has {len(flat)} values; layer sizes {tuple(sizes)} need {start}")
    return network
