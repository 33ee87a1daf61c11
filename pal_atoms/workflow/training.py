"""The training side of the active-learning run, shared by both transports.

How labels are paced against training, how the generators are capped, what a publish
does to the run state, and (in one process) how training gets its share of the time.
:class:`~pal_atoms.workflow.ActiveLearning` mixes this in; the MPI controller calls the
same methods when the training and prediction ranks report.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ase import Atoms

from pal_atoms.core.protocols import StopCriterion
from pal_atoms.workflow.oracle_queue import Candidate, OracleQueue
from pal_atoms.workflow.prediction import predict_guarded
from pal_atoms.workflow.publishing import apply_published
from pal_atoms.workflow.selection import score
from pal_atoms.workflow.settings import WorkflowSettings
from pal_atoms.workflow.summary import StopRun, Summary

__all__ = ["TrainingState"]

logger = logging.getLogger(__name__)


class TrainingState:
    """Mixin of :class:`~pal_atoms.workflow.ActiveLearning`: pacing, publishes, training."""

    # Set by ActiveLearning.__init__.
    settings: WorkflowSettings
    summary: Summary
    queue: OracleQueue
    committee: Any
    stream: Any
    continuous: bool
    labelling: bool
    budget_spent: bool
    selection: Any
    run_dir: Path | None
    test_set: list[Atoms]
    dispatched: int
    _stall_mark: tuple[int, int] = (-1, -1)
    _stall_base: int = 0
    _timings: dict[str, float]
    _training_states: dict[int, dict[str, Any]]
    _val_force_mae: float | None
    generic: bool

    def may_label(self) -> bool:
        """Whether a queued structure may go to an oracle now (both transports).

        Needs labelling on, a non-empty queue and, with ``steps_per_label`` and a
        continuous trainer, a label budget left: ``label_burst`` plus the optimizer steps
        per trainer divided by ``steps_per_label``.
        """
        if not (self.labelling and self.queue):
            return False
        per = self.settings.steps_per_label
        if per is None or not self.continuous:
            return True
        states = self._training_states.values()
        # Steps per trainer (each trains its own members): the committee's progress.
        steps = sum(int(s["step"]) for s in states) / max(1, len(states))
        return self.dispatched < self.settings.label_burst + steps / per

    def _check_budget(self) -> None:
        """``max_labels`` is reached: stop, or (``train_after_max_labels``) train on first."""
        s = self.settings
        if not (s.train_after_max_labels and self.continuous) or self.training_plateaued():
            then = ", then training plateaued" if self.budget_spent else ""
            raise StopRun(f"reached max_labels={s.max_labels}{then}", StopCriterion.MAX_LABELS)
        if not self.budget_spent:
            logger.info(
                "reached max_labels=%d: labelling stops, generators wait, training goes on "
                "until its validation error plateaus or another limit",
                s.max_labels,
            )
            self.budget_spent = True
            self.summary.training_steps_at_max_labels = self.summary.training_steps
            self.labelling = False  # what is queued stays, and is cancelled at the end

    def check_stalled(self) -> None:
        """Raise :class:`StopRun` (``stalled``) when labelling can no longer move (rounds).

        A training round waits for ``retrain_size`` new labels. When the generators
        propose only near-duplicates of labelled structures (still uncertain: the committee
        has not been trained on them yet), nothing is queued and no label is on its way,
        those labels never come: after ``stall_duplicates`` such proposals in a row the run
        ends, and its last training round learns the labels it has. A continuous trainer
        keeps learning them, so it is never stalled this way.
        """
        limit = self.settings.stall_duplicates
        stored = self.summary.labels_ok + self.summary.labels_failed
        mark = (self.dispatched, stored)
        if (
            limit is None
            or self.continuous
            or not self.labelling
            or len(self.queue)
            or self.dispatched > stored  # a label is on its way
            or mark != self._stall_mark
        ):
            self._stall_mark, self._stall_base = mark, self.queue.n_duplicates
            return
        if self.queue.n_duplicates - self._stall_base >= limit:
            raise StopRun(
                f"stalled: the last {self.queue.n_duplicates - self._stall_base} proposals "
                "were near-duplicates of labelled structures, nothing is queued and a "
                f"training round needs {self.settings.retrain_size} new labels",
                StopCriterion.STALLED,
            )

    def take_candidate(self) -> Candidate:
        """Pop the next structure for an oracle and count it against the label budget."""
        self.dispatched += 1
        return self.queue.pop()

    def over_prediction_cap(self, elapsed_s: float) -> bool:
        """Whether the generators are ahead of ``max_predictions_per_s`` (both transports).

        Always once the label budget is spent (``budget_spent``): generators wait while
        training has the cores.
        """
        if self.budget_spent:
            return True
        cap = self.settings.max_predictions_per_s
        return cap is not None and self.summary.predictions >= cap * max(elapsed_s, 1e-9)

    # -- training -----------------------------------------------------------------------------
    @property
    def validation_every(self) -> int:
        """About one label in this many is a validation label (0: rounds, no split)."""
        if not self.continuous:
            return 0
        return int(self.stream.settings.validation_every)

    def note_publish(self, info: dict[str, Any]) -> None:
        """Account for weights that reached the serving committee (both transports).

        Args:
            info: What :func:`~pal_atoms.workflow.publishing.apply_published` returned.
        """
        self.summary.publishes += 1
        if "path" in info:
            self.summary.committee_path = info["path"]
        if "calibration" in info:
            self.summary.calibration = info["calibration"]
        if "val_force_mae" in info:
            self._val_force_mae = float(info["val_force_mae"])
        if "test_force_mae" in info:
            self.summary.test_force_mae.append((self.summary.labels_ok, info["test_force_mae"]))
            logger.info(
                "published members %s: held-out %s %.4g%s%s",
                info.get("members"),
                "MAE" if self.generic else "force MAE",
                info["test_force_mae"],
                "" if self.generic else " eV/Å",
                f", spread x{info['calibration']['force_std_scale']:.2f}"
                if "calibration" in info
                else "",
            )

    def note_training(self, source: int, state: dict[str, Any]) -> None:
        """Latest progress of trainer ``source`` (:meth:`StreamingTrainer.state`)."""
        self._training_states[source] = dict(state)
        states = self._training_states.values()
        self.summary.training_steps = sum(int(s["step"]) for s in states)
        self.summary.training_labels = min(int(s["n_train"]) + int(s["n_val"]) for s in states)

    def training_plateaued(self) -> bool:
        """Whether every continuous trainer reports a plateau (True for rounds or none)."""
        if not self.continuous or not self.settings.require_training_plateau:
            return True
        states = self._training_states.values()
        return bool(states) and all(s.get("plateau") for s in states)

    def _idle(self, elapsed_s: float) -> None:
        """Generators are ahead of their cap: train a chunk instead (or wait a little)."""
        if self.continuous and (self.labelling or self.budget_spent) and self.stream.n_train:
            self._share_training(elapsed_s, force=True)
        else:
            time.sleep(0.01)

    def _share_training(self, elapsed_s: float, *, force: bool = False) -> None:
        """Serial continuous mode: train until training has had its share of the time."""
        trainer = self.stream
        share = self.settings.training_share
        chunk = trainer.settings.eval_every_steps
        # At most a few chunks per pass: the generators and the oracle get their turn.
        for _ in range(4):
            if not trainer.n_train or not (force or self._timings["training"] < share * elapsed_s):
                break
            force = False
            t0 = time.perf_counter()
            publishes = trainer.train_steps(chunk)
            self._timings["training"] += time.perf_counter() - t0
            for pub in publishes:
                self._publish_local(pub)
            self.note_training(0, trainer.state())

    def _publish_local(self, pub: Any) -> None:
        t0 = time.perf_counter()
        info = apply_published(
            self.committee,
            pub.weights,
            pub.members,
            validation=self.stream.validation_labels,
            checkpoint=self.run_dir / "committee" if self.run_dir is not None else None,
            test_set=self.test_set,
        )
        self._timings["prediction"] += time.perf_counter() - t0
        self.note_publish(info)
        if self.labelling:  # once it stopped, nothing queued goes to an oracle
            self.rescore_queue()

    def rescore_queue(self) -> None:
        """Re-rank the queue with the serving committee (one process; guarded).

        A candidate the committee fails on keeps its priority (no made-up score).
        """
        self.queue.rescore(
            lambda frames: [
                None if r is None else score(self.selection, r)
                for r in predict_guarded(self.committee, frames)
            ],
            keep_below=getattr(self.selection, "lower", 0.0),
        )
