"""Loop of a generator rank: step its generators, get predictions through the controller.

A generator rank holding several generators runs each in a thread and sends their
geometries to the controller together (:class:`BatchingClient`): one message and one
round trip per round of steps, not per generator step. User code runs guarded: an
exception restarts that generator (:class:`~pal_atoms.workflow.guards.GuardedGenerator`,
the same step as in one process), never kills the rank.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.guards import GuardedGenerator, StepOutcome
from pal_atoms.workflow.mpi import codec as atoms_codec
from pal_atoms.workflow.mpi.comm import Backoff, Tag, recv, send_array

__all__ = ["BatchingClient", "MPIClient", "generator_rank"]

logger = logging.getLogger(__name__)


class _StopRequested(Exception):
    """Raised inside a generator's step when the controller says stop."""


class MPIClient:
    """:class:`~pal_atoms.core.protocols.PredictionClient` of a rank with one generator."""

    def __init__(self, comm: Any, ctrl: int, codec: Any = atoms_codec):
        self.comm, self.ctrl, self.codec = comm, ctrl, codec
        self.backoff = Backoff(min_sleep_s=5e-6, max_sleep_s=1e-3)
        self.stop: dict[str, Any] | None = None

    def evaluate(
        self, atoms: Atoms, *, generator_id: int = 0, step: int = 0
    ) -> tuple[dict[str, Any], Verdict]:
        """Send the geometry to the controller and wait for prediction and verdict."""
        if self.stop is not None:
            raise _StopRequested
        send_array(
            self.comm,
            self.codec.encode_structures([(atoms, generator_id, step)]),
            self.ctrl,
            Tag.PREDICT,
        )
        msg = recv(self.comm, source=self.ctrl, backoff=self.backoff)
        assert msg is not None
        self.backoff.reset()
        if msg.tag is Tag.STOP:
            self.stop = msg.payload
            raise _StopRequested
        ((results, verdict),) = self.codec.decode_predictions(msg.payload)
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
    """:class:`~pal_atoms.core.protocols.PredictionClient` shared by several generators on a rank.

    Every generator runs in its own thread; ``evaluate`` queues the geometry and blocks.
    Once every running generator waits (or has finished), the rank's main thread sends
    all queued geometries to the controller in one message and hands each generator its
    record of the one reply. The generators of a rank therefore advance in lock step,
    one round trip per step for all of them, instead of one round trip per generator;
    ranks stay independent of each other. Only the main thread talks MPI. Generator code
    therefore runs in a worker thread (it must not install signal handlers); Python runs
    one thread at a time, so the steps themselves are not concurrent.

    Args:
        comm: The communicator.
        ctrl: Rank of the controller.
        generators: This rank's generators (one thread each, started by :meth:`run`).
        state_interval_s: Send the generators' states to the controller this often (s).
        codec: How structures and predictions travel (the atomistic codec, or a generic
            ensemble's :class:`~pal_atoms.generic.codec.SampleCodec`).
    """

    def __init__(
        self,
        comm: Any,
        ctrl: int,
        generators: Sequence[Any],
        *,
        state_interval_s: float,
        codec: Any = atoms_codec,
    ):
        self.comm, self.ctrl, self.codec = comm, ctrl, codec
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
        pending = _Pending(self.codec.encode_structures([(atoms, generator_id, step)]))
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
        results, verdict = self.codec.read_prediction(pending.reply)
        return results, verdict or Verdict.UNTRUSTED

    def _drive(self, guard: GuardedGenerator) -> None:
        """Thread body: step one generator until it finishes or the run stops."""
        gid = guard.generator_id
        generator = guard.generator
        try:
            while True:
                try:
                    outcome = guard.step()
                except _StopRequested:
                    return
                if outcome is StepOutcome.FINISHED:
                    return
                self.steps[gid] = guard.steps
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
        guards = [GuardedGenerator(g, self) for g in self.generators]
        threads = [
            threading.Thread(
                target=self._drive,
                args=(g,),
                name=f"generator-{g.generator_id}",
                daemon=True,  # a thread stuck in user code must not keep the rank alive
            )
            for g in guards
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
            send_array(self.comm, np.concatenate([p.record for p in batch]), self.ctrl, Tag.PREDICT)
            msg = recv(self.comm, source=self.ctrl, backoff=self.backoff)
            assert msg is not None
            self.backoff.reset()
            if msg.tag is Tag.STOP:
                self.stop = msg.payload
                self._release(batch, None)
                break
            self._release(batch, self.codec.prediction_records(msg.payload))
        for t in threads:  # a stopped generator leaves at its next evaluate
            t.join()
        if self._error is not None:
            raise self._error


def generator_rank(
    comm: Any,
    ctrl: int,
    generators: Sequence[Any],
    *,
    state_interval_s: float = 60.0,
    codec: Any = atoms_codec,
) -> None:
    """Run this rank's generators until the controller says stop.

    One generator runs on the main thread; several run in threads of a
    :class:`BatchingClient`, so the rank sends one message per round of steps.
    """
    client: MPIClient | BatchingClient
    try:
        if len(generators) > 1:
            batching = BatchingClient(
                comm, ctrl, generators, state_interval_s=state_interval_s, codec=codec
            )
            client = batching
            batching.run()
            steps = sum(batching.steps.values())
        else:
            single = MPIClient(comm, ctrl, codec)
            client = single
            steps = _run_one(comm, ctrl, single, generators, state_interval_s)
    except Exception as exc:  # a bug in user code: the controller ends the run in order
        logger.exception("generator rank failed")
        comm.send(
            {"event": "error", "error": f"{type(exc).__name__}: {exc}"}, dest=ctrl, tag=Tag.LOG
        )
        steps = sum(client.steps.values()) if isinstance(client, BatchingClient) else 0
    if client.stop is None:
        # Every generator finished on its own (or failed): report, then wait for the stop.
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
    guards = [GuardedGenerator(g, client) for g in generators]
    live = list(guards)
    last_states = time.monotonic()
    try:
        while live:
            for guard in list(live):
                if guard.step() is StepOutcome.FINISHED:
                    live.remove(guard)
            if time.monotonic() - last_states > state_interval_s:
                comm.send(
                    {"event": "states", "states": {g.generator_id: g.state() for g in generators}},
                    dest=ctrl,
                    tag=Tag.LOG,
                )
                last_states = time.monotonic()
    except _StopRequested:
        pass
    return sum(g.steps for g in guards)
