"""Transition-state generators driven by the committee: Sella saddle search and (CI-)NEB.

Every geometry Sella or the NEB optimizer evaluates (Hessian-vector products and all
images included) goes through the same forwarding calculator, so each one is judged by
the controller and the generator reacts to the worst verdict of a step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from pal_atoms.core.checks import validate_structure

from .driven import DriverGenerator
from .forwarding import ForwardingCalculator
from .mpi_safety import local_comm

__all__ = ["NEBGenerator", "NEBSettings", "SellaGenerator", "SellaSettings"]

logger = logging.getLogger(__name__)

_NEB_OPTIMIZERS = ("FIRE", "BFGS", "MDMin", "LBFGS")


def _check_common(fmax_eV_A: float, max_iterations: int, patience: int, max_restarts: int) -> None:
    if not fmax_eV_A > 0:
        raise ValueError(f"fmax_eV_A must be > 0, got {fmax_eV_A}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    if patience < 0 or max_restarts < 0:
        raise ValueError(f"patience and max_restarts must be >= 0, got {patience}, {max_restarts}")


@dataclass(frozen=True, kw_only=True)
class SellaSettings:
    """Settings of a Sella saddle search.

    Args:
        order: Saddle order (1 for a transition state, 0 for a minimum).
        fmax_eV_A: Convergence threshold on the largest force in eV/Å.
        max_iterations: Sella steps per attempt.
        perturbation_A: Standard deviation of the random displacement (Å) applied to the
            starting minimum; every attempt draws a new one.
        internal: Use Sella's internal coordinates (recommended for molecules).
        patience: Consecutive uncertain steps tolerated before a restart.
        max_restarts: Restarts (new perturbations) before giving up.
        min_distance_A: Closest allowed approach in Å (``None``: off).
        max_distance_A: Fragment criterion in Å (``None``: off).
        seed: Seed of the perturbations.
    """

    order: int = 1
    fmax_eV_A: float = 0.01
    max_iterations: int = 200
    perturbation_A: float = 0.05
    internal: bool = True
    patience: int = 5
    max_restarts: int = 3
    min_distance_A: float | None = 0.5
    max_distance_A: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.order < 0:
            raise ValueError(f"order must be >= 0, got {self.order}")
        if self.perturbation_A < 0:
            raise ValueError(f"perturbation_A must be >= 0, got {self.perturbation_A}")
        _check_common(self.fmax_eV_A, self.max_iterations, self.patience, self.max_restarts)


class SellaGenerator(DriverGenerator):
    """Saddle-point search with Sella from a perturbed minimum, on the committee.

    Args:
        minimum: Starting structure, usually a minimum (copied).
        settings: Sella settings.
        generator_id: Id of this generator.

    Attributes:
        saddle: The converged saddle geometry (``None`` until converged).
    """

    def __init__(
        self, minimum: Atoms, *, settings: SellaSettings | None = None, generator_id: int = 0
    ) -> None:
        s = settings if settings is not None else SellaSettings()
        super().__init__(
            generator_id=generator_id,
            fmax_eV_A=s.fmax_eV_A,
            max_iterations=s.max_iterations,
            patience=s.patience,
            max_restarts=s.max_restarts,
            min_distance_A=s.min_distance_A,
            max_distance_A=s.max_distance_A,
        )
        validate_structure(minimum, min_distance_A=s.min_distance_A, what="Sella start")
        self.settings = s
        self.minimum = minimum.copy()
        self.minimum.calc = None
        self.atoms = self.minimum.copy()
        self.saddle: Atoms | None = None

    def _reset(self, attempt: int) -> None:
        rng = np.random.default_rng([self.settings.seed, attempt])
        self.atoms = self.minimum.copy()
        self.atoms.positions += rng.normal(
            0.0, self.settings.perturbation_A, self.atoms.positions.shape
        )

    def _attach(self, calc: ForwardingCalculator) -> None:
        self.atoms.calc = calc

    def _make_driver(self) -> Any:
        from sella import Sella

        opt = Sella(
            self.atoms,
            order=self.settings.order,
            internal=self.settings.internal,
            logfile=None,  # type: ignore[arg-type]
            trajectory=None,
            master=True,
        )
        # Sella does not forward ``comm`` to ASE's Optimizer, which then uses the world.
        opt.comm = local_comm()
        return opt

    def irun(self, *args: Any, **kwargs: Any) -> Any:
        """Search, one event per Sella step (see :meth:`Generator.irun`)."""
        for event in super().irun(*args, **kwargs):
            if self.converged and self.saddle is None:
                self.saddle = self.atoms.copy()
                self.saddle.calc = None
            yield event

    def state(self) -> dict[str, Any]:
        """Counters, current positions and the saddle (if found), JSON-serialisable."""
        return {
            **self._driver_state(),
            "positions": self.atoms.positions.tolist(),
            "saddle": None if self.saddle is None else self.saddle.positions.tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`; Sella's Hessian estimate starts afresh."""
        self._restore_driver(state)
        self.atoms = self.minimum.copy()
        self.atoms.positions = state["positions"]
        self.saddle = None
        if state.get("saddle") is not None:
            self.saddle = self.minimum.copy()
            self.saddle.positions = state["saddle"]


