"""Per-rank accounting of the controller: busy time, generator steps, memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pal_atoms.workflow.mpi.layout import Role

__all__ = ["RankAccounting", "rss_mb"]


def rss_mb() -> float | None:
    """Resident memory of this process in MiB (``None`` where ``/proc`` is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / 2**20


class RankAccounting:
    """Busy time of the worker ranks and steps of the generator ranks, seen by the controller.

    A prediction or oracle rank is busy from the moment it is handed work until its answer
    arrives; a training rank for the duration of its rounds (it reports them).

    Args:
        roles: Role of every rank (index = rank).
    """

    def __init__(self, roles: Sequence[Role]) -> None:
        self.roles = dict(enumerate(roles))
        self.busy_s: dict[int, float] = dict.fromkeys(self.roles, 0.0)
        self.since: dict[int, float] = {}
        self.n_steps: dict[int, int] = {}

    def busy(self, rank: int) -> None:
        """``rank`` was just handed work."""
        self.since[rank] = time.perf_counter()

    def idle(self, rank: int) -> None:
        """``rank``'s answer arrived."""
        since = self.since.pop(rank, None)
        if since is not None:
            self.add_busy(rank, time.perf_counter() - since)

    def add_busy(self, rank: int, seconds: float) -> None:
        """Add work the rank timed itself (a training round)."""
        self.busy_s[rank] = self.busy_s.get(rank, 0.0) + seconds

    def steps(self, rank: int, n: int) -> None:
        """Generator rank ``rank`` asked for ``n`` predictions (one per generator step)."""
        self.n_steps[rank] = self.n_steps.get(rank, 0) + n

    def metrics(self, elapsed_s: float) -> dict[str, dict[str, Any]]:
        """Per worker rank: ``role``, and ``busy_fraction`` or ``steps`` and ``steps_per_s``."""
        now = time.perf_counter()
        out: dict[str, dict[str, Any]] = {}
        for rank, role in self.roles.items():
            if role is Role.CONTROLLER:
                continue
            entry: dict[str, Any] = {"role": str(role)}
            if role is Role.GENERATOR:
                entry["steps"] = self.n_steps.get(rank, 0)
                entry["steps_per_s"] = round(entry["steps"] / max(elapsed_s, 1e-9), 3)
            else:
                busy = self.busy_s.get(rank, 0.0)
                if rank in self.since:
                    busy += now - self.since[rank]
                entry["busy_fraction"] = round(min(1.0, busy / max(elapsed_s, 1e-9)), 4)
            out[str(rank)] = entry
        return out
