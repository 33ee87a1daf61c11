"""Timing hooks for the oracle benchmarks (``oracle_utilisation.py``, ``parallel_vs_serial.py``).

Nothing here changes the library; the hooks sit in the places a user may fill:

* :class:`TimedLabel` is the ``label_fn`` of the run: the library's
  :func:`pal_atoms.oracles.label`, optionally padded with a sleep to a fixed cost (a remote
  DFT job that costs no local CPU), stamping ``t_label_start``/``t_label_end`` and the
  oracle's pid into ``label.atoms.info``. The oracle rank sends ``atoms.info`` back to the
  controller with the label, so the stamps arrive there.
* :class:`TimedQueue` is the controller's oracle queue with a log of its length after
  every change, and ``t_queued``/``t_popped`` stamped into each candidate's ``atoms.info``.
* :class:`TimedAL` is :class:`~pal_atoms.workflow.ActiveLearning` with that queue and a
  log of every stored label (``t_record`` when the controller got it, ``t_stored`` after
  the store append).

Every stamp is ``time.monotonic()``: on Linux ``CLOCK_MONOTONIC``, one clock for all the
processes of a machine, so stamps taken on different ranks can be compared.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.label import Label
from pal_atoms.store import LabelStore
from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.oracle_queue import Candidate, OracleQueue

__all__ = [
    "TimedAL",
    "TimedLabel",
    "TimedQueue",
    "busy_while_queued",
    "loadavg",
    "nonempty_intervals",
    "now",
    "percentiles",
    "runnable",
    "soft_barrier",
    "wait_for_quiet",
]

now = time.monotonic


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages of the machine."""
    return [round(x, 2) for x in os.getloadavg()]


def runnable() -> int:
    """Tasks running or runnable on the machine right now (this one included)."""
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])


def wait_for_quiet(max_runnable: float = 4.0, timeout_s: float = 15.0) -> dict[str, float]:
    """Wait until the machine is quiet: on average at most ``max_runnable`` runnable tasks
    (this one included) over 1 s; give up after ``timeout_s``. The machine is shared with
    other jobs; a case started during someone else's burst measures their load, not ours.

    Returns:
        ``waited_s`` and the last ``runnable`` average.
    """
    t0 = now()
    while True:
        samples = []
        for _ in range(10):
            samples.append(runnable())
            time.sleep(0.1)
        mean = sum(samples) / len(samples)
        if mean <= max_runnable or now() - t0 > timeout_s:
            return {"waited_s": round(now() - t0, 1), "runnable": mean}


def soft_barrier(comm: Any, poll_s: float = 0.01) -> None:
    """MPI barrier that sleeps instead of spinning (MPICH's blocking calls busy-poll, which
    on an oversubscribed node starves the ranks that are still importing)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(poll_s)


class TimedLabel:
    """``label_fn`` that pads each label to ``pad_to_s`` seconds and stamps its times.

    Args:
        pad_to_s: Sleep after the real label until this many seconds have passed since it
            started (``None``: no padding). The sleep stands in for a remote DFT job.
        inner: The labelling function (default :func:`pal_atoms.oracles.label`).
    """

    def __init__(self, pad_to_s: float | None = None, inner: Callable[..., Label] | None = None):
        if inner is None:
            from pal_atoms.oracles import label as inner
        self.pad_to_s = pad_to_s
        self.inner = inner

    def __call__(self, atoms: Atoms, oracle: Any, **kwargs: Any) -> Label:
        t0 = now()
        lab = self.inner(atoms, oracle, **kwargs)
        if self.pad_to_s is not None:
            rest = self.pad_to_s - (now() - t0)
            if rest > 0:
                time.sleep(rest)
        lab.atoms.info.update(t_label_start=t0, t_label_end=now(), oracle_pid=os.getpid())
        return lab


class TimedQueue(OracleQueue):
    """Oracle queue that logs ``(time, length)`` after every change (see module doc)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.events: list[tuple[float, int]] = [(now(), 0)]

    def _log(self) -> None:
        n = len(self)
        if n != self.events[-1][1]:
            self.events.append((now(), n))

    def push(
        self, atoms: Atoms, uncertainty: float, *, generator_id: int = -1, step: int = -1
    ) -> bool:
        atoms = atoms.copy()
        atoms.info["t_queued"] = now()
        kept = super().push(atoms, uncertainty, generator_id=generator_id, step=step)
        self._log()
        return kept

    def pop(self) -> Candidate:
        cand = super().pop()
        cand.atoms.info["t_popped"] = now()
        self._log()
        return cand

    def drain(self) -> list[Candidate]:
        out = super().drain()
        self._log()
        return out

    def rescore(self, score: Any, *, keep_below: float = 0.0) -> int:
        removed = super().rescore(score, keep_below=keep_below)
        self._log()
        return removed

    def reprioritise(self, uncertainties: dict[int, float], *, keep_below: float = 0.0) -> int:
        removed = super().reprioritise(uncertainties, keep_below=keep_below)
        self._log()
        return removed


