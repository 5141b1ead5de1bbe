"""Many networks of one architecture trained at once, in lockstep, by the ``train_lockstep`` kernels.

Online SGD is sequential within a network, but networks are independent: with
the network index as the innermost axis of every buffer, each arithmetic
operation of a step runs for all the networks together, as vector instructions.
Every network keeps its own initial weights, learning rate and sequence of rows
(the folds of a cross-validation have different training rows), and gets exactly
the arithmetic it would get trained alone, so the same bits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._backends import Data, get_backend
from ._concepts import LayerKindCode
from ._training import CHUNK_WORK, Trainer

#: Fewer networks than this train faster one at a time: each lockstep step has a fixed cost (gathering the
#: rows, setting up loops over a few networks) that only more networks pay back (measured: docs' performance page).
MIN_NETWORKS = 8


def can_run(trainers: list[Trainer]) -> bool:
    """Whether these trainers should train in lockstep: enough of them (MIN_NETWORKS), online plain SGD (L2
    and schedules allowed), one architecture of dense layers and the same settings but the learning rate, on a
    backend with the lockstep kernel."""
    first = trainers[0].options
    same = dataclasses.replace(first, lr=1.0)
    return (
        len(trainers) >= MIN_NETWORKS
        and first.optimizer == "sgd"
        and not first.momentum
        and (first.batch_size or 1) == 1
        and get_backend(trainers[0].backend).capabilities.lockstep
        and all(dataclasses.replace(trainer.options, lr=1.0) == same for trainer in trainers)
        and all(trainer.layout == trainers[0].layout for trainer in trainers)
        and (trainers[0].layout.kinds == LayerKindCode.DENSE).all()
    )


def run(
    trainers: list[Trainer],
    X: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray,
    rows: list[np.ndarray],
    epochs: int,
) -> list[np.ndarray]:
    """Train network ``k`` for ``epochs`` epochs on rows ``rows[k]`` of the validated arrays; return each one's
    history.  Each trainer's weights and counters advance as its own ``run`` would advance them.

    A network that diverges fills its own history and weights with nan or
    infinity and leaves the others alone: the caller checks each one.
    """
    first = trainers[0]
    backend, layout, options = get_backend(first.backend), first.layout, first.options
    n_nets = len(trainers)
    lengths = np.array([len(positions) for positions in rows], dtype=np.intp)
    longest = int(lengths.max())
    weights = np.ascontiguousarray(np.stack([trainer.weights for trainer in trainers], axis=1))
    net, data = layout.network(options.exact, options.loss), Data(X, Y, sample_weight)
    history = np.zeros((epochs, n_nets))
    chunk = max(1, CHUNK_WORK // (n_nets * longest * layout.n_weights))
    done = 0
    while done < epochs:
        part = history[done : done + chunk]
        rates = np.stack([trainer.epoch_rates(len(part), len(r)) for trainer, r in zip(trainers, rows)], axis=1)
        n_orders = len(part) if options.shuffle else 1
        orders = np.zeros((n_orders, n_nets, longest), dtype=np.intp)  # past a network's rows: row 0, unused
        for k, (trainer, positions) in enumerate(zip(trainers, rows)):
            orders[:, k, : len(positions)] = positions[trainer.epoch_orders(len(part), len(positions))]
        schedule = options.schedule(orders, np.ascontiguousarray(rates), 1, first.steps)
        backend.train_lockstep(net, weights, data, schedule, lengths, part)
        for trainer, positions in zip(trainers, rows):
            trainer.advance(len(part), len(positions), len(positions))
        done += len(part)
    for k, trainer in enumerate(trainers):
        trainer.weights[:] = weights[:, k]
    return [np.ascontiguousarray(history[:, k]) for k in range(n_nets)]
