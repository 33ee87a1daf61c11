"""Landau-Zener surface hopping from adiabatic energies alone (Belyaev-Lebedev).

CPU quantum chemistry gives no TDDFT nonadiabatic couplings, and a committee predicts
none, so hops are decided from the adiabatic gaps along the trajectory. At a local
minimum of the gap ``Z(t) = |E_j - E_i|`` between the active state ``i`` and a state
``j``, the Belyaev-Lebedev formula gives the hopping probability

    P = exp(-(π / 2ħ) sqrt(Z³ / Z̈)),

with ``Z̈`` the second time derivative of the gap at the minimum (finite differences of
three consecutive steps). For a linear diabatic crossing it is exactly the Landau-Zener
probability ``exp(-2π H12² / (ħ |d(H11 - H22)/dt|))`` (tests/dynamics/test_hopping.py).
After a hop, energy is conserved by rescaling the velocities along the difference of the
two states' forces (the direction the nonadiabatic coupling vector is approximated by in
gradient-only schemes), or along the velocities; a hop that the kinetic energy along that
direction cannot pay for is *frustrated*: the trajectory stays on its state.

References: A. K. Belyaev, O. V. Lebedev, Phys. Rev. A 84, 014701 (2011); A. K.
Belyaev, C. Lasser, G. Trigila, J. Chem. Phys. 140, 224108 (2014).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from ase import units

__all__ = [
    "HBAR_EV_FS",
    "GapTracker",
    "HopCandidate",
    "Rescaling",
    "belyaev_lebedev_probability",
    "rescale_velocities",
]

#: ħ in eV·fs.
HBAR_EV_FS = units._hbar / units._e * 1e15


class Rescaling(str, enum.Enum):
    """Direction along which velocities are rescaled after a hop."""

    GRADIENT_DIFFERENCE = "gradient_difference"  # along F_new - F_old (mass-weighted)
    VELOCITY = "velocity"  # uniform scaling of all velocities

    def __str__(self) -> str:
        return self.value


def belyaev_lebedev_probability(gap_eV: float, curvature_eV_fs2: float) -> float:
    """Hopping probability at a local minimum of an adiabatic gap.

    Args:
        gap_eV: The gap ``Z`` at its minimum, eV (> 0).
        curvature_eV_fs2: ``Z̈``, its second time derivative there, eV/fs² (> 0 at a
            minimum).

    Returns:
        ``exp(-(π/2ħ) sqrt(Z³/Z̈))``; 0 where ``Z̈ <= 0`` (not a minimum), 1 at ``Z = 0``.
    """
    if curvature_eV_fs2 <= 0 or not math.isfinite(curvature_eV_fs2):
        return 0.0
    if gap_eV <= 0:
        return 1.0
    return math.exp(-math.pi / (2 * HBAR_EV_FS) * math.sqrt(gap_eV**3 / curvature_eV_fs2))


@dataclass(frozen=True, kw_only=True)
class HopCandidate:
    """A local gap minimum with the active state, and its hopping probability.

    Attributes:
        target: The other state.
        gap_eV: The gap at the minimum, eV.
        curvature_eV_fs2: Its second time derivative there, eV/fs².
        probability: Belyaev-Lebedev probability.
    """

    target: int
    gap_eV: float
    curvature_eV_fs2: float
    probability: float


class GapTracker:
    """Gaps between the active state and every other state over the last three steps.

    Call :meth:`push` after each step with the state energies; it returns the states
    whose gap had a local minimum at the *previous* step, with their probabilities.
    Clear it after a hop or a restart (the gaps then belong to another state).

    Args:
        timestep_fs: Time between pushes, fs.
    """

    def __init__(self, timestep_fs: float) -> None:
        if not timestep_fs > 0:
            raise ValueError(f"timestep_fs must be > 0, got {timestep_fs}")
        self.timestep_fs = float(timestep_fs)
        self._gaps: deque[np.ndarray] = deque(maxlen=3)

    def clear(self) -> None:
        """Forget the history."""
        self._gaps.clear()

    def push(self, energies_eV: np.ndarray, active: int) -> list[HopCandidate]:
        """Add one step's state energies (eV, ``(n_states,)``); return the minima found."""
        gaps = np.abs(np.asarray(energies_eV, dtype=float) - float(energies_eV[active]))
        self._gaps.append(gaps)
        if len(self._gaps) < 3:
            return []
        before, at, after = self._gaps
        out = []
        dt2 = self.timestep_fs**2
        for j in range(len(gaps)):
            if j == active or not (at[j] < before[j] and at[j] <= after[j]):
                continue
            curvature = (after[j] - 2 * at[j] + before[j]) / dt2
            out.append(
                HopCandidate(
                    target=j,
                    gap_eV=float(at[j]),
                    curvature_eV_fs2=float(curvature),
                    probability=belyaev_lebedev_probability(float(at[j]), float(curvature)),
                )
            )
        return out


def rescale_velocities(
    velocities: np.ndarray,
    masses: np.ndarray,
    delta_e_eV: float,
    direction: np.ndarray | None = None,
) -> np.ndarray | None:
    """Velocities after a hop that changes the potential energy by ``delta_e_eV``.

    The kinetic energy changes by ``-delta_e_eV`` (total energy conserved), by moving the
    velocities along ``direction`` (per atom, ``(n_atoms, 3)``; mass-weighted: atom ``a``
    moves by ``γ d_a / m_a``), or scaling them uniformly when ``direction`` is ``None``.

    Args:
        velocities: ASE velocities (Å per ASE time unit), ``(n_atoms, 3)``.
        masses: Atomic masses in amu, ``(n_atoms,)``.
        delta_e_eV: ``E_new - E_old`` of the potential energy, eV.
        direction: Rescaling direction, or ``None`` for uniform scaling.

    Returns:
        New velocities, or ``None`` when the hop is frustrated (not enough kinetic energy
        along the direction).
    """
    v = np.asarray(velocities, dtype=float)
    m = np.asarray(masses, dtype=float)[:, None]
    kinetic = 0.5 * float((m * v**2).sum())
    if direction is None:
        if kinetic - delta_e_eV < 0 or kinetic <= 0:
            return None
        return v * math.sqrt((kinetic - delta_e_eV) / kinetic)
    d = np.asarray(direction, dtype=float)
    a = 0.5 * float((d**2 / m).sum())
    b = float((v * d).sum())
    if a <= 0:
        return None
    disc = b * b - 4 * a * delta_e_eV
    if disc < 0:
        return None
    # The root of a γ² - b γ + ΔE = 0 closest to zero: the smallest change of velocity.
    gamma = (b - math.sqrt(disc)) / (2 * a) if b >= 0 else (b + math.sqrt(disc)) / (2 * a)
    return v - gamma * d / m
