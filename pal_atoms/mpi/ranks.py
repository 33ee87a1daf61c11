"""Loops of the prediction and oracle ranks (generators and training: own modules).

Each loop waits on the controller without spinning (:func:`~pal_atoms.mpi.comm.recv`),
does its kernel's work, and leaves on ``STOP`` after a ``DONE`` message. User code (oracle,
generator) runs guarded: an exception becomes a recorded failure or a generator restart,
never a dead rank.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.label import Label, LabelStatus
from pal_atoms.mpi.codec import (
    decode_structures,
    encode_predictions,
)
from pal_atoms.mpi.comm import Backoff, Tag, recv, send_array

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


def _predict_safely(committee: Any, frames: list[Atoms]) -> list[dict[str, Any]]:
    try:
        return list(committee.predict_batch(frames))
    except Exception:  # one bad structure must not fail the others
        out = []
        for a in frames:
            try:
                out.append(committee.predict_batch([a])[0])
            except Exception as exc:
                logger.warning("prediction failed (%s); answering untrusted", exc)
                n = len(a)
                out.append(
                    {
                        "energy": 0.0,
                        "forces": np.zeros((n, 3)),
                        "energy_std": np.inf,
                        "max_force_std": np.inf,
                        "forces_std": np.full(n, np.inf),
                    }
                )
        return out


def prediction_rank(
    comm: Any,
    ctrl: int,
    committee: Any,
    *,
    checkpoint: Path | None = None,
    test_set: Sequence[Atoms] = (),
) -> None:
    """Serve batched committee predictions; load published weights; checkpoint if asked.

    Validation labels (TRAIN_DATA from the controller) are kept: after each publish the
    calibration of the spread is refitted on them (:func:`apply_published`, the same
    call as in one process). With a test set, the starting committee's held-out force
    error is reported first, so the learning curve begins at the committee the run
    started from; the rank with the checkpoint reports each publish to the controller.
    """
    from pal_atoms.metrics import force_mae
    from pal_atoms.mpi.codec import decode_labels
    from pal_atoms.publishing import apply_published

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
            frames = [a for a, _, _ in decode_structures(msg.payload)]
            results = _predict_safely(committee, frames)
            reply = Tag.BATCH_RESULT if msg.tag is Tag.BATCH else Tag.RESCORE_RESULT
            send_array(comm, encode_predictions(results, [None] * len(results)), ctrl, reply)
        elif msg.tag is Tag.TRAIN_DATA:
            validation += decode_labels(msg.payload)
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
        ((atoms, gid, step),) = decode_structures(msg.payload[:-1])
        t0 = time.perf_counter()
        try:
            label = label_fn(atoms, oracle, timeout_s=timeout_s, isolate=isolate)
        except Exception as exc:  # invalid input found by the oracle's checks, or a bug
            label = Label(
                atoms=atoms,
                status=LabelStatus.FAILED,
                error=f"{type(exc).__name__}: {exc}",
                wall_time_s=time.perf_counter() - t0,
                oracle=getattr(oracle, "name", ""),
                method=getattr(oracle, "method", ""),
            )
        control = {
            "status": label.status.value,
            "error": label.error,
            "wall_time_s": label.wall_time_s,
            "oracle": label.oracle,
            "method": label.method,
            "settings": label.settings,
            "attempts": label.attempts,
            "generator_id": gid,
            "step": step,
            "uncertainty": float(msg.payload[-1]),
            "info": dict(label.atoms.info),
        }
        comm.send(control, dest=ctrl, tag=Tag.LABEL_DONE)
        if label.ok:
            data = np.concatenate([[label.energy], np.asarray(label.forces).ravel()])
            send_array(comm, data, ctrl, Tag.LABEL_DATA)
