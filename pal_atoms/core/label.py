"""The unit of ground truth: one oracle result for one geometry, with its status.

A :class:`Label` is what an oracle returns and what the :class:`~pal_atoms.store.LabelStore`
keeps. Only a label with status ``ok`` carries energy and forces; a failed, unconverged,
timed-out or cancelled label keeps its geometry and the error text, never numbers that
could be mistaken for data.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

__all__ = ["Label", "LabelStatus", "settings_hash"]


class LabelStatus(str, enum.Enum):
    """Outcome of one oracle call."""

    OK = "ok"
    FAILED = "failed"  # the oracle raised, crashed or returned non-finite numbers
    UNCONVERGED = "unconverged"  # SCF (or geometry) did not converge: never data
    TIMEOUT = "timeout"  # killed after its time limit
    CANCELLED = "cancelled"  # selected but not labelled before the run stopped

    def __str__(self) -> str:
        return self.value


def settings_hash(settings: dict[str, Any]) -> str:
    """Short stable hash of an oracle's settings (16 hex digits of SHA-256 of sorted JSON)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Label:
    """One oracle result.

    Attributes:
        atoms: Geometry that was labelled (positions in Å, numbers, cell, pbc); its
            ``info`` holds ``charge`` and ``multiplicity``. Not modified by the label.
        status: Outcome; only ``ok`` labels carry numbers.
        energy: Total energy in eV (``ok`` only).
        forces: Forces in eV/Å, shape ``(n_atoms, 3)`` (``ok`` only).
        stress: Stress in eV/Å³, Voigt order, shape ``(6,)``, periodic cells only.
        error: Error text for a label that is not ``ok``.
        wall_time_s: Wall time of the oracle call(s) in s, retries included.
        oracle: Oracle name (e.g. ``"xtb"``).
        method: Method string (e.g. ``"GFN2-xTB"``).
        settings: Settings the label was computed with (what the hash covers).
        attempts: Number of attempts, retries with adjusted settings included.
    """

    atoms: Atoms
    status: LabelStatus
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    error: str = ""
    wall_time_s: float = 0.0
    oracle: str = ""
    method: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1

    def __post_init__(self) -> None:
        status = LabelStatus(self.status)
        object.__setattr__(self, "status", status)
        n = len(self.atoms)
        if status is LabelStatus.OK:
            if self.energy is None or self.forces is None:
                raise ValueError("an ok label needs energy and forces")
            forces = np.asarray(self.forces, dtype=float)
            if forces.shape != (n, 3):
                raise ValueError(f"forces must have shape ({n}, 3), got {forces.shape}")
            if not (np.isfinite(self.energy) and np.all(np.isfinite(forces))):
                raise ValueError("an ok label must have finite energy and forces")
            object.__setattr__(self, "forces", forces)
            object.__setattr__(self, "energy", float(self.energy))
            if self.stress is not None:
                stress = np.asarray(self.stress, dtype=float).reshape(6)
                if not np.all(np.isfinite(stress)):
                    raise ValueError("an ok label must have a finite stress")
                object.__setattr__(self, "stress", stress)
        elif self.energy is not None or self.forces is not None or self.stress is not None:
            raise ValueError(f"a label with status {status.value!r} must not carry numbers")

    @property
    def ok(self) -> bool:
        """True when the label carries usable energy and forces."""
        return self.status is LabelStatus.OK

    @property
    def settings_hash(self) -> str:
        """Stable hash of :attr:`settings`."""
        return settings_hash(self.settings)

    def to_atoms(self) -> Atoms:
        """Copy of the geometry; for ``ok`` labels with a ``SinglePointCalculator`` attached."""
        atoms = self.atoms.copy()
        if self.ok:
            results: dict[str, Any] = {
                "energy": self.energy,
                "free_energy": self.energy,
                "forces": self.forces,
            }
            if self.stress is not None:
                results["stress"] = self.stress
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms
