"""Biased dynamics along a reaction coordinate built from interatomic distances.

A :class:`DistanceCV` is a linear combination of distances, e.g. the hydrogen-transfer
coordinate ``s = d(donor-H) - d(acceptor-H)`` (negative at the reactant, positive at the
product). An :class:`UmbrellaBias` restrains it harmonically, ``0.5 k (s - s0)^2``, with
a centre ``s0`` that can move linearly with the step (steered MD), so that MD walks the
system over a barrier it would not cross at the temperature of the run.
:class:`BiasCalculator` adds the bias to any ASE calculator. In a generator it wraps the
:class:`~pal_atoms.dynamics.forwarding.ForwardingCalculator`, so every visited geometry is
judged by the committee's uncertainty exactly as in plain MD; only the integrator sees the
bias, and the energies recorded with each step are the unbiased ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

__all__ = ["BiasCalculator", "DistanceCV", "UmbrellaBias"]


@dataclass(frozen=True, kw_only=True)
class DistanceCV:
    """``s = sum_k c_k |r_(j_k) - r_(i_k)|`` in Å.

    Args:
        terms: ``(i, j, c)`` triples: atom indices and the coefficient of their distance.
    """

    terms: tuple[tuple[int, int, float], ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a distance collective variable needs at least one term")
        for i, j, c in self.terms:
            if int(i) < 0 or int(j) < 0 or int(i) == int(j):
                raise ValueError(f"a distance term needs two different atoms >= 0, got {i}, {j}")
            if not np.isfinite(c):
                raise ValueError(f"coefficient {c} of distance {i}-{j} is not finite")

    @classmethod
    def transfer(cls, donor: int, hydrogen: int, acceptor: int) -> DistanceCV:
        """The transfer coordinate ``d(donor-H) - d(acceptor-H)`` (Å)."""
        if len({donor, hydrogen, acceptor}) != 3:
            raise ValueError(
                f"donor, H and acceptor must be three different atoms, got "
                f"{donor}, {hydrogen}, {acceptor}"
            )
        return cls(terms=((donor, hydrogen, 1.0), (acceptor, hydrogen, -1.0)))

    @property
    def atoms(self) -> list[int]:
        """Atom indices the coordinate depends on, sorted."""
        return sorted({int(k) for i, j, _ in self.terms for k in (i, j)})

    def check(self, atoms: Atoms) -> None:
        """Raise ``ValueError`` if an index is outside ``atoms``."""
        top = max(self.atoms)
        if top >= len(atoms):
            raise ValueError(
                f"the reaction coordinate uses atom {top}, but the structure has {len(atoms)} atoms"
            )

    def value_and_gradient(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        """``s`` in Å and ``ds/dr``, shape ``(n_atoms, 3)`` (dimensionless)."""
        s = 0.0
        grad = np.zeros_like(np.asarray(positions, dtype=float))
        for i, j, c in self.terms:
            v = positions[j] - positions[i]
            d = float(np.linalg.norm(v))
            s += c * d
            u = v / max(d, 1e-12)
            grad[j] += c * u
            grad[i] -= c * u
        return s, grad

    def __call__(self, atoms: Atoms) -> float:
        """``s`` of ``atoms`` in Å."""
        return self.value_and_gradient(atoms.positions)[0]


@dataclass(frozen=True, kw_only=True)
class UmbrellaBias:
    """Harmonic restraint ``0.5 k (s - s0(step))^2`` on a collective variable.

    Args:
        cv: The collective variable.
        k_eV_A2: Force constant in eV/Å² (> 0).
        center_A: Centre ``s0`` at step 0, in Å.
        end_center_A: Centre reached after ``steer_steps`` steps (steered MD; ``None``:
            a fixed umbrella).
        steer_steps: Steps over which the centre moves linearly (then stays).
        sweep: Move the centre back and forth between ``center_A`` and ``end_center_A``
            (a triangle wave of period ``2 * steer_steps``) rather than once, so a long
            run keeps crossing the barrier both ways.
    """

    cv: DistanceCV
    k_eV_A2: float = 5.0
    center_A: float = 0.0
    end_center_A: float | None = None
    steer_steps: int = 0
    sweep: bool = False

    def __post_init__(self) -> None:
        if not (np.isfinite(self.k_eV_A2) and self.k_eV_A2 > 0):
            raise ValueError(f"k_eV_A2 must be > 0, got {self.k_eV_A2}")
        if not np.isfinite(self.center_A):
            raise ValueError(f"center_A must be finite, got {self.center_A}")
        if self.end_center_A is not None:
            if not np.isfinite(self.end_center_A):
                raise ValueError(f"end_center_A must be finite, got {self.end_center_A}")
            if self.steer_steps < 1:
                raise ValueError(f"a moving centre needs steer_steps >= 1, got {self.steer_steps}")
        elif self.steer_steps < 0:
            raise ValueError(f"steer_steps must be >= 0, got {self.steer_steps}")

    def center(self, step: int) -> float:
        """Centre of the restraint at ``step``, in Å."""
        if self.end_center_A is None:
            return self.center_A
        step = max(step, 0)
        if self.sweep:
            step %= 2 * self.steer_steps
            step = min(step, 2 * self.steer_steps - step)
        frac = min(step, self.steer_steps) / self.steer_steps
        return self.center_A + frac * (self.end_center_A - self.center_A)

    def energy_and_forces(
        self, positions: np.ndarray, step: int = 0
    ) -> tuple[float, np.ndarray, float]:
        """Bias energy (eV), its forces (eV/Å, shape ``(n_atoms, 3)``) and ``s`` (Å)."""
        s, grad = self.cv.value_and_gradient(positions)
        ds = s - self.center(step)
        return 0.5 * self.k_eV_A2 * ds * ds, -self.k_eV_A2 * ds * grad, s


class BiasCalculator(Calculator):
    """An ASE calculator plus an :class:`UmbrellaBias`.

    ``energy`` and ``forces`` are the biased ones (what an integrator needs);
    ``unbiased_energy``, ``bias_energy`` and ``cv`` (Å) come with them, and every other
    result of the wrapped calculator (uncertainty keys, ...) is passed through.

    Args:
        calc: The wrapped calculator.
        bias: The restraint.
        step: Step index of a steered bias's centre; a generator sets it every step.
    """

    implemented_properties: ClassVar[list[str]] = [  # type: ignore[misc]
        "energy", "free_energy", "forces", "unbiased_energy", "bias_energy", "cv",
    ]  # fmt: skip

    def __init__(self, calc: Calculator, bias: UmbrellaBias, *, step: int = 0) -> None:
        super().__init__()
        self.calc = calc
        self.bias = bias
        self._step = int(step)

    @property
    def step(self) -> int:
        """Step index of the bias centre."""
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        if int(value) != self._step:
            self._step = int(value)
            self.results = {}  # the same geometry has another bias now

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Evaluate the wrapped calculator on ``atoms`` and add the bias."""
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        atoms = self.atoms
        energy = float(self.calc.get_potential_energy(atoms))
        forces = np.asarray(self.calc.get_forces(atoms), dtype=float)
        extra: dict[str, Any] = dict(getattr(self.calc, "results", {}) or {})
        e_bias, f_bias, s = self.bias.energy_and_forces(atoms.positions, self._step)
        extra.update(
            energy=energy + e_bias,
            free_energy=energy + e_bias,
            forces=forces + f_bias,
            unbiased_energy=energy,
            bias_energy=e_bias,
            cv=s,
        )
        self.results = extra
