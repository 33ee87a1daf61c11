"""Bi clusters and ethanol labelled with tblite GFN2-xTB, generated in code (no files)."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS


def xtb(charge: int = 0):
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=charge, verbosity=0)


def bi_cluster(n: int, seed: int = 0, charge: int = 0) -> Atoms:
    """Compact Bi_n start geometry (nearest neighbours ~3.1 Å)."""
    shapes = {
        4: [[0, 0, 0], [3.1, 0, 0], [1.55, 2.68, 0], [1.55, 0.89, 2.53]],
        6: [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
        8: [
            [1, 1, 1],
            [1, 1, -1],
            [1, -1, 1],
            [-1, 1, 1],
            [-1, -1, 1],
            [-1, 1, -1],
            [1, -1, -1],
            [-1, -1, -1],
        ],
    }
    if n in (4,):
        pos = np.array(shapes[4], float)
    elif n == 6:
        pos = np.array(shapes[6], float) * 2.2
    elif n == 8:
        pos = np.array(shapes[8], float) * 1.6
    else:  # Bi5, Bi7: ring-like start
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pos = np.c_[2.6 * np.cos(ang), 2.6 * np.sin(ang), 0.6 * (-1) ** np.arange(n)]
    rng = np.random.default_rng(seed)
    atoms = Atoms(f"Bi{n}", positions=pos + rng.normal(scale=0.05, size=pos.shape))
    atoms.info["charge"] = charge
    return atoms


def relax(atoms: Atoms, charge: int = 0, fmax: float = 0.05, steps: int = 100) -> Atoms:
    atoms = atoms.copy()
    atoms.info["charge"] = charge
    atoms.calc = xtb(charge)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return atoms


def label(atoms: Atoms) -> Atoms:
    """Copy of ``atoms`` with a SinglePointCalculator holding tblite energy and forces."""
    charge = int(atoms.info.get("charge", 0))
    work = atoms.copy()
    work.calc = xtb(charge)
    e, f = work.get_potential_energy(), work.get_forces()
    out = atoms.copy()
    out.info["charge"] = charge
    out.calc = SinglePointCalculator(out, energy=e, free_energy=e, forces=f)
    return out


def md_frames(
    start: Atoms,
    n_frames: int,
    temperature_K: float,
    every: int = 5,
    seed: int = 0,
    timestep_fs: float = 2.0,
) -> list[Atoms]:
    """Labelled frames of a tblite Langevin run at ``temperature_K``."""
    atoms = start.copy()
    charge = int(start.info.get("charge", 0))
    atoms.info["charge"] = charge
    atoms.calc = xtb(charge)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=0.02,
        rng=rng,
        fixcm=False,  # ASE >= 3.28: fixcm=True is deprecated (biased NVT)
    )
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        frames.append(label(atoms))
    return frames


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def distorted(atoms: Atoms, scale: float, seed: int = 0) -> Atoms:
    """Strongly rattled copy (Gaussian displacements of ``scale`` Å), labelled."""
    out = atoms.copy()
    rng = np.random.default_rng(seed)
    out.positions = out.positions + rng.normal(scale=scale, size=out.positions.shape)
    return label(out)


def force_mae(committee, frames) -> float:
    results = committee.predict_batch(frames)
    return float(
        np.mean(
            [
                np.abs(r["forces"] - a.get_forces()).mean()
                for r, a in zip(results, frames, strict=True)
            ]
        )
    )
