"""A reaction path along a distance coordinate by adiabatic mapping.

For each of ``images`` centres spaced evenly from the reactant's value of the collective
variable to the product's, the structure is relaxed on the given calculator plus a stiff
harmonic restraint at that centre (starting from the previous image, so the path is
continuous). The relaxed images approximate the minimum-energy path projected on the
coordinate; their unbiased energies give the barrier. Cheap on a committee, and
deterministic, so the same geometries can be handed to every level of theory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from .bias import BiasCalculator, DistanceCV, UmbrellaBias

__all__ = ["PathSettings", "barrier", "transfer_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PathSettings:
    """Settings of :func:`transfer_path`.

    Args:
        images: Points along the coordinate, both ends included (>= 3).
        k_eV_A2: Force constant of the restraint that holds each image at its centre,
            eV/Å² (stiff, so the images sit close to their centres).
        fmax_eV_A: Convergence of each relaxation on the largest biased force, eV/Å.
        max_steps: Optimizer steps per image (an image that does not converge is kept,
            with ``info["converged"] = False``).
    """

    images: int = 11
    k_eV_A2: float = 20.0
    fmax_eV_A: float = 0.05
    max_steps: int = 200

    def __post_init__(self) -> None:
        if self.images < 3:
            raise ValueError(f"images must be >= 3, got {self.images}")
        if not (np.isfinite(self.k_eV_A2) and self.k_eV_A2 > 0):
            raise ValueError(f"k_eV_A2 must be > 0, got {self.k_eV_A2}")
        if not (np.isfinite(self.fmax_eV_A) and self.fmax_eV_A > 0):
            raise ValueError(f"fmax_eV_A must be > 0, got {self.fmax_eV_A}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


def transfer_path(
    calc: Calculator,
    atoms: Atoms,
    cv: DistanceCV,
    *,
    settings: PathSettings | None = None,
    end_A: float | None = None,
    start: Sequence[Atoms] | None = None,
) -> list[Atoms]:
    """Relaxed images along ``cv`` from ``atoms``'s value to ``end_A``.

    Args:
        calc: Calculator of the surface (e.g. a committee); shared by all images.
        atoms: Reactant; its ``info`` (charge, multiplicity) goes to every image.
        cv: The coordinate, e.g. :meth:`DistanceCV.transfer`.
        settings: Images, restraint and convergence.
        end_A: Product value of the coordinate, Å (default: the mirror image ``-s0``,
            the product of a symmetric transfer).
        start: Initial geometries of the images (e.g. the path on another surface), one
            per image; default: each relaxation starts from the previous image.

    Returns:
        ``settings.images`` structures without calculator; ``info`` holds ``cv_center``
        and ``cv`` (Å), ``energy`` (eV, unbiased, on ``calc``) and ``converged``.
    """
    settings = settings or PathSettings()
    cv.check(atoms)
    s0 = cv(atoms)
    s1 = -s0 if end_A is None else float(end_A)
    if start is not None and len(start) != settings.images:
        raise ValueError(f"start has {len(start)} images, settings ask for {settings.images}")
    centres = np.linspace(s0, s1, settings.images)
    work = atoms.copy()
    work.info = dict(atoms.info)
    out: list[Atoms] = []
    for i, centre in enumerate(centres):
        if start is not None:
            work.positions = start[i].positions
        bias = BiasCalculator(calc, UmbrellaBias(cv=cv, k_eV_A2=settings.k_eV_A2, center_A=centre))
        work.calc = bias
        opt = BFGS(work, logfile=None)
        converged = bool(opt.run(fmax=settings.fmax_eV_A, steps=settings.max_steps))
        image = Atoms(work.numbers, work.positions.copy(), cell=work.cell, pbc=work.pbc)
        image.info = dict(atoms.info)
        image.info.update(
            cv_center=float(centre),
            cv=float(bias.results["cv"]),
            energy=float(bias.results["unbiased_energy"]),
            converged=converged,
        )
        out.append(image)
    n_bad = sum(not im.info["converged"] for im in out)
    if n_bad:
        logger.warning("%d of %d path images did not converge", n_bad, len(out))
    return out


def barrier(energies: Sequence[float]) -> float:
    """Forward barrier of a path in eV: the highest energy less the first (reactant)."""
    e = np.asarray(energies, dtype=float)
    return float(e.max() - e[0])
