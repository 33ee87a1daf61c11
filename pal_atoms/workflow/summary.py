"""What a run reports and how it ends: the summary, the stop exception, urgent stops.

Shared by the single-process loop and the MPI controller (one run state, two transports).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pal_atoms.core.protocols import StopCriterion

__all__ = ["StopRun", "Summary", "json_default", "urgent_stop"]


@dataclass(kw_only=True)
class Summary:
    """What a run did.

    Attributes:
        labels_ok: ``ok`` labels stored by this run.
        labels_failed: Labels stored with another status (failed, unconverged, timeout).
        cancelled: Queued structures recorded as ``cancelled`` at the stop.
        generator_steps: Generator steps taken.
        predictions: Committee predictions judged.
        failed_predictions: Predictions that failed (verdict ``failed``; not labelled).
        training_rounds: Training rounds finished.
        stop_reason: Why the run ended (a sentence).
        stop_criterion: Which rule ended it (a :class:`~pal_atoms.core.protocols.StopCriterion`
            value).
        publishes: Weight publishes that reached the prediction side (continuous training).
        training_steps: Optimizer steps of the continuous trainers.
        training_steps_at_max_labels: ``training_steps`` when ``max_labels`` was reached
            and training went on (``train_after_max_labels``; ``None``: it did not).
        training_labels: Labels (training plus validation) the continuous trainers held at
            their latest report (the smallest over trainers).
        calibration: Latest calibration of the force spread (``ForceCalibration.as_dict``).
        wall_time_s: Wall time in s.
        timings_s: Busy time per kernel in s (prediction, oracle, training, store).
        committee_path: Folder of the last committee checkpoint (``None`` without one).
        test_force_mae: ``(labels, MAE)`` pairs: held-out force MAE in eV/Å of the starting
            committee (at 0 labels of this run), then after each training round.
        report: What the job adds after the loop (final check, calibration on the test
            set, checked saddles), written with the rest into ``summary.json``.
    """

    labels_ok: int = 0
    labels_failed: int = 0
    cancelled: int = 0
    generator_steps: int = 0
    predictions: int = 0
    failed_predictions: int = 0
    training_rounds: int = 0
    stop_reason: str = ""
    stop_criterion: str = ""
    publishes: int = 0
    training_steps: int = 0
    training_steps_at_max_labels: int | None = None
    training_labels: int = 0
    calibration: dict[str, Any] | None = None
    wall_time_s: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)
    committee_path: str | None = None
    test_force_mae: list[tuple[int, float]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy; the entries of :attr:`report` at the top level."""
        out = asdict(self)
        report = out.pop("report")
        return {**out, **report}


class StopRun(Exception):
    """Ends the main loop; its message is the stop reason.

    Args:
        reason: The sentence reported to the user.
        criterion: The rule that ended the run.
    """

    def __init__(self, reason: str, criterion: StopCriterion = StopCriterion.OTHER):
        super().__init__(reason)
        self.criterion = criterion


def urgent_stop(criterion: str | StopCriterion) -> bool:
    """Whether a stop asks to stop now (time limit, signal, stop file, error).

    An urgent stop skips the last training round on the newest labels: the latest
    committee checkpoint stands.

    Args:
        criterion: A :class:`StopCriterion` or its value (anything else: not urgent).
    """
    try:
        return StopCriterion(criterion).urgent
    except ValueError:
        return False


def json_default(value: Any) -> Any:
    """JSON fallback for NumPy arrays and scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
