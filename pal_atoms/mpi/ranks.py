"""Loops of the worker ranks: prediction, oracle and generator (training: ``training.py``).

Each loop waits on the controller without spinning (:func:`~pal_atoms.mpi.comm.recv`),
does its kernel's work, and leaves on ``STOP`` after a ``DONE`` message. User code (oracle,
generator) runs guarded: an exception becomes a recorded failure or a generator restart,
never a dead rank.

A generator rank holding several generators runs each in a thread and sends their
geometries to the controller together (:class:`BatchingClient`): one message and one
round trip per round of steps, not per generator step.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.errors import PalAtomsError
from pal_atoms.label import Label, LabelStatus
from pal_atoms.mpi.codec import (
    decode_predictions,
    decode_structures,
    encode_predictions,
    encode_structures,
    prediction_records,
    read_prediction,
)
from pal_atoms.mpi.comm import Backoff, Tag, recv, send_array
from pal_atoms.protocols import Verdict

__all__ = [
    "BatchingClient",
    "MPIClient",
    "deserialize_weights",
    "generator_rank",
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
    """Serve batched committee predictions; load new weights; checkpoint if asked."""
    from pal_atoms.metrics import force_mae

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
        elif msg.tag is Tag.WEIGHTS:
            weights, members = deserialize_weights(msg.payload)
            committee.set_weights(weights, members=members)
            if checkpoint is not None:
                committee.save(checkpoint)
                info: dict[str, Any] = {"event": "checkpoint", "path": str(checkpoint)}
                if test_set:
                    info["test_force_mae"] = force_mae(committee, list(test_set))
                comm.send(info, dest=ctrl, tag=Tag.LOG)
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
    backoff = Backoff(max_sleep_s=ORACLE_IDLE_SLEEP_S)
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


class _StopRequested(Exception):
    """Raised inside a generator's step when the controller says stop."""


class MPIClient:
    """:class:`~pal_atoms.protocols.PredictionClient` of a rank with one generator."""

    def __init__(self, comm: Any, ctrl: int):
        self.comm, self.ctrl = comm, ctrl
        self.backoff = Backoff(min_sleep_s=5e-6, max_sleep_s=1e-3)
        self.stop: dict[str, Any] | None = None

    def evaluate(
        self, atoms: Atoms, *, generator_id: int = 0, step: int = 0
    ) -> tuple[dict[str, Any], Verdict]:
        """Send the geometry to the controller and wait for prediction and verdict."""
        if self.stop is not None:
            raise _StopRequested
        send_array(
            self.comm, encode_structures([(atoms, generator_id, step)]), self.ctrl, Tag.PREDICT
        )
        msg = recv(self.comm, source=self.ctrl, backoff=self.backoff)
        assert msg is not None
        self.backoff.reset()
        if msg.tag is Tag.STOP:
            self.stop = msg.payload
            raise _StopRequested
        ((results, verdict),) = decode_predictions(msg.payload)
        return results, verdict or Verdict.UNTRUSTED


class _Pending:
    """One ``evaluate`` call of a generator thread, waiting for its prediction record."""

    __slots__ = ("ready", "record", "reply")

    def __init__(self, record: np.ndarray):
        self.record = record
        self.reply: np.ndarray | None = None
        self.ready = threading.Lock()
        self.ready.acquire()  # released by the rank's main thread with the reply


