"""The controller rank: routes predictions, judges them, feeds oracles and trainers.

Event-driven: the controller reacts to whatever message arrives first (``Iprobe`` with a
backing-off sleep when idle), so a slow generator rank never gates the others (the
generators sharing one rank advance together, see
:class:`~pal_atoms.workflow.mpi.generators.BatchingClient`), each selected structure goes
to the first free oracle at once, and new weights reach the prediction ranks as soon as a training
round ends. Only the controller writes the label store.
Outgoing messages are non-blocking (``Isend``), so the controller never waits on a rank
that is itself sending to it.

Predictions are routed in bulk: a generator rank sends the structures of all its
generators in one PREDICT message; the controller handles everything that has arrived
before it dispatches, forwards the structure records unchanged to free prediction ranks
(up to :data:`MAX_BATCH` per batch), judges each prediction, and answers every request
with one RESULT message holding the prediction records in request order, each with its
verdict written in.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from pal_atoms.core.label import Label
from pal_atoms.core.protocols import StopCriterion, Verdict
from pal_atoms.store import LabelStore
from pal_atoms.workflow.metrics import MetricsLog
from pal_atoms.workflow.mpi.accounting import RankAccounting, rss_mb
from pal_atoms.workflow.mpi.comm import Backoff, Message, Tag, probe
from pal_atoms.workflow.mpi.layout import Layout, Role
from pal_atoms.workflow.oracle_queue import Candidate
from pal_atoms.workflow.selection import score

if TYPE_CHECKING:
    from pal_atoms.workflow.serial import ActiveLearning

__all__ = ["MPIController"]

logger = logging.getLogger(__name__)

#: Most structures in one prediction batch.
MAX_BATCH = 512
#: Most messages handled before the controller dispatches: everything that arrived
#: together goes into one prediction batch, yet dispatching is never held up for long.
MAX_DRAIN = 256


class _Request:
    """One PREDICT message of a generator rank: its records' replies, filled in as they come.

    A generator rank sends the structures of all its generators in one message and gets
    all their predictions back in one RESULT message, in the same order.
    """

    __slots__ = ("missing", "replies")

    def __init__(self, n: int):
        self.replies: list[np.ndarray | None] = [None] * n
        self.missing = n


class MPIController:
    """State and event loop of the controller rank (see the module docstring)."""

    def __init__(self, al: ActiveLearning, comm: Any, layout: Layout):
        self.al, self.comm = al, comm
        self.codec = al.codec  # structures, or a generic ensemble's samples
        size = comm.Get_size()
        self.predictors = layout.ranks(size, Role.PREDICTION)
        self.oracles = layout.ranks(size, Role.ORACLE)
        self.trainers = layout.ranks(size, Role.TRAINING)
        self.generators = layout.ranks(size, Role.GENERATOR)
        self.free_pred: deque[int] = deque(self.predictors)
        self.free_oracles: deque[int] = deque(self.oracles)
        # Structure records waiting for a prediction rank: (generator rank, request, slot,
        # record). Records are forwarded as they arrived, never decoded and re-encoded.
        self.pending: list[tuple[int, _Request, int, np.ndarray]] = []
        self.in_flight: dict[int, list[tuple[int, _Request, int, np.ndarray]]] = {}
        # Open requests per generator rank, oldest first: replies leave in request order
        # even when two prediction ranks finish out of order.
        self.requests: dict[int, deque[_Request]] = {}
        self.rescoring: dict[int, list[Candidate]] = {}
        self.busy_oracles: dict[int, tuple[Candidate, float]] = {}
        self.oracle_busy_s = 0.0
        # Labels received but not yet in the store: written in one batch per pass of the
        # loop (one HDF5 write for all of them, see _store_labels).
        self.unstored: list[tuple[Label, Candidate]] = []
        self.outbox: list[tuple[Any, np.ndarray]] = []
        self.done: set[int] = set()
        self.stopping = False
        self.generator_states: dict[str, Any] = {}
        self.generator_steps = 0  # reported by the generator ranks as they stop
        self.rank_error = ""
        self.gen_finished: set[int] = set()
        self.accounting = RankAccounting(layout.roles(size))
        self.validation_every = al.validation_every
        self.t_start = time.monotonic()

    # -- sending ------------------------------------------------------------------------------
    def _isend(self, array: np.ndarray, dest: int, tag: Tag) -> None:
        from mpi4py import MPI

        buf = np.ascontiguousarray(array)
        kind = MPI.BYTE if buf.dtype == np.uint8 else MPI.DOUBLE
        self.outbox.append((self.comm.Isend([buf, kind], dest=dest, tag=tag), buf))

    def _flush_outbox(self) -> None:
        self.outbox = [(req, buf) for req, buf in self.outbox if not req.Test()]

    # -- handlers -----------------------------------------------------------------------------
    def handle(self, msg: Message, store: LabelStore) -> None:
        """React to one message."""
        tag, src = msg.tag, msg.source
        if tag is Tag.PREDICT:
            if not self.stopping:
                records = self.codec.structure_records(msg.payload)
                self.accounting.steps(src, len(records))
                req = _Request(len(records))
                self.requests.setdefault(src, deque()).append(req)
                self.pending += [(src, req, i, r) for i, r in enumerate(records)]
        elif tag is Tag.BATCH_RESULT:
            self._on_predictions(src, msg.payload)
        elif tag is Tag.LABEL_DONE:
            self._on_label(src, msg.payload, store)
        elif tag is Tag.WEIGHTS:
            for p in self.predictors:
                self._isend(msg.payload, p, Tag.WEIGHTS)
        elif tag is Tag.RESCORE_RESULT:
            cands = self.rescoring.pop(src)
            self.accounting.idle(src)
            rule = self.al.selection
            # A candidate the committee failed on (verdict FAILED) keeps its priority.
            new = {
                c.order: score(rule, r)
                for c, (r, v) in zip(cands, self.codec.decode_predictions(msg.payload), strict=True)
                if v is not Verdict.FAILED
            }
            self.al.queue.reprioritise(new, keep_below=getattr(self.al.selection, "lower", 0.0))
            self.free_pred.append(src)
        elif tag is Tag.LOG:
            self._on_log(src, msg.payload)
        elif tag is Tag.DONE:
            self.done.add(src)
            if msg.payload.get("role") == "generator":
                self.generator_steps += int(msg.payload.get("steps", 0))
            if "states" in msg.payload:
                self.generator_states.update({str(k): v for k, v in msg.payload["states"].items()})

    def _on_predictions(self, src: int, payload: np.ndarray) -> None:
        batch = self.in_flight.pop(src)
        self.accounting.idle(src)
        self.free_pred.append(src)
        al = self.al
        touched: set[int] = set()
        for (g, req, slot, srec), prec in zip(
            batch, self.codec.prediction_records(payload), strict=True
        ):
            atoms, gid, step = self.codec.read_structure(srec)
            results, pre = self.codec.read_prediction(prec)
            verdict = al.judge(
                atoms, None if pre is Verdict.FAILED else results, generator_id=gid, step=step
            )
            # The record goes back as the prediction rank wrote it, plus the verdict.
            req.replies[slot] = self.codec.set_verdict(prec, verdict)
            req.missing -= 1
            touched.add(g)
        for g in touched:
            self._answer(g)

    def _answer(self, g: int) -> None:
        """Send generator rank ``g`` every request of its that is complete, in order."""
        queue = self.requests.get(g)
        while queue and queue[0].missing == 0:
            req = queue.popleft()
            if not self.stopping:
                replies = [r for r in req.replies if r is not None]  # all, once complete
                self._isend(np.concatenate(replies), g, Tag.RESULT)

    def _on_label(self, src: int, control: dict[str, Any], store: LabelStore) -> None:
        cand, t_sent = self.busy_oracles.pop(src)
        self.oracle_busy_s += time.perf_counter() - t_sent
        self.accounting.idle(src)
        self.free_oracles.append(src)
        data = None
        size = self.codec.label_data_size(len(cand.atoms), control)
        if size:
            from mpi4py import MPI

            data = np.empty(size)
            self.comm.Recv([data, MPI.DOUBLE], source=src, tag=Tag.LABEL_DATA)
        label = self.codec.label_from_message(cand.atoms, control, data)
        # Hand the freed oracle its next structure at once; the label goes to the store with
        # the others of this pass (a flushed HDF5 write costs about 3 ms, however many
        # labels it holds), so cheap oracles never wait on the store.
        if not self.stopping:
            self.dispatch()
        self.unstored.append((label, cand))
        if label.ok:
            self._send_labels([label.to_atoms()])

    def _send_labels(self, labels: list[Any]) -> None:
        """Labels to every trainer; the validation ones also to every prediction rank.

        Prediction ranks refit the calibration of the spread on the validation labels
        after each publish (:func:`~pal_atoms.workflow.publishing.apply_published`).
        """
        if not labels:
            return
        data = self.codec.encode_labels(labels)
        for t in self.trainers:
            self._isend(data, t, Tag.TRAIN_DATA)
        if self.validation_every:
            from pal_atoms.calculators.stream import is_validation

            val = [a for a in labels if is_validation(a, self.validation_every)]
            if val:
                vdata = self.codec.encode_labels(val)
                for p in self.predictors:
                    self._isend(vdata, p, Tag.TRAIN_DATA)

    def _store_labels(self, store: LabelStore) -> None:
        """Write the labels received since the last call, in one batch."""
        if self.unstored:
            items, self.unstored = self.unstored, []
            self.al.record_labels(store, items)

    def _on_log(self, src: int, info: dict[str, Any]) -> None:
        event = info.get("event")
        if event == "trained":
            self.accounting.add_busy(src, float(info["time_s"]))
            self.al.summary.training_rounds += 1
            logger.info(
                "training rank %d: round %d on %d labels in %.1f s",
                src,
                info["round"],
                info["labels"],
                info["time_s"],
            )
        elif event == "stream":
            self.accounting.add_busy(src, float(info["time_s"]))
            self.al.note_training(src, info["state"])
        elif event == "published":
            self.al.note_publish(info["info"])
            self._rescore()
        elif event == "baseline":
            self.al.summary.test_force_mae.insert(0, (0, info["test_force_mae"]))
            logger.info("starting committee: held-out error %.4g", info["test_force_mae"])
        elif event == "error":  # a bug on a worker rank: stop in order, keep every label
            self.rank_error = f"rank {src} failed: {info['error']}"
        elif info.get("finished"):
            self.gen_finished.add(src)
        elif event == "states":
            self.generator_states.update({str(k): v for k, v in info["states"].items()})
            # On disk at once, as in one process: a killed job resumes from these.
            self.al.save_generator_states(self.generator_states)

    def _rescore(self) -> None:
        # Nothing more goes to an oracle once labelling stopped: no queue to re-rank.
        if not self.free_pred or not self.al.queue or not self.al.labelling:
            return
        p = self.free_pred.popleft()
        cands = list(self.al.queue)
        self.rescoring[p] = cands
        self.accounting.busy(p)
        self._isend(
            self.codec.encode_structures([(c.atoms, c.generator_id, c.step) for c in cands]),
            p,
            Tag.RESCORE,
        )

    # -- dispatching --------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand pending predictions and queued labels to free ranks."""
        held = self.al.over_prediction_cap(time.monotonic() - self.t_start)
        while self.pending and self.free_pred and not held:
            p = self.free_pred.popleft()
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            self.in_flight[p] = batch
            self.accounting.busy(p)
            self._isend(np.concatenate([rec for *_, rec in batch]), p, Tag.BATCH)
        while self.free_oracles and self.al.may_label():
            o = self.free_oracles.popleft()
            cand = self.al.take_candidate()
            buf = np.concatenate(
                [
                    self.codec.encode_structures([(cand.atoms, cand.generator_id, cand.step)]),
                    [cand.uncertainty],
                ]
            )
            self.busy_oracles[o] = (cand, time.perf_counter())
            self.accounting.busy(o)
            self._isend(buf, o, Tag.LABEL)

    # -- main loop ----------------------------------------------------------------------------
    def run(self, store: LabelStore, metrics: MetricsLog) -> None:
        """Run until a limit is reached, then shut every rank down in order."""
        al = self.al
        existing = store.read(status="ok")
        self._send_labels(existing)
        for atoms in existing:
            al.queue.remember(atoms)
        t_start = self.t_start = time.monotonic()
        last_metrics = t_start
        backoff = Backoff()

        def loop() -> None:
            nonlocal last_metrics
            while True:
                if self._drain(store):
                    backoff.reset()
                else:
                    backoff.wait()
                self.dispatch()
                self._flush_outbox()
                self._store_labels(store)
                if self.rank_error:
                    al.stop(self.rank_error, StopCriterion.ERROR)
                al.check_stop(t_start)
                if set(self.generators) <= self.finished_generators:
                    al.stop("all generators finished", StopCriterion.GENERATORS_FINISHED)
                now = time.monotonic()
                if now - last_metrics >= al.settings.metrics_interval_s:
                    metrics.write(self.metrics(now - t_start))
                    last_metrics = now

        def on_error() -> None:
            try:  # keep every label that arrived, then take all ranks down
                self._store_labels(store)
            finally:
                self.comm.Abort(1)  # an unrecoverable error: never leave ranks hanging

        al.drive(loop, lambda: self.shutdown(store), on_error=on_error)
        al.summary.wall_time_s = time.monotonic() - t_start
        al.summary.generator_steps = self.generator_steps
        metrics.write(self.metrics(al.summary.wall_time_s, final=True))

    def _drain(self, store: LabelStore) -> int:
        """Handle the messages that have arrived (at most :data:`MAX_DRAIN`); return how many.

        Handling everything that is already there before dispatching lets the requests of
        several generator ranks share one prediction batch.
        """
        n = 0
        while n < MAX_DRAIN:
            msg = probe(self.comm)
            if msg is None:
                break
            self.handle(msg, store)
            n += 1
        return n

    @property
    def finished_generators(self) -> set[int]:
        """Generator ranks that reported all their generators finished."""
        return (self.done | self.gen_finished) & set(self.generators)

    def metrics(self, elapsed_s: float, *, final: bool = False) -> dict[str, Any]:
        """Metrics line: the workflow's plus the MPI-specific utilisation."""
        record = self.al.metrics(elapsed_s, final=final)
        n = max(1, len(self.oracles))
        busy_now = sum(time.perf_counter() - t for _, t in self.busy_oracles.values())
        record["oracle_busy_fraction"] = (self.oracle_busy_s + busy_now) / max(elapsed_s * n, 1e-9)
        record["pending_predictions"] = len(self.pending)
        record["controller_rss_MB"] = rss_mb()
        record["ranks"] = self.accounting.metrics(elapsed_s)
        return record

    def shutdown(self, store: LabelStore) -> None:
        """Stop gracefully, kernel by kernel (:func:`~pal_atoms.workflow.mpi.shutdown.shutdown`)."""
        from pal_atoms.workflow.mpi.shutdown import shutdown

        shutdown(self, store)