@dataclass(frozen=True, kw_only=True)
class NEBSettings:
    """Settings of a nudged-elastic-band generator.

    Args:
        n_images: Number of movable images between the endpoints.
        climb: Climbing-image NEB.
        spring_eV_A2: Spring constant in eV/Å².
        method: ASE NEB method (``"aseneb"``, ``"improvedtangent"``, ``"eb"``, ...).
        interpolation: ``"idpp"`` or ``"linear"``.
        optimizer: ``"FIRE"``, ``"BFGS"``, ``"LBFGS"`` or ``"MDMin"``.
        fmax_eV_A: Convergence threshold on NEB forces in eV/Å.
        max_iterations: Optimizer steps per attempt.
        patience: Consecutive steps with an uncertain image tolerated.
        max_restarts: Restarts (re-interpolations) before giving up.
        min_distance_A: Closest allowed approach in Å (``None``: off).
        max_distance_A: Fragment criterion in Å (``None``: off).
    """

    n_images: int = 5
    climb: bool = True
    spring_eV_A2: float = 0.1
    method: str = "improvedtangent"
    interpolation: str = "idpp"
    optimizer: str = "FIRE"
    fmax_eV_A: float = 0.05
    max_iterations: int = 200
    patience: int = 5
    max_restarts: int = 2
    min_distance_A: float | None = 0.5
    max_distance_A: float | None = None

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if not self.spring_eV_A2 > 0:
            raise ValueError(f"spring_eV_A2 must be > 0, got {self.spring_eV_A2}")
        if self.interpolation not in ("idpp", "linear"):
            raise ValueError(
                f"interpolation must be 'idpp' or 'linear', got {self.interpolation!r}"
            )
        if self.optimizer not in _NEB_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_NEB_OPTIMIZERS}, got {self.optimizer!r}")
        _check_common(self.fmax_eV_A, self.max_iterations, self.patience, self.max_restarts)


_KEYS = ForwardingCalculator.implemented_properties


class _ImageCalculator(Calculator):
    """Per-image cache in front of one shared forwarding calculator.

    NEB re-asks every image several times per optimizer step; each image keeps its own
    results (ASE caching), while all round trips go through the one forwarding calculator
    (one step counter, one verdict list).
    """

    implemented_properties: ClassVar[tuple[str, ...]] = _KEYS  # type: ignore[assignment,misc]

    check_state = ForwardingCalculator.check_state  # the fast exact comparison

    def __init__(self, forward: ForwardingCalculator) -> None:
        super().__init__()
        self.forward = forward

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Any = ("energy",),
        system_changes: Any = tuple(all_changes),
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        self.forward.calculate(self.atoms, ["energy", "forces"], list(all_changes))
        self.results = dict(self.forward.results)


class NEBGenerator(DriverGenerator):
    """(Climbing-image) NEB between two endpoints, on the committee.

    Args:
        initial: First endpoint (copied).
        final: Second endpoint, same atoms in the same order (copied).
        settings: NEB settings.
        generator_id: Id of this generator.

    Attributes:
        images: Current band, endpoints included.
    """

    def __init__(
        self,
        initial: Atoms,
        final: Atoms,
        *,
        settings: NEBSettings | None = None,
        generator_id: int = 0,
    ) -> None:
        s = settings if settings is not None else NEBSettings()
        super().__init__(
            generator_id=generator_id,
            fmax_eV_A=s.fmax_eV_A,
            max_iterations=s.max_iterations,
            patience=s.patience,
            max_restarts=s.max_restarts,
            min_distance_A=s.min_distance_A,
            max_distance_A=s.max_distance_A,
        )
        if len(initial) != len(final) or list(initial.numbers) != list(final.numbers):
            raise ValueError("NEB endpoints must have the same atoms in the same order")
        for name, a in (("initial", initial), ("final", final)):
            validate_structure(a, min_distance_A=s.min_distance_A, what=f"NEB {name} endpoint")
        self.settings = s
        self.endpoints = (initial.copy(), final.copy())
        for a in self.endpoints:
            a.calc = None
        self.images: list[Atoms] = []

    def _reset(self, attempt: int) -> None:
        from ase.mep import NEB

        first, last = self.endpoints
        self.images = [first.copy()] + [first.copy() for _ in range(self.settings.n_images)]
        self.images.append(last.copy())
        band = NEB(self.images, method=self.settings.method, world=local_comm())
        if self.settings.interpolation == "idpp":
            band.interpolate(method="idpp")
        else:
            band.interpolate()

    def _attach(self, calc: ForwardingCalculator) -> None:
        for image in self.images:
            image.calc = _ImageCalculator(calc)

    def _make_driver(self) -> Any:
        import ase.optimize
        from ase.mep import NEB

        s = self.settings
        band = NEB(
            self.images, k=s.spring_eV_A2, climb=s.climb, method=s.method, world=local_comm()
        )
        optimizer = getattr(ase.optimize, s.optimizer)
        return optimizer(band, logfile=None, trajectory=None, comm=local_comm())

    def _energy(self) -> float | None:
        """Highest image energy in eV (the barrier top)."""
        energies = self.energies()
        return None if energies is None else float(max(energies))

    def energies(self) -> list[float] | None:
        """Image energies in eV (endpoints included), ``None`` before they are known."""
        out = []
        for image in self.images:
            calc = image.calc
            if calc is None or "energy" not in calc.results:
                return None
            out.append(float(calc.results["energy"]))
        return out

    def state(self) -> dict[str, Any]:
        """Counters and the band's positions (Å), JSON-serialisable."""
        return {
            **self._driver_state(),
            "images": [image.positions.tolist() for image in self.images],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`; the optimizer's memory starts afresh."""
        self._restore_driver(state)
        first = self.endpoints[0]
        self.images = []
        for positions in state["images"]:
            image = first.copy()
            image.positions = positions
            self.images.append(image)
        if not self.images:
            self._needs_reset = True
