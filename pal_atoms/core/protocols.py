"""The small contracts between kernels: verdicts and the prediction client.

A generator never talks to a model or an oracle directly. It hands a geometry to a
:class:`PredictionClient`, which returns the committee's results together with the
controller's :class:`Verdict`. In a single process the client calls the committee and the
selection rule directly; on an MPI generator rank it sends the geometry to the controller
and waits for the answer. Generators are written once against this protocol.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol, runtime_checkable

from ase import Atoms

from pal_atoms.core.samples import Sample

__all__ = ["PredictionClient", "StopCriterion", "Verdict"]


class Verdict(str, enum.Enum):
    """The controller's judgement of one committee prediction.

    ``TRUSTED``: uncertainty below the lower bound; use the prediction.
    ``UNCERTAIN``: between the bounds; the geometry is sent to the oracle, but the
    prediction may still be used (a generator counts these against its patience).
    ``UNTRUSTED``: above the upper bound; labelled as well, and the generator should not
    continue from this geometry.
    ``FAILED``: the committee could not predict this geometry (the numbers that come with
    it are NaN, never invented); it is not labelled, and the generator restarts.
    """

    TRUSTED = "trusted"
    UNCERTAIN = "uncertain"
    UNTRUSTED = "untrusted"
    FAILED = "failed"

    @property
    def severity(self) -> int:
        """Rank in ``TRUSTED < UNCERTAIN < UNTRUSTED < FAILED`` (also the wire code)."""
        return _VERDICT_ORDER.index(self)

    def __str__(self) -> str:
        return self.value


_VERDICT_ORDER = (Verdict.TRUSTED, Verdict.UNCERTAIN, Verdict.UNTRUSTED, Verdict.FAILED)


class StopCriterion(str, enum.Enum):
    """Which rule ended a run (``summary.json``'s ``stop_criterion``).

    ``CONVERGED`` is the normal end: few uncertain predictions and a validation error that
    stopped improving. The others are limits or requests; the urgent ones (time limit,
    signal, stop file) ask to stop now, so no last training round runs after them.
    """

    CONVERGED = "converged"
    MAX_LABELS = "max_labels"
    MAX_STEPS = "max_steps"
    TIME_LIMIT = "time_limit"
    SIGNAL = "signal"
    STOP_FILE = "stop_file"
    GENERATORS_FINISHED = "generators_finished"
    FAILURE_BUDGET = "failure_budget"
    STALLED = "stalled"
    ERROR = "error"
    OTHER = "other"

    @property
    def urgent(self) -> bool:
        """Whether the stop asks to end now (skip the last training round)."""
        return self in (
            StopCriterion.TIME_LIMIT,
            StopCriterion.SIGNAL,
            StopCriterion.STOP_FILE,
            StopCriterion.ERROR,
        )

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class PredictionClient(Protocol):
    """Where a generator gets predictions and verdicts from."""

    def evaluate(
        self, atoms: Atoms | Sample, *, generator_id: int = 0, step: int = 0
    ) -> tuple[dict[str, Any], Verdict]:
        """Predict ``atoms`` with the committee and judge the prediction.

        Args:
            atoms: Geometry to evaluate (not modified), or a generic
                :class:`~pal_atoms.core.samples.Sample` (then ``results`` hold ``mean``,
                ``std`` and ``uncertainty``, see :class:`~pal_atoms.generic.Ensemble`).
            generator_id: Id of the asking generator (provenance, per-generator state).
            step: The generator's step counter (provenance).

        Returns:
            ``(results, verdict)``: ``results`` holds at least ``energy`` (eV), ``forces``
            (eV/Å, shape ``(n_atoms, 3)``) and ``max_force_std`` (eV/Å); ``verdict`` is the
            controller's judgement.
        """
        ...
