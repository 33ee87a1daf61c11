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

__all__ = ["STATE_KEYS", "Label", "LabelCalculator", "LabelStatus", "check_states", "settings_hash"]


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
        state_energies: Energies of the electronic states S0..S(n-1) in eV, shape
            ``(n_states,)`` (excited-state oracles only; ``energy`` is that of S0).
        state_forces: Forces of every state in eV/Å, shape ``(n_states, n_atoms, 3)``.
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
    state_energies: np.ndarray | None = None
    state_forces: np.ndarray | None = None
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
            states = check_states(self.state_energies, self.state_forces, n)
            object.__setattr__(self, "state_energies", states[0])
            object.__setattr__(self, "state_forces", states[1])
        elif any(
            v is not None
            for v in (self.energy, self.forces, self.stress, self.state_energies, self.state_forces)
        ):
            raise ValueError(f"a label with status {status.value!r} must not carry numbers")

    @property
    def n_states(self) -> int:
        """Number of electronic states labelled (1 for a ground-state label)."""
        return 1 if self.state_energies is None else len(self.state_energies)

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
            if self.state_energies is not None:
                results["state_energies"] = self.state_energies
                results["state_forces"] = self.state_forces
            atoms.calc = LabelCalculator(atoms, **results)
        return atoms


def check_states(
    energies: Any, forces: Any, n_atoms: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-state energies ``(S,)`` and forces ``(S, n_atoms, 3)`` checked, as float arrays.

    Both or neither must be given; ``S >= 2`` (one state is the plain energy and forces).

    Raises:
        ValueError: one without the other, wrong shapes, fewer than 2 states, non-finite.
    """
    if energies is None and forces is None:
        return None, None
    if energies is None or forces is None:
        raise ValueError("state_energies and state_forces go together")
    e = np.asarray(energies, dtype=float).reshape(-1)
    f = np.asarray(forces, dtype=float)
    if len(e) < 2:
        raise ValueError(f"per-state labels need at least 2 states, got {len(e)}")
    if f.shape != (len(e), n_atoms, 3):
        raise ValueError(f"state_forces must have shape ({len(e)}, {n_atoms}, 3), got {f.shape}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(f))):
        raise ValueError("per-state energies and forces must be finite")
    return e, f


class LabelCalculator(SinglePointCalculator):
    """A :class:`~ase.calculators.singlepoint.SinglePointCalculator` that also holds states.

    ASE's own refuses result keys it does not know; excited-state labels add
    ``state_energies`` (eV, ``(S,)``) and ``state_forces`` (eV/Å, ``(S, n_atoms, 3)``),
    read with ``atoms.calc.results["state_energies"]`` or :meth:`get_property`.
    """

    implemented_properties = (  # type: ignore[assignment]
        "energy",
        "free_energy",
        "forces",
        "stress",
        "state_energies",
        "state_forces",
    )

    def __init__(self, atoms: Atoms, **results: Any):
        states = {k: results.pop(k) for k in STATE_KEYS if k in results}
        super().__init__(atoms, **results)
        for key, value in states.items():
            self.results[key] = np.array(value, dtype=float)


#: Result keys of per-state labels.
STATE_KEYS = ("state_energies", "state_forces")
