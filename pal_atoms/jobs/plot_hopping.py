"""Figures of a surface-hopping run (``pal-atoms plot`` of a ``pal-atoms sh`` folder).

* ``populations.png``: state populations against time (``populations.csv``), with the
  times of the hops (``hops.csv``) as ticks along the bottom;
* ``gaps.png``: the gap between the active state and its nearest neighbour along every
  trajectory (``generators.json``), hops marked.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from pal_atoms.jobs.figures import new_figure, save_figure

__all__ = ["HOPPING_FIGURES", "plot_gaps", "plot_populations"]

logger = logging.getLogger(__name__)

#: File names of the figures of a surface-hopping run.
HOPPING_FIGURES = ("populations.png", "gaps.png")


def _hops(run: Path) -> list[dict[str, str]]:
    path = run / "hops.csv"
    if not path.is_file():
        return []
    with path.open() as fh:
        return [row for row in csv.DictReader(fh) if row["frustrated"] == "False"]


def plot_populations(run: Path, path: Path) -> Path | None:
    """State populations over time, hop times as ticks; ``None`` without populations."""
    table = run / "populations.csv"
    if not table.is_file():
        return None
    with table.open() as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        logger.info("populations plot skipped: no trajectory ran to its end yet")
        return None
    header, body = rows[0], np.array(rows[1:], dtype=float)
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    for k, name in enumerate(header[1:-1], start=1):
        ax.plot(body[:, 0], body[:, k], label=name)
    hop_times = [float(h["time_fs"]) for h in _hops(run)]
    if hop_times:
        ax.plot(hop_times, np.full(len(hop_times), -0.03), "|", color="k", label="hops")
    ax.set(xlabel="time (fs)", ylabel="population", ylim=(-0.06, 1.02))
    ax.set_title(f"{int(body[0, -1])} complete trajectories")
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


def plot_gaps(run: Path, path: Path) -> Path | None:
    """Gap to the nearest state along every trajectory; ``None`` without trajectories."""
    states_path = run / "generators.json"
    if not states_path.is_file():
        return None
    states = json.loads(states_path.read_text())
    trajectories = [
        (int(gid), i, t)
        for gid, s in states.items()
        for i, t in enumerate(s.get("trajectories", []))
        if t.get("gaps_eV")
    ]
    if not trajectories:
        return None
    timestep = next(iter(states.values()))["settings"]["timestep_fs"]
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    for _, _, t in trajectories:
        gaps = np.asarray(t["gaps_eV"])
        style = "-" if t["status"] == "complete" else ":"
        ax.plot(np.arange(len(gaps)) * timestep, gaps, style, lw=0.8, alpha=0.7)
    hops = [(float(h["time_fs"]), float(h["gap_eV"])) for h in _hops(run)]
    if hops:
        ax.scatter(*zip(*hops, strict=True), marker="x", color="k", zorder=3, label="hops")
        ax.legend(loc="best", fontsize="small")
    ax.set(xlabel="time (fs)", ylabel="gap to the nearest state (eV)")
    ax.set_title("complete (solid) and aborted (dotted) trajectories")
    return save_figure(fig, path)