class TimedAL(ActiveLearning):
    """:class:`ActiveLearning` with a :class:`TimedQueue` and a log of stored labels.

    Attributes:
        label_log: One dict per stored label: its stamps (``t_queued``, ``t_popped``,
            ``t_label_start``, ``t_label_end``, ``t_record`` (the controller got it),
            ``t_stored_start`` and ``t_stored`` (its batch's store write)), ``ok`` and the
            oracle's ``pid``.
        t_budget: When ``labels_ok`` reached ``max_labels`` (``None``: never).
        at_budget: ``training_rounds`` and ``predictions`` at that moment.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.queue = TimedQueue(cap=self.settings.queue_cap, diversity_A=self.settings.diversity_A)
        self.label_log: list[dict[str, Any]] = []
        self.t_budget: float | None = None
        self.at_budget: dict[str, int] = {}

    def record_labels(self, store: LabelStore, items: Sequence[tuple[Label, Candidate]]) -> None:
        t_record = now()
        try:
            super().record_labels(store, items)
        finally:
            t_stored = now()
            for label, _ in items:
                info = label.atoms.info
                entry = {
                    k: float(info[k])
                    for k in ("t_queued", "t_popped", "t_label_start", "t_label_end")
                    if k in info
                }
                entry.update(
                    t_record=float(info.get("t_received", t_record)),
                    t_stored_start=t_record,
                    t_stored=t_stored,
                    ok=label.ok,
                    pid=int(info.get("oracle_pid", 0)),
                )
                self.label_log.append(entry)
                if self.t_budget is None and self.summary.labels_ok >= self.settings.max_labels:
                    self.t_budget = entry["t_stored"]
                    self.at_budget = {
                        "training_rounds": self.summary.training_rounds,
                        "predictions": self.summary.predictions,
                    }


# -- analysis -------------------------------------------------------------------------------
def nonempty_intervals(
    events: list[tuple[float, int]], t0: float, t1: float
) -> list[tuple[float, float]]:
    """Intervals within ``[t0, t1]`` during which the logged queue length was > 0."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    length = 0
    for t, n in events:
        if t >= t1:
            break
        if n > 0 and length == 0:
            start = max(t, t0)
        elif n == 0 and length > 0 and start is not None:
            if t > t0:
                out.append((start, t))
            start = None
        length = n
    if length > 0 and start is not None and start < t1:
        out.append((start, t1))
    return [(a, b) for a, b in out if b > a]


def _overlap(a0: float, a1: float, q0: np.ndarray, q1: np.ndarray) -> float:
    return float(np.clip(np.minimum(a1, q1) - np.maximum(a0, q0), 0.0, None).sum())


def busy_while_queued(
    log: list[dict[str, Any]],
    queue_on: list[tuple[float, float]],
    n_oracles: int,
    *,
    start_key: str = "t_label_start",
    end_key: str = "t_label_end",
) -> tuple[float, float]:
    """Oracle-seconds busy while the queue was non-empty, and their share of the possible.

    Busy means inside ``[start_key, end_key]`` of some label; the possible is
    ``n_oracles`` times the time the queue was non-empty.
    """
    if not queue_on:
        return 0.0, float("nan")
    q0 = np.array([a for a, _ in queue_on])
    q1 = np.array([b for _, b in queue_on])
    busy = sum(_overlap(e[start_key], e[end_key], q0, q1) for e in log if start_key in e)
    return busy, busy / (n_oracles * float((q1 - q0).sum()))


def percentiles(values: list[float] | np.ndarray, qs: tuple[int, ...] = (50, 95)) -> dict:
    """``{"p50": ..., "p95": ..., "mean": ..., "n": ...}`` of ``values`` (NaN if empty)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {**{f"p{q}": float("nan") for q in qs}, "mean": float("nan"), "n": 0}
    return {
        **{f"p{q}": float(np.percentile(v, q)) for q in qs},
        "mean": float(v.mean()),
        "n": int(v.size),
    }
