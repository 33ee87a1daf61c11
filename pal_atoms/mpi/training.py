"""Loop of a training rank: collect labels, train its members, send the weights."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ase import Atoms

from pal_atoms.mpi.codec import decode_labels
from pal_atoms.mpi.comm import Backoff, Tag, recv, send_array
from pal_atoms.mpi.ranks import serialize_weights

__all__ = ["training_rank"]

logger = logging.getLogger(__name__)


def training_rank(
    comm: Any, ctrl: int, committee: Any, trainer: Any, *, members: Sequence[int], retrain_size: int
) -> None:
    """Collect labels; train ``members`` once ``retrain_size`` new ones arrived; send weights."""
    labels: list[Atoms] = []
    new = 0
    backoff = Backoff(max_sleep_s=0.05)
    rounds = 0
    while True:
        msg = recv(comm, source=ctrl, backoff=backoff)
        assert msg is not None
        if msg.tag is Tag.TRAIN_DATA:
            arrived = decode_labels(msg.payload)
            labels += arrived
            new += len(arrived)
        elif msg.tag is Tag.STOP:
            comm.send({"role": "training", "rounds": rounds}, dest=ctrl, tag=Tag.DONE)
            return
        if new >= retrain_size:
            # Pick up whatever else arrived meanwhile before starting the round.
            while (more := recv(comm, source=ctrl, tag=Tag.TRAIN_DATA, timeout_s=0)) is not None:
                labels += decode_labels(more.payload)
            t0 = time.perf_counter()
            trainer.train(labels, members=list(members))
            rounds += 1
            new = 0
            weights = committee.get_weights()
            send_array(
                comm, serialize_weights([weights[m] for m in members], members), ctrl, Tag.WEIGHTS
            )
            comm.send(
                {
                    "event": "trained",
                    "round": rounds,
                    "labels": len(labels),
                    "members": list(members),
                    "time_s": time.perf_counter() - t0,
                },
                dest=ctrl,
                tag=Tag.LOG,
            )
