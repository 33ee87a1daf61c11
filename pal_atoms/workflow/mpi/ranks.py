"""Loops of the prediction and oracle ranks (generators and training: own modules).

Each loop waits on the controller without spinning (:func:`~pal_atoms.workflow.mpi.comm.recv`),
does its kernel's work, and leaves on ``STOP`` after a ``DONE`` message. User code (oracle,
generator) runs guarded: an exception becomes a recorded failure or a generator restart,
never a dead rank.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.label import Label
from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.guards import label_guarded
from pal_atoms.workflow.mpi import codec as atoms_codec
from pal_atoms.workflow.mpi.comm import Backoff, Tag, recv, send_array
from pal_atoms.workflow.prediction import failed_prediction, predict_guarded

__all__ = [
    "deserialize_weights",
    "oracle_rank",
    "prediction_rank",
    "serialize_weights",
]

logger = logging.getLogger(__name__)

#: Longest sleep (s) of an idle oracle rank between polls: the pickup delay of the first
#: label after an idle stretch, against one ``Iprobe`` per rank per interval.
ORACLE_IDLE_SLEEP_S = 0.02


def serialize_weights(weights: list[dict[str, Any]], members: Sequence[int]) -> np.ndarray:
    """State dicts as a uint8 buffer (torch format; loaded back with ``weights_only``)."""
    import torch

    buf = io.BytesIO()
    torch.save({"members": list(members), "weights": weights}, buf)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def deserialize_weights(data: np.ndarray) -> tuple[list[dict[str, Any]], list[int]]:
    """Inverse of :func:`serialize_weights`; never unpickles code."""
    import torch

    obj = torch.load(io.BytesIO(data.tobytes()), map_location="cpu", weights_only=True)
    return obj["weights"], [int(m) for m in obj["members"]]


def prediction_rank(
    comm: Any,
    ctrl: int,
    committee: Any,
    *,
    checkpoint: Path | None = None,
    test_set: Sequence[Atoms] = (),
    codec: Any = atoms_codec,
) -> None:
    """Serve batched committee predictions; load published weights; checkpoint if asked.

    Validation labels (TRAIN_DATA from the controller) are kept: after each publish the
    calibration of the spread is refitted on them (:func:`apply_published`, the same
    call as in one process). With a test set, the starting committee's held-out force
    error is reported first, so the learning curve begins at the committee the run
    started from; the rank with the checkpoint reports each publish to the controller.
    """
    from pal_atoms.workflow.metrics import force_mae
    from pal_atoms.workflow.publishing import apply_published

    validation: list[Atoms] = []

    if test_set and checkpoint is not None:
        comm.send(
            {"event": "baseline", "test_force_mae": force_mae(committee, list(test_set))},
            dest=ctrl,
            tag=Tag.LOG,
        )
    backoff = Backoff()
    while True:
        msg = recv(comm, source=ctrl, backoff=backoff)
        assert msg is not None
        backoff.reset()
        if msg.tag in (Tag.BATCH, Tag.RESCORE):
            frames = [a for a, _, _ in codec.decode_structures(msg.payload)]
            guarded = predict_guarded(committee, frames)
            results = [
                r or failed_prediction(len(a), committee, a)
                for r, a in zip(guarded, frames, strict=True)
            ]
            verdicts = [None if r is not None else Verdict.FAILED for r in guarded]
            reply = Tag.BATCH_RESULT if msg.tag is Tag.BATCH else Tag.RESCORE_RESULT
            send_array(comm, codec.encode_predictions(results, verdicts), ctrl, reply)
        elif msg.tag is Tag.TRAIN_DATA:
            validation += codec.decode_labels(msg.payload)
        elif msg.tag is Tag.WEIGHTS:
            weights, members = deserialize_weights(msg.payload)
            info = apply_published(
                committee,
                weights,
                members,
                validation=validation,
                checkpoint=checkpoint,
                test_set=test_set if checkpoint is not None else (),
            )
            if checkpoint is not None:
                comm.send({"event": "published", "info": info}, dest=ctrl, tag=Tag.LOG)
        elif msg.tag is Tag.STOP:
            comm.send({"role": "prediction"}, dest=ctrl, tag=Tag.DONE)
            return


def oracle_rank(
    comm: Any,
    ctrl: int,
    oracle: Any,
    label_fn: Callable[..., Label],
    *,
    timeout_s: float | None,
    isolate: bool,
    codec: Any = atoms_codec,
) -> None:
    """Label structures one at a time; failures become labels with a status."""
    # Right after a label the next one usually follows at once (fast polls after the
    # reset); an oracle idle for long polls only every ORACLE_IDLE_SLEEP_S, so even many
    # idle oracle ranks on an oversubscribed node cost almost no CPU.
    backoff = Backoff(max_sleep_s=ORACLE_IDLE_SLEEP_S, active_sleep_s=5e-4, active_s=0.01)
    while True:
        msg = recv(comm, source=ctrl, backoff=backoff)
        assert msg is not None
        backoff.reset()
        if msg.tag is Tag.STOP:
            comm.send({"role": "oracle"}, dest=ctrl, tag=Tag.DONE)
            return
        if msg.tag is not Tag.LABEL:
            continue
        ((atoms, gid, step),) = codec.decode_structures(msg.payload[:-1])
        label = label_guarded(label_fn, atoms, oracle, timeout_s=timeout_s, isolate=isolate)
        control, data = codec.label_message(
            label, generator_id=gid, step=step, uncertainty=float(msg.payload[-1])
        )
        comm.send(control, dest=ctrl, tag=Tag.LABEL_DONE)
        if data is not None:
            send_array(comm, data, ctrl, Tag.LABEL_DATA)
