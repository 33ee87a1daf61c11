"""The run's state, shared by the serial loop and the MPI controller.

:class:`RunState` is the whole workflow except its transport: the oracle queue, the
budgets and stop rules (:meth:`~RunState.check_stop`, stop criteria as an enum), the
verdict on each prediction (:meth:`~RunState.judge`), label recording with provenance
(:meth:`~RunState.record_labels`), generator states, checkpoints, metrics and the run's
lifecycle (:meth:`~RunState.drive`). :class:`~pal_atoms.workflow.serial.ActiveLearning`
runs it in one process; :class:`~pal_atoms.workflow.mpi.controller.MPIController` drives
the same object and only moves messages.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ase import Atoms

from pal_atoms.core.errors import FailureBudgetExceeded, InputError
from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.core.protocols import StopCriterion, Verdict
from pal_atoms.store import LabelStore
from pal_atoms.workflow.kernels import codec_of, resolve_kernels
from pal_atoms.workflow.metrics import MetricsLog, force_mae
from pal_atoms.workflow.oracle_queue import Candidate, OracleQueue
from pal_atoms.workflow.progress import Progress, eta_to_cap
from pal_atoms.workflow.selection import SelectionRule, score
from pal_atoms.workflow.settings import WorkflowSettings
from pal_atoms.workflow.summary import StopRun, Summary, json_default
from pal_atoms.workflow.training import TrainingState

__all__ = ["RunState"]

logger = logging.getLogger(__name__)


class RunState(TrainingState):
    """State and rules of one active-learning run (see the module docstring).

    Built by :class:`~pal_atoms.workflow.serial.ActiveLearning` (its arguments are
    documented there).
    """

    StopRun = StopRun

    def __init__(
        self,
        *,
        committee: Any,
        oracle: Any,
        generators: Sequence[Any],
        store: LabelStore | str | Path,
        trainer: Any | None = None,
        selection: SelectionRule | None = None,
        settings: WorkflowSettings | None = None,
        run_dir: str | Path | None = None,
        test_set: Sequence[Atoms] | None = None,
        label_fn: Callable[..., Label] | None = None,
        comm: Any | None = None,
        layout: Any | None = None,
    ):
        if not generators:
            raise InputError("an active-learning run needs at least one generator")
        ids = [g.generator_id for g in generators]
        if len(set(ids)) != len(ids):
            raise InputError(f"generator ids must be unique, got {ids}")
        self.committee = committee
        #: Generic samples (a committee with a schema) rather than structures.
        self.generic = getattr(committee, "schema", None) is not None
        self.oracle = oracle
        self.generators = list(generators)
        self.trainer, self.selection, self.label_fn = resolve_kernels(
            committee,
            oracle,
            self.generators,
            trainer=trainer,
            selection=selection,
            label_fn=label_fn,
        )
        self.settings = settings or WorkflowSettings()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.test_set = list(test_set or [])
        self.comm = comm
        self.layout = layout
        self._store_arg = store
        self.queue = OracleQueue(
            cap=self.settings.queue_cap,
            diversity_A=self.settings.diversity_A,
            policy=self.settings.queue_policy,
        )
        self.summary = Summary()
        self._timings = dict.fromkeys(("prediction", "oracle", "training", "store"), 0.0)
        self._recent_verdicts: deque[bool] = deque(maxlen=self.settings.convergence_window)
        self._recent_failures: deque[bool] = deque(maxlen=self.settings.failure_window)
        self._labels_since_training = 0
        self.labelling = True
        self.budget_spent = False  #: max_labels reached, training goes on (see settings)
        self._signal: str | None = None
        self._max_force_std = 0.0
        #: Continuous training (a trainer with ``train_steps``) rather than rounds.
        self.continuous = callable(getattr(trainer, "train_steps", None))
        #: The continuous trainer (``None`` for rounds or no training).
        self.stream: Any = trainer if self.continuous else None
        self._local_stream = False  # the serial loop feeds and steps the trainer itself
        self._training_states: dict[int, dict[str, Any]] = {}
        self._val_force_mae: float | None = None
        self.dispatched = 0  # structures handed to an oracle by this run

    @property
    def codec(self) -> Any:
        """How items travel between MPI ranks (:func:`~.kernels.codec_of`)."""
        return codec_of(self.committee)

    def judge(
        self,
        atoms: Atoms,
        results: dict[str, Any] | None,
        *,
        generator_id: int,
        step: int,
    ) -> Verdict:
        """The verdict on one prediction (``None``: it failed), accounted for (both modes)."""
        if results is None:
            self.summary.predictions += 1
            self.summary.failed_predictions += 1
            self._recent_verdicts.append(True)
            return Verdict.FAILED
        verdict = Verdict(self.selection(atoms, results))
        self.note_prediction(atoms, results, verdict, generator_id=generator_id, step=step)
        return verdict

    def note_prediction(
        self,
        atoms: Atoms,
        results: dict[str, Any],
        verdict: Verdict,
        *,
        generator_id: int,
        step: int,
    ) -> None:
        """Account for one judged prediction; queue the structure if it is not trusted."""
        self.summary.predictions += 1
        self._max_force_std = float(results.get("max_force_std", results.get("uncertainty", 0.0)))
        self._recent_verdicts.append(verdict is not Verdict.TRUSTED)
        if verdict is not Verdict.TRUSTED and self.labelling:
            self.queue.push(
                atoms, score(self.selection, results), generator_id=generator_id, step=step
            )

    def record_label(self, store: LabelStore, label: Label, cand: Candidate) -> None:
        """Store a finished label with its provenance; count it against the budgets.

        Raises:
            FailureBudgetExceeded: too many of the recent labels failed.
        """
        self.record_labels(store, [(label, cand)])

    def record_labels(self, store: LabelStore, items: Sequence[tuple[Label, Candidate]]) -> None:
        """Store finished labels in one batch (one HDF5 write), then count each of them.

        Every label is stored before any budget is checked, so none is lost when the
        failure budget ends the run.

        Raises:
            FailureBudgetExceeded: too many of the recent labels failed.
        """
        if not items:
            return
        t0 = time.perf_counter()
        store.append_labels(
            (
                label,
                {
                    "generator_id": cand.generator_id,
                    "generator_step": cand.step,
                    "uncertainty": cand.uncertainty,
                },
            )
            for label, cand in items
        )
        self._timings["store"] += time.perf_counter() - t0
        if self._local_stream:  # the labels join the stream at once, in one batch
            ok = [label.to_atoms() for label, _ in items if label.ok]
            if ok:
                self.stream.add(ok)
                self.note_training(0, self.stream.state())
        for label, cand in items:
            self._recent_failures.append(not label.ok)
            if label.ok:
                self.summary.labels_ok += 1
                self._labels_since_training += 1
            else:
                self.summary.labels_failed += 1
                logger.warning(
                    "label %s for generator %d: %s", label.status, cand.generator_id, label.error
                )
        if not all(label.ok for label, _ in items):
            self._check_failure_budget()

    def _check_failure_budget(self) -> None:
        window = self._recent_failures
        if len(window) >= min(self.settings.failure_window, 4):
            fraction = sum(window) / len(window)
            if fraction > self.settings.failure_budget:
                raise FailureBudgetExceeded(
                    f"{sum(window)} of the last {len(window)} labels failed (budget "
                    f"{self.settings.failure_budget:.0%}); check the oracle settings"
                )

    def _checkpoint_committee(self) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / "committee"
        self.committee.save(path)
        self.summary.committee_path = str(path)

    def save_generator_states(self, states: dict[str, Any]) -> None:
        """Write generator states (``{generator_id: state}``) for a later resume."""
        if self.run_dir is None or not states:
            return
        tmp = self.run_dir / "generators.json.tmp"
        tmp.write_text(json.dumps(states, default=json_default))
        tmp.replace(self.run_dir / "generators.json")

    def restore_generators(self) -> int:
        """Restore generator states saved in the run directory; return how many."""
        if self.run_dir is None or not (self.run_dir / "generators.json").exists():
            return 0
        states = json.loads((self.run_dir / "generators.json").read_text())
        n = 0
        for g in self.generators:
            if str(g.generator_id) in states:
                g.restore(states[str(g.generator_id)])
                n += 1
        return n

    # -- stopping -----------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signal.Signals(signum).name

    def stop(self, reason: str, criterion: StopCriterion = StopCriterion.OTHER) -> None:
        """End the run with ``reason`` (raises :class:`StopRun`)."""
        raise StopRun(reason, criterion)

    def check_stop(self, t_start: float) -> None:
        """Raise :class:`StopRun` if a limit is reached (``t_start``: ``time.monotonic()``)."""
        s = self.settings
        if self._signal:
            raise StopRun(f"received {self._signal}", StopCriterion.SIGNAL)
        if self.summary.labels_ok >= s.max_labels:
            self._check_budget()
        steps = max(self.summary.generator_steps, self.summary.predictions)
        if s.max_steps is not None and steps >= s.max_steps:
            raise StopRun(f"reached max_steps={s.max_steps}", StopCriterion.MAX_STEPS)
        if s.time_limit_s is not None and time.monotonic() - t_start >= s.time_limit_s:
            raise StopRun(f"reached time_limit_s={s.time_limit_s:g}", StopCriterion.TIME_LIMIT)
        if s.stop_file and self.run_dir is not None and (self.run_dir / s.stop_file).exists():
            raise StopRun(
                f"stop file {self.run_dir / s.stop_file} appeared", StopCriterion.STOP_FILE
            )
        self.check_stalled()
        window = self._recent_verdicts
        converged = (
            len(window) == window.maxlen
            and sum(window) / len(window) < s.convergence_fraction
            and self.training_plateaued()
        )
        if self.labelling and converged:
            if s.on_convergence == "stop":
                plateau = (
                    ", validation error stopped improving"
                    if self.continuous and s.require_training_plateau
                    else ""
                )
                raise StopRun(
                    "converged: uncertain fraction below "
                    f"{s.convergence_fraction:g} over {len(window)} predictions{plateau}",
                    StopCriterion.CONVERGED,
                )
            logger.info("converged: oracle and training stop; generators continue (ML-MD)")
            self.labelling = False
            self.queue.drain()

    def drive(
        self,
        body: Callable[[], None],
        finish: Callable[[], None],
        *,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """The run's lifecycle, shared by the serial loop and the MPI controller.

        ``body`` runs until it raises :class:`StopRun`; the stop is recorded and
        ``finish`` runs (cancel the queue, checkpoint, last metrics; under MPI, shut the
        ranks down in order). After the failure budget is exceeded the run finishes the
        same way and the error propagates. After any other error the stop is recorded as
        ``error``, ``on_error`` (default ``finish``) keeps what arrived, and the error
        propagates: no label is lost and the store is closed by the caller.
        """
        try:
            body()
        except StopRun as stop:
            self._record_stop(str(stop), stop.criterion)
        except FailureBudgetExceeded as exc:
            self._record_stop(str(exc), StopCriterion.FAILURE_BUDGET)
            finish()
            raise
        except BaseException as exc:
            self._record_stop(f"{type(exc).__name__}: {exc}", StopCriterion.ERROR)
            try:
                (on_error or finish)()
            except Exception:  # the original error is the one to report
                logger.exception("finishing the run after an error failed")
            raise
        finish()

    def _record_stop(self, reason: str, criterion: StopCriterion) -> None:
        self.summary.stop_reason = reason
        self.summary.stop_criterion = criterion.value

    def _baseline(self) -> None:
        """Held-out error of the starting committee: the first point of the learning curve."""
        if self.test_set:
            self.summary.test_force_mae.append((0, force_mae(self.committee, self.test_set)))

    def cancel_queue(self, store: LabelStore) -> None:
        """Record every queued structure as ``cancelled`` (nothing selected is lost)."""
        cands = self.queue.drain()
        store.append_batch(
            (
                cand.atoms,
                {
                    "status": LabelStatus.CANCELLED,
                    "error": "run stopped before labelling",
                    "generator_id": cand.generator_id,
                    "generator_step": cand.step,
                    "uncertainty": cand.uncertainty,
                },
            )
            for cand in cands
        )
        self.summary.cancelled += len(cands)

    def open_metrics(self) -> MetricsLog:
        """The run's ``metrics.jsonl`` writer with its progress lines (both modes)."""
        return MetricsLog(
            self.run_dir / "metrics.jsonl" if self.run_dir else None,
            progress=Progress(interval_s=self.settings.metrics_interval_s),
        )

    def open_store(self) -> LabelStore:
        """The run's store (opened here when a path was given); creates the run folder.

        A committee with ``open_store`` (a generic ensemble) opens its own kind of store.
        """
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if not isinstance(self._store_arg, (str, Path)):
            return self._store_arg
        opener = getattr(self.committee, "open_store", None)
        if callable(opener):
            return opener(self._store_arg)
        return LabelStore(self._store_arg)

    def metrics(self, elapsed_s: float, *, final: bool = False) -> dict[str, Any]:
        """One metrics record (see ``metrics.jsonl`` in the README)."""
        window = self._recent_verdicts
        return {
            "elapsed_s": round(elapsed_s, 3),
            "labels_ok": self.summary.labels_ok,
            "labels_failed": self.summary.labels_failed,
            "generator_steps": max(self.summary.generator_steps, self.summary.predictions),
            "steps_per_s": max(self.summary.generator_steps, self.summary.predictions)
            / max(elapsed_s, 1e-9),
            "uncertain_fraction": (sum(window) / len(window)) if window else None,
            "max_force_std": self._max_force_std,
            "training_rounds": self.summary.training_rounds,
            "training_steps": self.summary.training_steps,
            "publishes": self.summary.publishes,
            "val_force_mae": self._val_force_mae,
            "force_std_scale": (self.summary.calibration or {}).get("force_std_scale"),
            "test_force_mae": self.summary.test_force_mae[-1][1]
            if self.summary.test_force_mae
            else None,
            "busy_s": {k: round(v, 3) for k, v in self._timings.items()},
            **self.queue.stats(),
            **eta_to_cap(
                elapsed_s,
                labels_ok=self.summary.labels_ok,
                steps=max(self.summary.generator_steps, self.summary.predictions),
                time_limit_s=self.settings.time_limit_s,
                max_labels=self.settings.max_labels,
                max_steps=self.settings.max_steps,
            ),
            "final": final,
            **({"generic": True} if self.generic else {}),
        }

    def install_signal_handlers(self) -> dict[int, Any]:
        """Turn SIGINT/SIGTERM into a graceful stop; return the previous handlers."""
        old: dict[int, Any] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: leave signals to the caller
            pass
        return old

    @staticmethod
    def restore_signal_handlers(old: dict[int, Any]) -> None:
        """Put back handlers returned by :meth:`install_signal_handlers`."""
        for sig, handler in old.items():
            signal.signal(sig, handler)
