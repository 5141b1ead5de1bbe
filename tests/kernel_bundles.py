"""The kernel contract's bundles with the defaults the kernel tests use."""

import numpy as np

from fastbp._backends import Schedule, Signals
from fastbp._concepts import OptimizerCode


def schedule(orders, rates, *, batch_size=1, optimizer="sgd", momentum=0.0, l2=0.0, steps_done=0) -> Schedule:
    """Rows ``orders`` (intp) at ``rates`` (float64), by ``optimizer``, with Adam's usual settings."""
    return Schedule(
        np.ascontiguousarray(orders, dtype=np.intp), np.ascontiguousarray(rates, dtype=np.float64), batch_size,
        OptimizerCode[optimizer.upper()], momentum, l2, 0.9, 0.999, 1e-8, steps_done,
    )  # fmt: skip


def signals(layout, dtype=np.float64) -> Signals:
    """Empty buffers for every neuron's output and error signal."""
    return Signals(np.zeros(layout.n_neurons, dtype), np.zeros(layout.n_neurons, dtype))
