"""The active-learning workflow: one run state, two transports.

:class:`ActiveLearning` holds the run's state (queue, budgets, selection, label
recording, stop rules, checkpoints, metrics) and runs it in one process; under MPI the
controller in :mod:`pal_atoms.workflow.mpi` drives the same state and only moves
messages.
"""

from __future__ import annotations

from pal_atoms.workflow.serial import ActiveLearning
from pal_atoms.workflow.summary import StopRun, Summary, urgent_stop

__all__ = ["ActiveLearning", "StopRun", "Summary", "urgent_stop"]
