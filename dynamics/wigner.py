"""Initial conditions from the harmonic Wigner distribution of a minimum.

For each vibrational normal mode of angular frequency ω, the Wigner distribution of the
harmonic oscillator at temperature T is a Gaussian in the mass-weighted coordinate Q and
momentum P with variances

    σ_Q² = ħ / (2ω) · coth(ħω / 2kT),    σ_P² = ħω / 2 · coth(ħω / 2kT),

which at T = 0 is the vibrational ground state (zero-point motion included, unlike a
classical Boltzmann draw). The modes come from the Hessian at the minimum, by central
finite differences of the forces of any ASE calculator (the oracle, or a committee).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms, units

__all__ = ["NormalModes", "harmonic_modes", "wigner_sample"]

logger = logging.getLogger(__name__)

#: ħ in ASE units (eV · ASE time).
_HBAR = units._hbar * units.J * units.s
#: Frequencies below this (cm⁻¹) are translations, rotations or numerical noise.
_MIN_WAVENUMBER = 50.0


def _wavenumbers(omega: np.ndarray) -> np.ndarray:
    """Angular frequencies in ASE units (1/ASE time) to wavenumbers in cm⁻¹."""
    per_s = omega * units.s  # rad/s
    return per_s / (2 * np.pi * units._c * 100)


@dataclass(frozen=True, kw_only=True)
class NormalModes:
    """Vibrational normal modes of a minimum.

    Attributes:
        atoms: The minimum (positions in Å; ``info`` kept).
        wavenumbers_cm1: Vibrational wavenumbers, cm⁻¹, ``(n_modes,)``.
        modes: Mass-weighted eigenvectors, ``(n_modes, n_atoms, 3)`` (orthonormal).
    """

    atoms: Atoms
    wavenumbers_cm1: np.ndarray
    modes: np.ndarray

    @property
    def omega(self) -> np.ndarray:
        """Angular frequencies in ASE units (1/ASE time), ``(n_modes,)``."""
        return self.wavenumbers_cm1 * (2 * np.pi * units._c * 100) / units.s

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {
            "numbers": self.atoms.numbers.tolist(),
            "positions": self.atoms.positions.tolist(),
            "info": {
                k: v for k, v in self.atoms.info.items() if isinstance(v, (int, float, str, bool))
            },
            "wavenumbers_cm1": self.wavenumbers_cm1.tolist(),
            "modes": self.modes.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalModes:
        """Inverse of :meth:`as_dict`."""
        atoms = Atoms(numbers=data["numbers"], positions=data["positions"])
        atoms.info.update(data.get("info", {}))
        return cls(
            atoms=atoms,
            wavenumbers_cm1=np.asarray(data["wavenumbers_cm1"], dtype=float),
            modes=np.asarray(data["modes"], dtype=float),
        )


def _calculator_forces(calc: Any) -> Callable[[Atoms], np.ndarray]:
    def forces(atoms: Atoms) -> np.ndarray:
        work = atoms.copy()
        work.calc = calc
        return np.asarray(work.get_forces(), dtype=float)

    return forces


def harmonic_modes(
    atoms: Atoms,
    forces: Callable[[Atoms], np.ndarray] | Any,
    *,
    delta_A: float = 0.005,
) -> NormalModes:
    """Normal modes at ``atoms`` from a finite-difference Hessian (6N force calls).

    Args:
        atoms: A minimum of the surface (relax it first); not modified.
        forces: An ASE calculator, or a callable ``forces(atoms) -> (n_atoms, 3)`` in eV/Å.
        delta_A: Displacement of the central differences, Å.

    Returns:
        The vibrational modes (translations, rotations and modes below 50 cm⁻¹ dropped;
        imaginary modes, which mean ``atoms`` is not a minimum, dropped with a warning).

    Raises:
        ValueError: no vibrational mode is left.
    """
    force_of = forces if callable(forces) else _calculator_forces(forces)
    n = len(atoms)
    hessian = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += delta_A
            minus.positions[i, k] -= delta_A
            hessian[3 * i + k] = -(force_of(plus) - force_of(minus)).ravel() / (2 * delta_A)
    hessian = 0.5 * (hessian + hessian.T)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(atoms.get_masses()), 3)
    mass_weighted = hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    eig, vec = np.linalg.eigh(mass_weighted)
    omega = np.sign(eig) * np.sqrt(np.abs(eig))  # negative: imaginary
    wavenumbers = _wavenumbers(omega)
    imaginary = wavenumbers < -_MIN_WAVENUMBER
    if imaginary.any():
        logger.warning(
            "dropping %d imaginary mode(s) (%s cm⁻¹): the structure is not a minimum",
            int(imaginary.sum()),
            ", ".join(f"{w:.0f}i" for w in -wavenumbers[imaginary]),
        )
    keep = wavenumbers > _MIN_WAVENUMBER
    if not keep.any():
        raise ValueError("no vibrational mode above 50 cm⁻¹: is the structure a minimum?")
    modes = vec[:, keep].T.reshape(-1, n, 3)
    return NormalModes(atoms=atoms.copy(), wavenumbers_cm1=wavenumbers[keep], modes=modes)


def wigner_sample(
    modes: NormalModes, rng: np.random.Generator, *, temperature_K: float = 0.0
) -> Atoms:
    """One structure with momenta drawn from the harmonic Wigner distribution.

    Args:
        modes: Normal modes of the minimum.
        rng: Random generator.
        temperature_K: Vibrational temperature, K (0: ground state, zero-point energy).

    Returns:
        A copy of the minimum, displaced, with momenta set (ASE units); ``info`` kept.
    """
    omega = modes.omega
    x = _HBAR * omega / 2
    if temperature_K > 0:
        coth = 1.0 / np.tanh(x / (units.kB * temperature_K))
    else:
        coth = np.ones_like(omega)
    sigma_q = np.sqrt(_HBAR / (2 * omega) * coth)  # sqrt(amu) Å
    sigma_p = np.sqrt(_HBAR * omega / 2 * coth)  # sqrt(amu) Å / ASE time
    q = rng.normal(size=len(omega)) * sigma_q
    p = rng.normal(size=len(omega)) * sigma_p
    atoms = modes.atoms.copy()
    sqrt_m = np.sqrt(atoms.get_masses())[:, None]
    atoms.positions = atoms.positions + np.einsum("k,kni->ni", q, modes.modes) / sqrt_m
    velocities = np.einsum("k,kni->ni", p, modes.modes) / sqrt_m
    atoms.set_velocities(velocities)
    return atoms
