"""Figures of an active-learning run directory (``pal-atoms plot DIR``).

:func:`plot_run` reads what the workflow writes into a run directory and saves PNG
figures next to it (``DIR/plots`` by default):

* ``labels.png``: cumulative labels over time, ``ok`` against each failure status
  (from the label store's timestamps);
* ``uncertainty.png``: the committee's ``max_force_std`` over time (``metrics.jsonl``)
  with the uncertainty of every labelled structure (the store);
* ``learning_curve.png``: held-out force MAE against the number of labels
  (``summary.json``, else ``metrics.jsonl``);
* ``parity.png``: committee-mean against reference force components on the held-out
  frames (``committee/`` and ``test_set.extxyz``);
* ``calibration.png``: expected (calibrated spread) against observed force error on the
  held-out frames, with the miscalibration area
  (:mod:`pal_atoms.jobs.plot_calibration`);
* ``populations.png`` and ``gaps.png`` of a ``pal-atoms sh`` run
  (:mod:`pal_atoms.jobs.plot_hopping`).

A figure whose inputs are missing (a run still starting, a run without test set) is
skipped with a log line, never an error. Figures are drawn on matplotlib's ``Agg``
canvas through the object API: no window, no global ``pyplot`` state, safe on a cluster.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.errors import InputError, PalAtomsError, StoreError, StoreFormatError
from pal_atoms.jobs.figures import new_figure, save_figure
from pal_atoms.jobs.plot_hopping import HOPPING_FIGURES, plot_gaps, plot_populations
from pal_atoms.workflow.metrics import read_metrics

__all__ = ["FIGURES", "plot_parity", "plot_run"]


logger = logging.getLogger(__name__)

#: File names of the figures :func:`plot_run` can write.
FIGURES = ("labels.png", "uncertainty.png", "learning_curve.png", "parity.png", "calibration.png")

#: Frames predicted per committee call for the parity plot (bounds the memory).
_BATCH = 32

_STATUS_COLOURS = {
    "ok": "tab:green",
    "failed": "tab:red",
    "unconverged": "tab:orange",
    "timeout": "tab:purple",
    "cancelled": "tab:gray",
}


def _time_axis(span_s: float) -> tuple[float, str]:
    """Divisor and axis label for elapsed times up to ``span_s`` seconds."""
    if span_s > 3 * 3600:
        return 3600.0, "elapsed time (h)"
    if span_s > 3 * 60:
        return 60.0, "elapsed time (min)"
    return 1.0, "elapsed time (s)"


# -- inputs -----------------------------------------------------------------------------------
def _read_store(path: Path) -> dict[str, np.ndarray] | None:
    """Status, timestamp (UNIX s) and uncertainty (eV/Å) of every record, or ``None``.

    A store that a running job holds open for writing is read without HDF5 file locking
    (every append is flushed and only committed records are read; a record appended
    while reading may be missed, never half-read as committed).
    """
    if not path.exists():
        return None
    from pal_atoms.store import LabelStore

    try:
        with LabelStore(path, mode="r") as store:
            return _columns(store)
    except StoreFormatError as exc:
        logger.warning("label figures skipped: %s", exc)
        return None
    except StoreError:
        pass  # locked by the running job: read it without the lock below
    import h5py

    from pal_atoms.store.read import StoreReader

    try:
        with h5py.File(path, "r", locking=False) as f:
            return _columns(StoreReader(f))
    except (OSError, KeyError, ValueError) as exc:
        logger.warning(
            "label figures skipped: %s is being written and not readable (%s)", path, exc
        )
        return None


def _columns(store: Any) -> dict[str, np.ndarray]:
    return {
        "status": store.statuses(),
        "timestamp": store.column("timestamp").astype(float),
        "uncertainty": store.column("uncertainty").astype(float),
    }


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("%s not read (%s); learning curve from metrics.jsonl", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _start_time(metrics: list[dict[str, Any]], store: dict[str, np.ndarray] | None) -> float:
    """UNIX time of the run start (first metrics record minus its elapsed time, or first label)."""
    starts = [
        float(r["time"]) - float(r["elapsed_s"])
        for r in metrics[:1]
        if _finite(r.get("time")) and _finite(r.get("elapsed_s"))
    ]
    if store is not None and len(store["timestamp"]):
        starts.append(float(store["timestamp"].min()))
    return min(starts) if starts else 0.0


# -- figures ----------------------------------------------------------------------------------
def _plot_labels(
    store: dict[str, np.ndarray] | None, t0: float, t_end: float, path: Path
) -> Path | None:
    if store is None or not len(store["status"]):
        logger.info("labels figure skipped: no labels to show")
        return None
    from matplotlib.ticker import MaxNLocator

    t = store["timestamp"] - t0
    end = max(float(t.max()), t_end - t0)
    scale, xlabel = _time_axis(end)
    order = np.argsort(t, kind="stable")
    t, status = t[order] / scale, store["status"][order]
    fig = new_figure()
    ax = fig.add_subplot()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for name, colour in _STATUS_COLOURS.items():
        mask = status == name
        if mask.any():
            # Start at zero at the run start; hold the last count up to the end of the run.
            times = np.concatenate([[0.0], t[mask], [end / scale]])
            counts = np.concatenate([np.arange(mask.sum() + 1), [mask.sum()]])
            ax.step(times, counts, where="post", color=colour, label=f"{name} ({mask.sum()})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("labels (cumulative)")
    ax.set_title(f"{len(status)} oracle calls")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_uncertainty(
    metrics: list[dict[str, Any]], store: dict[str, np.ndarray] | None, t0: float, path: Path
) -> Path | None:
    series = [
        (float(r["time"]) - t0, float(r["max_force_std"]))
        for r in metrics
        if _finite(r.get("time")) and _finite(r.get("max_force_std"))
    ]
    labelled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if store is not None:
        mask = np.isfinite(store["uncertainty"])
        if mask.any():
            labelled = (
                store["timestamp"][mask] - t0,
                store["uncertainty"][mask],
                store["status"][mask],
            )
    if not series and labelled is None:
        logger.info("uncertainty figure skipped: no max_force_std in metrics or store")
        return None
    span = max([s[0] for s in series] + ([float(labelled[0].max())] if labelled else []))
    scale, xlabel = _time_axis(span)
    fig = new_figure()
    ax = fig.add_subplot()
    if series:
        t, std = np.array(series).T
        ax.plot(t / scale, std, color="tab:blue", lw=1, label="latest prediction (metrics)")
    if labelled is not None:
        t, unc, status = labelled
        for name, colour in _STATUS_COLOURS.items():
            sel = status == name
            if sel.any():
                ax.scatter(t[sel] / scale, unc[sel], s=10, color=colour, label=f"labelled: {name}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("max force std (eV/Å)")
    ax.set_title("committee uncertainty")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _learning_points(
    metrics: list[dict[str, Any]], summary: dict[str, Any]
) -> list[tuple[int, float]]:
    """``(n_labels, mae)`` pairs: ``summary.json`` if it has them, else the metrics."""
    points: list[tuple[int, float]] = []
    for item in summary.get("test_force_mae") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and _finite(item[1]):
            points.append((int(item[0]), float(item[1])))
    if points:
        return points
    seen: dict[int, float] = {}
    for r in metrics:
        if _finite(r.get("test_force_mae")) and _finite(r.get("labels_ok")):
            seen[int(r["labels_ok"])] = float(r["test_force_mae"])
    return sorted(seen.items())


def _plot_learning_curve(points: list[tuple[int, float]], path: Path) -> Path | None:
    if not points:
        logger.info("learning curve skipped: no held-out force error recorded")
        return None
    n, mae = np.array(points, dtype=float).T
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(n, mae, "o-", color="tab:blue")
    if np.all(mae > 0):
        ax.set_yscale("log")
    ax.set_xlabel("ok labels in the training set")
    ax.set_ylabel("held-out force MAE (eV/Å)")
    ax.set_title(f"learning curve (last: {mae[-1]:.3g} eV/Å)")
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_parity(committee: Any, frames: Sequence[Atoms], path: str | Path) -> Path:
    """Parity plot of committee-mean against reference force components.

    Args:
        committee: Anything with ``predict_batch(list_of_atoms) -> list[dict]`` returning
            ``forces`` in eV/Å (e.g. a :class:`~pal_atoms.calculators.CommitteeCalculator`).
        frames: Labelled structures; ``get_forces()`` gives the reference (eV/Å).
        path: PNG file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``frames`` is empty.
    """
    if not frames:
        raise ValueError("a parity plot needs at least one labelled frame")
    ref, pred = [], []
    for i in range(0, len(frames), _BATCH):
        chunk = list(frames[i : i + _BATCH])
        for atoms, res in zip(chunk, committee.predict_batch(chunk), strict=True):
            ref.append(np.asarray(atoms.get_forces(), dtype=float).ravel())
            pred.append(np.asarray(res["forces"], dtype=float).ravel())
    x, y = np.concatenate(ref), np.concatenate(pred)
    mae = float(np.mean(np.abs(y - x)))
    rmse = float(np.sqrt(np.mean((y - x) ** 2)))
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    fig = new_figure(4.8, 4.8)
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.scatter(x, y, s=4, alpha=0.5, color="tab:blue")
    ax.set_aspect("equal")
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("committee force component (eV/Å)")
    ax.set_title(f"{len(frames)} held-out frames: MAE {mae:.3g}, RMSE {rmse:.3g} eV/Å")
    return save_figure(fig, Path(path))


def _labelled_test_set(path: Path) -> list[Atoms]:
    from ase.io import read

    frames = read(path, index=":")
    frames = frames if isinstance(frames, list) else [frames]
    return [a for a in frames if a.calc is not None and "forces" in a.calc.results]


def _plot_run_committee(run_dir: Path, parity: Path, calibration: Path) -> list[Path | None]:
    """Parity and calibration figures of the run's committee on its held-out frames."""
    from pal_atoms.jobs.plot_calibration import calibration_report, plot_calibration

    test_path, committee_dir = run_dir / "test_set.extxyz", run_dir / "committee"
    if not test_path.exists() or not committee_dir.is_dir():
        logger.info("parity plot skipped: needs %s and %s", committee_dir, test_path)
        return [None, None]
    try:
        frames = _labelled_test_set(test_path)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("parity plot skipped: %s could not be read (%s)", test_path, exc)
        return [None, None]
    if not frames:
        logger.info("parity plot skipped: %s holds no frames with forces", test_path)
        return [None, None]
    from pal_atoms.calculators import CommitteeCalculator

    try:
        committee = CommitteeCalculator.load(committee_dir, device="cpu")
    except (PalAtomsError, OSError, ValueError, KeyError, RuntimeError) as exc:
        logger.warning("parity plot skipped: committee in %s not loaded (%s)", committee_dir, exc)
        return [None, None]
    return [
        plot_parity(committee, frames, parity),
        plot_calibration(calibration_report(committee, frames), calibration),
    ]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the figures of a run directory as PNG files (see the module docstring).

    Args:
        run_dir: Run directory (``labels.h5``, ``metrics.jsonl``, ``committee/``,
            ``test_set.extxyz``, ``summary.json``; any of them may be missing).
        out_dir: Folder for the figures (created); default ``run_dir/plots``.

    Returns:
        Paths of the figures written, in the order of :data:`FIGURES` and then
        :data:`~pal_atoms.jobs.plot_hopping.HOPPING_FIGURES` (those whose inputs are
        missing are left out).

    Raises:
        InputError: ``run_dir`` holds neither ``labels.h5`` nor ``metrics.jsonl``.
    """
    run = Path(run_dir)
    store_path, metrics_path = run / "labels.h5", run / "metrics.jsonl"
    if not (store_path.exists() or metrics_path.exists()):
        raise InputError(f"{run} is not a pal-atoms run directory (no labels.h5, no metrics.jsonl)")
    out = Path(out_dir) if out_dir is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(metrics_path) if metrics_path.exists() else []
    store = _read_store(store_path)
    t0 = _start_time(metrics, store)
    t_end = max((float(r["time"]) for r in metrics if _finite(r.get("time"))), default=t0)
    points = _learning_points(metrics, _read_summary(run / "summary.json"))
    written = [
        _plot_labels(store, t0, t_end, out / FIGURES[0]),
        _plot_uncertainty(metrics, store, t0, out / FIGURES[1]),
        _plot_learning_curve(points, out / FIGURES[2]),
        *_plot_run_committee(run, out / FIGURES[3], out / FIGURES[4]),
        plot_populations(run, out / HOPPING_FIGURES[0]),
        plot_gaps(run, out / HOPPING_FIGURES[1]),
    ]
    return [p for p in written if p is not None]
