"""Run metrics: a JSON-lines file in the run directory and the committee's test error."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["MetricsLog", "force_mae", "prediction_mae", "read_metrics"]


class MetricsLog:
    """Appends one JSON object per line (``metrics.jsonl``); ``path=None`` discards.

    Every line gets ``time`` (UNIX s). Lines are flushed at once, so ``pal-atoms status``
    can follow a running job.
    """

    def __init__(self, path: Path | None, *, progress: Any | None = None):
        self.path = path
        self.progress = progress  # e.g. pal_atoms.workflow.progress.Progress: shows each record

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (and show it on the progress display)."""
        if self.progress is not None:
            self.progress.update(record)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"time": time.time(), **record}, default=float) + "\n")

    def close(self) -> None:
        """Close the progress display, if any."""
        if self.progress is not None:
            self.progress.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file (lines that do not parse, e.g. a torn last line, skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def force_mae(committee: Any, frames: Sequence[Atoms]) -> float:
    """Mean absolute error (eV/Å) of the committee-mean forces against the frames' labels.

    Args:
        committee: Anything with ``predict_batch(list_of_atoms) -> list[dict]``.
        frames: Labelled structures (``get_forces()`` gives the reference).
    """
    if not frames:
        raise ValueError("force_mae needs at least one labelled frame")
    own = getattr(committee, "test_error", None)
    if callable(own):  # a generic ensemble: its mean absolute error over the outputs
        return float(own(list(frames)))
    return prediction_mae(committee.predict_batch(list(frames)), frames)


def prediction_mae(predictions: Sequence[dict[str, Any]], frames: Sequence[Atoms]) -> float:
    """:func:`force_mae` of predictions already made (``predict_batch(frames)``), eV/Å."""
    errors = [
        np.abs(np.asarray(p["forces"]) - a.get_forces()).ravel()
        for p, a in zip(predictions, frames, strict=True)
    ]
    return float(np.mean(np.concatenate(errors)))