class BatchingClient:
    """:class:`~pal_atoms.protocols.PredictionClient` shared by several generators on a rank.

    Every generator runs in its own thread; ``evaluate`` queues the geometry and blocks.
    Once every running generator waits (or has finished), the rank's main thread sends
    all queued geometries to the controller in one message and hands each generator its
    record of the one reply. The generators of a rank therefore advance in lock step,
    one round trip per step for all of them, instead of one round trip per generator;
    ranks stay independent of each other. Only the main thread talks MPI.

    Args:
        comm: The communicator.
        ctrl: Rank of the controller.
        generators: This rank's generators (one thread each, started by :meth:`run`).
        state_interval_s: Send the generators' states to the controller this often (s).
    """

    def __init__(
        self, comm: Any, ctrl: int, generators: Sequence[Any], *, state_interval_s: float
    ):
        self.comm, self.ctrl = comm, ctrl
        self.generators = list(generators)
        self.state_interval_s = state_interval_s
        self.backoff = Backoff(min_sleep_s=5e-6, max_sleep_s=1e-3)
        self.stop: dict[str, Any] | None = None
        self.steps = dict.fromkeys((g.generator_id for g in generators), 0)
        self._lock = threading.Lock()
        self._all_waiting = threading.Condition(self._lock)
        self._running = 0  # threads alive and not blocked in evaluate
        self._queued: list[_Pending] = []
        self._error: BaseException | None = None
        self._live: set[int] = set()
        self._want_states = False
        self._states: dict[int, Any] = {}

    # -- generator threads ----------------------------------------------------------------
    def evaluate(
        self, atoms: Atoms, *, generator_id: int = 0, step: int = 0
    ) -> tuple[dict[str, Any], Verdict]:
        """Queue the geometry for the rank's next message; wait for prediction and verdict."""
        pending = _Pending(encode_structures([(atoms, generator_id, step)]))
        with self._lock:
            if self.stop is not None:
                raise _StopRequested
            self._queued.append(pending)
            self._running -= 1
            if self._running == 0:
                self._all_waiting.notify()
        pending.ready.acquire()
        if pending.reply is None:  # released without an answer: the run is stopping
            raise _StopRequested
        results, verdict = read_prediction(pending.reply)
        return results, verdict or Verdict.UNTRUSTED

    def _drive(self, generator: Any, initial: dict[str, Any]) -> None:
        """Thread body: step one generator until it finishes or the run stops."""
        gid = generator.generator_id
        try:
            steps = generator.irun(self)
            while True:
                try:
                    next(steps)
                except StopIteration:
                    return
                except _StopRequested:
                    return
                except (PalAtomsError, ArithmeticError, ValueError, RuntimeError) as exc:
                    logger.warning(
                        "generator %d failed (%s: %s); restarting it", gid, type(exc).__name__, exc
                    )
                    generator.restore(initial)
                    steps = generator.irun(self)
                    continue
                self.steps[gid] += 1
                if self._want_states:  # between steps: the state is consistent
                    state = generator.state()
                    with self._lock:
                        self._states[gid] = state
        except BaseException as exc:  # a bug in user code: the main thread re-raises it
            self._error = exc
        finally:
            with self._lock:
                self._live.discard(gid)
                self._running -= 1
                if self._running == 0:
                    self._all_waiting.notify()

    # -- main thread ----------------------------------------------------------------------
    def _next_batch(self) -> list[_Pending]:
        """Wait until no generator thread runs; take the queued geometries."""
        with self._lock:
            while self._running > 0 and self._error is None:
                self._all_waiting.wait()
            batch, self._queued = self._queued, []
            return batch

    def _release(self, batch: list[_Pending], replies: Sequence[np.ndarray] | None) -> None:
        with self._lock:
            self._running += len(batch)
        for i, pending in enumerate(batch):
            pending.reply = None if replies is None else replies[i]
            pending.ready.release()

    def _maybe_send_states(self, last: float) -> float:
        now = time.monotonic()
        if not self._want_states and now - last > self.state_interval_s:
            with self._lock:
                self._states = {}
                self._want_states = True
        if self._want_states:
            with self._lock:
                complete = self._live <= set(self._states)
                states = dict(self._states) if complete else None
            if states is not None:
                self._want_states = False
                self.comm.send({"event": "states", "states": states}, dest=self.ctrl, tag=Tag.LOG)
                return now
        return last

    def run(self) -> None:
        """Start the generator threads and serve their predictions until stopped.

        Returns when every generator finished or the controller said stop; raises the
        first unexpected exception of a generator thread.
        """
        initial = {g.generator_id: g.state() for g in self.generators}
        threads = [
            threading.Thread(
                target=self._drive,
                args=(g, initial[g.generator_id]),
                name=f"generator-{g.generator_id}",
                daemon=True,  # a thread stuck in user code must not keep the rank alive
            )
            for g in self.generators
        ]
        self._running = len(threads)
        self._live = set(self.steps)
        for t in threads:
            t.start()
        last_states = time.monotonic()
        while True:
            batch = self._next_batch()
            if self._error is not None:
                raise self._error
            if not batch:  # every generator finished
                break
            last_states = self._maybe_send_states(last_states)
            send_array(
                self.comm, np.concatenate([p.record for p in batch]), self.ctrl, Tag.PREDICT
            )
            msg = recv(self.comm, source=self.ctrl, backoff=self.backoff)
            assert msg is not None
            self.backoff.reset()
            if msg.tag is Tag.STOP:
                self.stop = msg.payload
                self._release(batch, None)
                break
            self._release(batch, prediction_records(msg.payload))
        for t in threads:  # a stopped generator leaves at its next evaluate
            t.join()
        if self._error is not None:
            raise self._error


def generator_rank(
    comm: Any, ctrl: int, generators: Sequence[Any], *, state_interval_s: float = 60.0
) -> None:
    """Run this rank's generators until the controller says stop.

    One generator runs on the main thread; several run in threads of a
    :class:`BatchingClient`, so the rank sends one message per round of steps.
    """
    if len(generators) > 1:
        client: MPIClient | BatchingClient = BatchingClient(
            comm, ctrl, generators, state_interval_s=state_interval_s
        )
        client.run()
        steps = sum(client.steps.values())
    else:
        client = MPIClient(comm, ctrl)
        steps = _run_one(comm, ctrl, client, generators, state_interval_s)
    if client.stop is None:
        # Every generator finished on its own: report, then wait for the stop.
        comm.send({"role": "generator", "finished": True}, dest=ctrl, tag=Tag.LOG)
        while client.stop is None:
            msg = recv(comm, source=ctrl, backoff=client.backoff)
            if msg is not None and msg.tag is Tag.STOP:
                client.stop = msg.payload
    states = {g.generator_id: g.state() for g in generators}
    comm.send({"role": "generator", "steps": steps, "states": states}, dest=ctrl, tag=Tag.DONE)


def _run_one(
    comm: Any, ctrl: int, client: MPIClient, generators: Sequence[Any], state_interval_s: float
) -> int:
    """Step the generators (at most one, or none) on the main thread; return the steps."""
    initial = {g.generator_id: g.state() for g in generators}
    iters = {g.generator_id: g.irun(client) for g in generators}
    by_id = {g.generator_id: g for g in generators}
    steps = 0
    last_states = time.monotonic()
    try:
        while iters:
            for gid in list(iters):
                try:
                    next(iters[gid])
                    steps += 1
                except StopIteration:
                    del iters[gid]
                except _StopRequested:
                    raise
                except (PalAtomsError, ArithmeticError, ValueError, RuntimeError) as exc:
                    logger.warning(
                        "generator %d failed (%s: %s); restarting it", gid, type(exc).__name__, exc
                    )
                    by_id[gid].restore(initial[gid])
                    iters[gid] = by_id[gid].irun(client)
            if time.monotonic() - last_states > state_interval_s:
                comm.send(
                    {"event": "states", "states": {g.generator_id: g.state() for g in generators}},
                    dest=ctrl,
                    tag=Tag.LOG,
                )
                last_states = time.monotonic()
    except _StopRequested:
        pass
    return steps
