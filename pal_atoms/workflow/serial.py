"""Active learning in one process: PAL's kernels interleaved (notebooks, tests, small jobs).

:class:`ActiveLearning` steps every generator in turn on the committee, sends what the
selection rule does not trust to the oracle queue, and labels the most uncertain structure
between generator rounds. Training is continuous with a
:class:`~pal_atoms.calculators.StreamingTrainer` (labels join it at once; between
generator steps it trains for ``training_share`` of the wall time and publishes weights
when its validation error improves) or in rounds with a
:class:`~pal_atoms.calculators.CommitteeTrainer` (every ``retrain_size`` labels). The run
ends when it has converged (few uncertain predictions and a validation error that
stopped improving) or at the first limit reached. The MPI controller runs the same
kernels on separate ranks with the same settings and the same run directory layout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ase import Atoms

from pal_atoms.core.protocols import StopCriterion, Verdict
from pal_atoms.store import LabelStore
from pal_atoms.workflow.guards import GuardedGenerator, StepOutcome, label_guarded
from pal_atoms.workflow.metrics import MetricsLog, force_mae
from pal_atoms.workflow.prediction import failed_prediction, predict_guarded
from pal_atoms.workflow.state import RunState
from pal_atoms.workflow.summary import StopRun, Summary, urgent_stop

__all__ = ["ActiveLearning", "Summary", "urgent_stop"]

logger = logging.getLogger(__name__)


class ActiveLearning(RunState):
    """Single-process active-learning loop (see the module docstring).

    Args:
        committee: Committee calculator (``predict_batch``, ``save``); its predictions drive
            the generators. A :class:`pal_atoms.generic.Ensemble` runs the same loop on
            generic samples: it brings its trainer, trust window, store and MPI codec
            (:mod:`pal_atoms.workflow.kernels`).
        oracle: Oracle calculator labelled through :func:`pal_atoms.oracles.label`.
        generators: Generators (:class:`pal_atoms.dynamics.Generator`), stepped in turn.
        store: Label store, or the path of one (opened and closed by the run).
        trainer: Trains the committee on the store's ``ok`` labels (``train(labels)``);
            ``None``: the committee's ``default_trainer()`` if it has one, else no training.
        selection: Selection rule (default :class:`~pal_atoms.workflow.selection.TrustWindow`).
        settings: Limits and knobs (:class:`~pal_atoms.workflow.settings.WorkflowSettings`).
        run_dir: Folder for checkpoints, generator states and metrics (``None``: none).
        test_set: Held-out labelled structures for the committee's force error.
        label_fn: Labelling function ``label(atoms, oracle, *, timeout_s, isolate)``
            (default :func:`pal_atoms.oracles.label`).
        comm: MPI communicator; with more than one rank the kernels run on separate ranks
            (:mod:`pal_atoms.workflow.mpi`), every rank calling :meth:`run` with the same arguments.
        layout: Rank counts per kernel under MPI (default: 1 prediction, 1 oracle,
            1 training rank, generators on the rest).
    """

    # -- the prediction client the generators talk to -----------------------------------------
    def evaluate(
        self, atoms: Atoms, *, generator_id: int = 0, step: int = 0
    ) -> tuple[dict[str, Any], Verdict]:
        """:class:`~pal_atoms.core.protocols.PredictionClient` of the generators."""
        t0 = time.perf_counter()
        (results,) = predict_guarded(self.committee, [atoms])
        self._timings["prediction"] += time.perf_counter() - t0
        verdict = self.judge(atoms, results, generator_id=generator_id, step=step)
        return results or failed_prediction(len(atoms), self.committee, atoms), verdict

    # -- kernels ------------------------------------------------------------------------------
    def _label_one(self, store: LabelStore) -> None:
        cand = self.take_candidate()
        t0 = time.perf_counter()
        label = label_guarded(
            self.label_fn,
            cand.atoms,
            self.oracle,
            timeout_s=self.settings.oracle_timeout_s,
            isolate=self.settings.isolate_oracle,
        )
        self._timings["oracle"] += time.perf_counter() - t0
        self.record_label(store, label, cand)

    def _train(self, store: LabelStore) -> None:
        if self.trainer is None or self.continuous:
            return
        labels = store.read(status="ok")
        t0 = time.perf_counter()
        self.trainer.train(labels)
        self._timings["training"] += time.perf_counter() - t0
        self.summary.training_rounds += 1
        self._labels_since_training = 0
        if self.test_set:
            mae = force_mae(self.committee, self.test_set)
            self.summary.test_force_mae.append((len(labels), mae))
            logger.info(
                "training round %d on %d labels: held-out %s %.4g%s",
                self.summary.training_rounds,
                len(labels),
                *(("MAE", mae, "") if self.generic else ("force MAE", mae, " eV/Å")),
            )
        self.rescore_queue()
        self._checkpoint_committee()

    def _save_generators(self) -> None:
        self.save_generator_states({str(g.generator_id): g.state() for g in self.generators})

    # -- main loop ----------------------------------------------------------------------------
    def _steps(self) -> Iterator[None]:
        """Step every generator in turn, guarded (:class:`GuardedGenerator`, as under MPI)."""
        live = [GuardedGenerator(g, self) for g in self.generators]
        while live:
            for guard in list(live):
                outcome = guard.step()
                if outcome is StepOutcome.FINISHED:
                    live.remove(guard)
                    continue
                if outcome is StepOutcome.STEPPED:
                    self.summary.generator_steps += 1
                yield

    def _serial_pass(
        self,
        store: LabelStore,
        steps: Iterator[None],
        metrics: MetricsLog,
        t_start: float,
        marks: dict[str, float],
    ) -> None:
        """One pass of the serial loop: a generator step, a label, training, bookkeeping."""
        self.check_stop(t_start)
        if self.over_prediction_cap(time.monotonic() - t_start):
            self._idle(time.monotonic() - t_start)
            return
        if next(steps, StopIteration) is StopIteration:
            raise StopRun("all generators finished", StopCriterion.GENERATORS_FINISHED)
        if self.may_label():
            self._label_one(store)
            if not self.continuous and self._labels_since_training >= self.settings.retrain_size:
                self._train(store)
        now = time.monotonic()
        if self.continuous and self.labelling:
            self._share_training(now - t_start)
        if now - marks["metrics"] >= self.settings.metrics_interval_s:
            metrics.write(self.metrics(now - t_start))
            marks["metrics"] = now
        if now - marks["checkpoint"] >= self.settings.checkpoint_interval_s:
            self._save_generators()
            marks["checkpoint"] = now

    def run(self) -> Summary:
        """Run until a limit is reached; return the :class:`Summary`.

        Raises:
            FailureBudgetExceeded: too many recent labels failed (the store stays valid,
                the committee is checkpointed first).
        """
        if self.comm is not None and self.comm.Get_size() > 1:
            from pal_atoms.workflow.mpi.run import run_mpi

            return run_mpi(self)
        own_store = isinstance(self._store_arg, (str, Path))
        store = self.open_store()
        metrics = self.open_metrics()
        self._baseline()
        existing = store.read(status="ok")
        if self.continuous:
            # Train a private copy: the serving committee changes only by publishes.
            self.stream.detach()
            self.stream.add(existing)
            self._local_stream = True
        for atoms in existing:
            self.queue.remember(atoms)
        old_handlers = self.install_signal_handlers()
        t_start = time.monotonic()

        def loop() -> None:
            steps = self._steps()
            marks = {"metrics": t_start, "checkpoint": t_start}
            while True:
                self._serial_pass(store, steps, metrics, t_start, marks)

        try:
            self.drive(loop, lambda: self._finish(store, metrics, t_start))
        finally:
            self.restore_signal_handlers(old_handlers)
            metrics.close()
            if own_store:
                store.close()
        logger.info("run ended: %s", self.summary.stop_reason)
        return self.summary

    def _finish(self, store: LabelStore, metrics: MetricsLog, t_start: float) -> None:
        self.cancel_queue(store)
        # A last round on the newest labels, unless the user asked to stop now (time limit,
        # signal, stop file): then the latest checkpoint stands.
        if (
            self._labels_since_training
            and self.trainer is not None
            and not self.continuous
            and self.labelling
            and not urgent_stop(self.summary.stop_criterion)
        ):
            self._train(store)
        elif self.summary.committee_path is None:
            self._checkpoint_committee()
        self._save_generators()
        self.summary.wall_time_s = time.monotonic() - t_start
        self.summary.timings_s = dict(self._timings)
        metrics.write(self.metrics(self.summary.wall_time_s, final=True))
