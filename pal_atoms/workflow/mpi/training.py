"""Loops of a training rank: continuous (:func:`stream_rank`) or in rounds (:func:`training_rank`).

Continuous: labels join the trainer the moment they arrive; the rank trains without
stopping and sends a member's weights whenever its validation error improved. Rounds:
collect labels, train once ``retrain_size`` new ones arrived, send the weights.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

from ase import Atoms

from pal_atoms.workflow.mpi import codec as atoms_codec
from pal_atoms.workflow.mpi.comm import Backoff, Tag, recv, send_array
from pal_atoms.workflow.mpi.ranks import serialize_weights
from pal_atoms.workflow.summary import urgent_stop

__all__ = ["stream_rank", "training_rank"]

logger = logging.getLogger(__name__)


def _drain(comm: Any, ctrl: int, labels: list[Atoms], codec: Any = atoms_codec) -> list[Atoms]:
    """Append every label message waiting from the controller to ``labels``; return them."""
    extra: list[Atoms] = []
    while (more := recv(comm, source=ctrl, tag=Tag.TRAIN_DATA, timeout_s=0)) is not None:
        extra += codec.decode_labels(more.payload)
    labels.extend(extra)
    return extra


def _urgent(payload: Any) -> bool:
    """Whether a STOP payload asks to stop now (time limit, signal, stop file)."""
    return isinstance(payload, dict) and urgent_stop(payload.get("criterion", ""))


def stream_rank(comm: Any, ctrl: int, trainer: Any) -> None:
    """Train ``trainer``'s members without stopping until the controller says STOP.

    Between chunks of ``eval_every_steps`` optimizer steps the rank takes in every label
    that has arrived (so new data join within one chunk, a few seconds), sends each
    publish as a WEIGHTS message, and reports its progress (``stream`` log event, with
    :meth:`~pal_atoms.calculators.StreamingTrainer.state`). With no labels yet it waits
    without spinning.
    """
    chunk = trainer.settings.eval_every_steps
    backoff = Backoff(max_sleep_s=0.05)
    while True:
        msg = recv(comm, source=ctrl, backoff=backoff, timeout_s=None if not trainer.n_train else 0)
        while msg is not None:
            if msg.tag is Tag.TRAIN_DATA:
                trainer.add(atoms_codec.decode_labels(msg.payload))
            elif msg.tag is Tag.STOP:
                comm.send(
                    {"role": "training", "steps": trainer.step, "publishes": trainer.publishes},
                    dest=ctrl,
                    tag=Tag.DONE,
                )
                return
            msg = recv(comm, source=ctrl, timeout_s=0)
        backoff.reset()
        t0 = time.perf_counter()
        for pub in trainer.train_steps(chunk):
            send_array(comm, serialize_weights(pub.weights, pub.members), ctrl, Tag.WEIGHTS)
        comm.send(
            {"event": "stream", "time_s": time.perf_counter() - t0, "state": trainer.state()},
            dest=ctrl,
            tag=Tag.LOG,
        )


def training_rank(
    comm: Any,
    ctrl: int,
    committee: Any,
    trainer: Any,
    *,
    members: Sequence[int],
    retrain_size: int,
    codec: Any = atoms_codec,
) -> None:
    """Collect labels; train ``members`` once ``retrain_size`` new ones arrived; send weights.

    Labels that arrive while a round trains join it between epochs (``more_labels``), so
    a round is never stale by the time it ends; they do not count towards the next round.
    When the run stops, labels that arrived since the last round get a last round, as in
    the serial workflow, unless the stop is urgent (time limit, signal, stop file).
    """
    labels: list[Atoms] = []
    new = 0
    backoff = Backoff(max_sleep_s=0.05)
    rounds = 0
    while True:
        msg = recv(comm, source=ctrl, backoff=backoff)
        if msg is None:  # recv without a timeout only returns a message; be safe anyway
            continue
        if msg.tag is Tag.TRAIN_DATA:
            arrived = codec.decode_labels(msg.payload)
            labels += arrived
            new += len(arrived)
        elif msg.tag is Tag.STOP:
            new += len(_drain(comm, ctrl, labels, codec))
            if new and not _urgent(msg.payload):
                logger.info("last round on %d labels (%d new) before stopping", len(labels), new)
                rounds += 1
                _train_round(
                    comm,
                    ctrl,
                    committee,
                    trainer,
                    labels=labels,
                    members=members,
                    round_no=rounds,
                    codec=codec,
                )
            comm.send({"role": "training", "rounds": rounds}, dest=ctrl, tag=Tag.DONE)
            return
        if new >= retrain_size:
            _drain(comm, ctrl, labels, codec)
            rounds += 1
            _train_round(
                comm,
                ctrl,
                committee,
                trainer,
                labels=labels,
                members=members,
                round_no=rounds,
                codec=codec,
            )
            new = 0


def _train_round(
    comm: Any,
    ctrl: int,
    committee: Any,
    trainer: Any,
    *,
    labels: list[Atoms],
    members: Sequence[int],
    round_no: int,
    codec: Any = atoms_codec,
) -> None:
    """Train ``members`` on ``labels`` (and later arrivals), send the weights and a log."""
    t0 = time.perf_counter()
    n_before = len(labels)
    # A user's trainer may not take ``more_labels``: it then trains on the round's
    # labels alone, and later arrivals wait for the next round.
    extra = (
        {"more_labels": functools.partial(_drain, comm, ctrl, labels, codec)}
        if "more_labels" in inspect.signature(trainer.train).parameters
        else {}
    )
    trainer.train(list(labels), members=list(members), **extra)
    if len(labels) > n_before:
        logger.info("round %d picked up %d labels while training", round_no, len(labels) - n_before)
    weights = committee.get_weights()
    send_array(comm, serialize_weights([weights[m] for m in members], members), ctrl, Tag.WEIGHTS)
    comm.send(
        {
            "event": "trained",
            "round": round_no,
            "labels": len(labels),
            "members": list(members),
            "time_s": time.perf_counter() - t0,
        },
        dest=ctrl,
        tag=Tag.LOG,
    )
