"""Committee predictions with an explicit failure: one guarded call for both modes.

A committee can fail on a geometry (a neighbour list that overflows, NaN in a model).
The serial loop and every MPI prediction rank predict through :func:`predict_guarded`:
a batch that fails is retried structure by structure, and a structure that still fails
gets ``None``, which the workflow turns into :attr:`~pal_atoms.core.protocols.Verdict.FAILED`.
The generator sees that verdict and restarts; no number is made up for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["failed_prediction", "predict_guarded"]

logger = logging.getLogger(__name__)


def failed_prediction(n_atoms: int, committee: Any = None, item: Any = None) -> dict[str, Any]:
    """The results that travel with a ``FAILED`` verdict: NaN, never usable numbers.

    Args:
        n_atoms: Atoms in the structure (the shapes of ``forces`` and ``forces_std``).
        committee: A committee with ``failed_prediction(item)`` (a generic ensemble)
            makes its own NaN results for ``item``.
        item: The structure or sample that failed.
    """
    own = getattr(committee, "failed_prediction", None)
    if callable(own):
        return dict(own(item))
    nan = float("nan")
    return {
        "energy": nan,
        "free_energy": nan,
        "energy_std": nan,
        "max_force_std": nan,
        "forces": np.full((n_atoms, 3), nan),
        "forces_std": np.full(n_atoms, nan),
    }


def predict_guarded(committee: Any, frames: Sequence[Atoms]) -> list[dict[str, Any] | None]:
    """``committee.predict_batch(frames)``, with ``None`` for each structure that fails.

    One bad structure does not fail the others: a failing batch is retried one
    structure at a time.
    """
    frames = list(frames)
    try:
        return list(committee.predict_batch(frames))
    except Exception:
        if len(frames) == 1:
            logger.warning("prediction failed", exc_info=True)
            return [None]
    out: list[dict[str, Any] | None] = []
    for atoms in frames:
        try:
            out.append(committee.predict_batch([atoms])[0])
        except Exception as exc:
            logger.warning("prediction of a %d-atom structure failed: %s", len(atoms), exc)
            out.append(None)
    return out
