"""Calibration of the committee's force spread against observed errors.

A committee's spread is a relative uncertainty: small committees trained on the same data
are over-confident (on held-out Bi MD the raw spread was 2-5 times smaller than the
error). One NLL-optimal scale factor fixes the units, as apax does: for per-atom force
errors ``e_i = |F_pred,i - F_ref,i|`` (eV/Å) and spreads ``σ_i`` (``forces_std``),

    s = sqrt(mean_i(e_i² / σ_i²)),

which maximises the Gaussian likelihood of the errors under ``N(0, (s σ_i)²)`` per
component. After it the spread reads as expected error in eV/Å: ``s σ_i`` is the RMS
error one should expect on atom ``i``.

:func:`calibration_curve` compares expected and observed error in bins of predicted
spread; its miscalibration area is ``mean |observed/expected - 1|`` weighted by bin
population (0 for perfect calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms

__all__ = [
    "ForceCalibration",
    "calibration_curve",
    "fit_force_calibration",
    "force_errors",
    "prediction_errors",
]

#: Smallest spread used in a ratio (eV/Å): keeps e/σ finite where members agree exactly.
MIN_STD = 1e-6


@dataclass(frozen=True, kw_only=True)
class ForceCalibration:
    """Result of :func:`fit_force_calibration`.

    Attributes:
        force_std_scale: The factor ``s`` applied to the raw spread.
        n_atoms: Atoms (force vectors) it was fitted on.
        rmse: RMS per-atom force-vector error on the fit set, eV/Å.
        rms_std: RMS raw per-atom spread on the fit set, eV/Å.
        miscalibration_area: Of the calibrated spread on the fit set (0 is perfect).
    """

    force_std_scale: float
    n_atoms: int
    rmse: float
    rms_std: float
    miscalibration_area: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy."""
        return asdict(self)


def force_errors(
    committee: Any, labels: Sequence[Atoms], *, raw: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom force error and spread of the committee on labelled structures.

    Args:
        committee: Anything with ``predict_batch`` returning ``forces`` and ``forces_std``
            (and ``forces_std_raw`` when ``raw``).
        labels: Labelled structures (``get_forces()`` is the reference).
        raw: Use the uncalibrated spread.

    Returns:
        ``(errors, stds)`` in eV/Å, one entry per atom of all structures.
        Shape: ``[n_atoms_total]`` each.
    """
    if not labels:
        return np.zeros(0), np.zeros(0)
    return prediction_errors(committee.predict_batch(list(labels)), labels, raw=raw)


def prediction_errors(
    preds: Sequence[dict[str, Any]], labels: Sequence[Atoms], *, raw: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`force_errors` of predictions already made (``predict_batch(labels)``)."""
    key = "forces_std_raw" if raw else "forces_std"
    err = np.concatenate(
        [
            np.linalg.norm(np.asarray(p["forces"]) - a.get_forces(), axis=-1)
            for p, a in zip(preds, labels, strict=True)
        ]
    )
    std = np.concatenate([np.asarray(p.get(key, p["forces_std"]), dtype=float) for p in preds])
    return err, std


def calibration_curve(
    errors: np.ndarray, stds: np.ndarray, *, n_bins: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Expected vs observed RMS error in quantile bins of the predicted spread.

    Args:
        errors: Per-atom error norms, eV/Å. Shape: ``[n]``.
        stds: Per-atom (calibrated) spreads, eV/Å. Shape: ``[n]``.
        n_bins: Number of bins (equal populations).

    Returns:
        ``(expected, observed, counts, area)``: RMS spread and RMS error per bin (eV/Å),
        the bin populations, and the miscalibration area (population-weighted mean of
        ``|observed / expected - 1|``; ``nan`` without data).
    """
    errors = np.asarray(errors, dtype=float)
    stds = np.maximum(np.asarray(stds, dtype=float), MIN_STD)
    if errors.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty, float("nan")
    order = np.argsort(stds)
    bins = [b for b in np.array_split(order, min(n_bins, errors.size)) if b.size]
    expected = np.array([np.sqrt(np.mean(stds[b] ** 2)) for b in bins])
    observed = np.array([np.sqrt(np.mean(errors[b] ** 2)) for b in bins])
    counts = np.array([b.size for b in bins], dtype=float)
    area = float(np.sum(counts * np.abs(observed / expected - 1.0)) / counts.sum())
    return expected, observed, counts, area


def fit_force_calibration(errors: np.ndarray, stds: np.ndarray) -> ForceCalibration:
    """NLL-optimal scale ``s = sqrt(mean(e² / σ²))`` of the raw spread (module docstring).

    Args:
        errors: Per-atom force-error norms, eV/Å. Shape: ``[n]``.
        stds: Per-atom raw spreads, eV/Å. Shape: ``[n]``.

    Returns:
        The calibration (scale 1 without data).
    """
    errors = np.asarray(errors, dtype=float)
    stds = np.maximum(np.asarray(stds, dtype=float), MIN_STD)
    if errors.size == 0:
        return ForceCalibration(
            force_std_scale=1.0, n_atoms=0, rmse=float("nan"), rms_std=float("nan"),
            miscalibration_area=float("nan"),
        )  # fmt: skip
    scale = float(np.sqrt(np.mean(errors**2 / stds**2)))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    *_, area = calibration_curve(errors, scale * stds)
    return ForceCalibration(
        force_std_scale=scale,
        n_atoms=int(errors.size),
        rmse=float(np.sqrt(np.mean(errors**2))),
        rms_std=float(np.sqrt(np.mean(stds**2))),
        miscalibration_area=area,
    )
