"""Calibration figure: expected against observed force error of the committee.

Expected error is the committee's calibrated per-atom spread (``forces_std``, eV/Å),
observed error the norm of the difference between the committee-mean and the reference
force of that atom; both are RMS values in bins of equal population. A calibrated
committee lies on the diagonal; its miscalibration area (in the title) is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["calibration_report", "plot_calibration"]


def calibration_report(committee: Any, frames: Sequence[Atoms]) -> dict[str, Any]:
    """How well the committee's spread predicts its error on labelled frames.

    Args:
        committee: Committee with ``predict_batch`` (``forces``, ``forces_std``,
            ``max_force_std``).
        frames: Labelled structures (``get_forces()`` is the reference).

    Returns:
        ``force_mae`` (mean absolute force-component error, eV/Å), ``rmse_over_std``
        (observed RMS error over RMS calibrated spread, per atom; 1 is calibrated),
        ``miscalibration_area``, ``spearman_max_force_std`` (rank correlation of each
        frame's ``max_force_std`` with its largest atomic force error), and the binned
        ``expected``/``observed`` RMS errors in eV/Å.
    """
    from pal_atoms.calculators.calibration import calibration_curve

    preds = committee.predict_batch(list(frames))
    diffs = [np.asarray(p["forces"]) - a.get_forces() for p, a in zip(preds, frames, strict=True)]
    errs = [np.linalg.norm(d, axis=-1) for d in diffs]
    err = np.concatenate(errs)
    std = np.concatenate([np.asarray(p["forces_std"], dtype=float) for p in preds])
    expected, observed, counts, area = calibration_curve(err, std)
    max_std = np.array([float(p["max_force_std"]) for p in preds])
    max_err = np.array([float(e.max()) for e in errs])
    return {
        "frames": len(frames),
        "force_mae": float(np.mean(np.concatenate([np.abs(d).ravel() for d in diffs]))),
        "rmse_over_std": float(np.sqrt(np.mean(err**2)) / max(np.sqrt(np.mean(std**2)), 1e-12)),
        "miscalibration_area": area,
        "spearman_max_force_std": _spearman(max_std, max_err),
        "expected": expected.tolist(),
        "observed": observed.tolist(),
        "counts": counts.tolist(),
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 3:
        return None
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    c = np.corrcoef(rx, ry)[0, 1]
    return float(c) if np.isfinite(c) else None


def plot_calibration(report: dict[str, Any], path: str | Path) -> Path:
    """Expected vs observed error (from :func:`calibration_report`) as a PNG file."""
    from pal_atoms.jobs.figures import new_figure, save_figure

    expected, observed = np.asarray(report["expected"]), np.asarray(report["observed"])
    fig = new_figure(4.8, 4.8)
    ax = fig.add_subplot()
    hi = float(max(expected.max(initial=0.0), observed.max(initial=0.0))) * 1.1 or 1.0
    ax.plot([0, hi], [0, hi], color="black", lw=0.8, label="calibrated")
    ax.plot(expected, observed, "o-", color="tab:blue", label="committee")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("expected force error: calibrated spread, RMS (eV/Å)")
    ax.set_ylabel("observed force error, RMS (eV/Å)")
    ax.legend(loc="upper left")
    ax.set_title(
        f"{report['frames']} held-out frames: miscalibration area "
        f"{report['miscalibration_area']:.2f}, RMSE/std {report['rmse_over_std']:.2f}"
    )
    return save_figure(fig, Path(path))
