"""Structures for bench/al_vs_random.py: systems, the held-out test set, random-MD pools.

Everything here is labelled with GFN2-xTB (tblite, through :class:`pal_atoms.oracles.XTB`)
and cached as extxyz files keyed by a hash of the settings that made them, so a rerun
with the same settings skips the oracle MD.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution as thermalize_momenta,  # noqa: N813
    )

from pal_atoms.oracles import XTB, label

from pal_atoms.core.checks import charge_and_multiplicity, min_distance

ROOT = Path(__file__).resolve().parents[1]
#: Bump when the way structures are made changes (invalidates the cache).
DATA_VERSION = 3


@dataclass(frozen=True)
class System:
    """A benchmark system: starting frames and MD settings that suit its atoms."""

    name: str
    frames: tuple[Atoms, ...]
    timestep_fs: float  # MD time step
    stride: int  # MD steps between kept frames
    equilibrate: int  # MD steps before the first kept frame

    @property
    def elements(self) -> list[str]:
        return sorted({s for a in self.frames for s in a.get_chemical_symbols()})

    @property
    def charges(self) -> list[int]:
        return sorted({int(a.info["charge"]) for a in self.frames})

    def describe(self) -> list[str]:
        return [f"{a.get_chemical_formula()}({int(a.info['charge']):+d})" for a in self.frames]


def load_system(name: str) -> System:
    """``"bi"``: every frame of examples/bi_cluster.xyz (charges from the file);
    ``"ethanol"``: ase.build.molecule("CH3CH2OH")."""
    if name == "bi":
        frames = list(ase.io.read(ROOT / "examples" / "bi_cluster.xyz", ":"))
        system = System("bi", (), timestep_fs=2.0, stride=10, equilibrate=40)
    elif name == "ethanol":
        frames = [molecule("CH3CH2OH")]
        system = System("ethanol", (), timestep_fs=0.5, stride=20, equilibrate=100)
    else:
        raise ValueError(f"unknown system {name!r}")
    clean = []
    for atoms in frames:
        q, m = charge_and_multiplicity(atoms)
        a = Atoms(atoms.numbers, atoms.positions)
        a.info.update(charge=q, multiplicity=m)
        clean.append(a)
    return System(name, tuple(clean), system.timestep_fs, system.stride, system.equilibrate)


def settings_key(payload: dict[str, Any]) -> str:
    text = json.dumps({"data_version": DATA_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _labelled(work: Atoms, source: Atoms, **info: Any) -> Atoms:
    """Copy of the current MD frame with the oracle's energy and forces attached."""
    frame = Atoms(work.numbers, work.positions.copy())
    frame.info.update(charge=source.info["charge"], multiplicity=source.info["multiplicity"])
    frame.info.update(info)
    e, f = work.get_potential_energy(), work.get_forces()
    frame.calc = SinglePointCalculator(frame, energy=e, free_energy=e, forces=f)
    return frame


def oracle_md(
    system: System,
    source: Atoms,
    temperature_K: float,
    n_frames: int,
    rng: np.random.Generator,
    *,
    stride: int | None = None,
    **info: Any,
) -> list[Atoms]:
    """``n_frames`` xTB-labelled frames of a Langevin run on xTB itself at ``temperature_K``,
    one every ``stride`` steps (default: the system's) after the system's equilibration."""
    work = source.copy()
    work.calc = XTB()
    thermalize_momenta(work, temperature_K=temperature_K, rng=rng)
    Stationary(work)
    ZeroRotation(work)
    dyn = Langevin(
        work,
        timestep=system.timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=0.02 / units.fs,
        rng=rng,
        logfile=None,
    )
    dyn.run(system.equilibrate)
    out = []
    for _ in range(n_frames):
        dyn.run(stride or system.stride)
        out.append(_labelled(work, source, temperature_K=temperature_K, **info))
    return out


def distorted(
    source: Atoms,
    n: int,
    rng: np.random.Generator,
    *,
    rattle_A: tuple[float, float] = (0.2, 0.3),
    strain: tuple[float, float] = (0.9, 1.12),
    closest: float = 0.85,
    max_force_eV_A: float = 25.0,
) -> list[Atoms]:
    """Strongly distorted copies: uniform strain about the centre of mass, then Gaussian
    displacements of a standard deviation drawn from ``rattle_A``; xTB-labelled.

    Geometries with atoms closer than ``closest`` x the source's shortest distance, or an
    atomic force above ``max_force_eV_A``, are drawn again: squeezing two Bi atoms to
    2.0 Å gives forces of 100-200 eV/Å, a wall no user simulates, which would swamp the
    force MAE of everything else."""
    oracle = XTB()
    floor = closest * min_distance(source)
    out: list[Atoms] = []
    while len(out) < n:
        scale = rng.uniform(*strain)
        sigma = rng.uniform(*rattle_A)
        a = source.copy()
        com = a.get_center_of_mass()
        a.positions = com + scale * (a.positions - com) + rng.normal(0, sigma, a.positions.shape)
        if min_distance(a) < floor:
            continue
        lab = label(a, oracle)
        if not lab.ok or np.linalg.norm(lab.forces, axis=1).max() > max_force_eV_A:
            continue
        frame = lab.to_atoms()
        frame.info.update(rattle_A=round(float(sigma), 4), strain=round(float(scale), 4))
        out.append(frame)
    return out


def _cached(path: Path, make) -> list[Atoms]:
    if path.exists():
        return list(ase.io.read(path, ":"))
    frames = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.extxyz")
    ase.io.write(tmp, frames, format="extxyz")
    tmp.replace(path)
    return list(ase.io.read(path, ":"))


def make_test_set(
    system: System,
    *,
    temperatures: tuple[float, ...],
    md_per_temperature: int,
    distorted_per_frame: int,
    cache: Path,
    seed: int = 12345,
) -> tuple[list[Atoms], Path]:
    """Held-out frames: xTB MD at every temperature from every frame (category ``mdT``)
    and strongly distorted geometries of every frame (category ``distorted``)."""
    key = settings_key(
        {
            "what": "test",
            "system": system.name,
            "temperatures": temperatures,
            "md": md_per_temperature,
            "distorted": distorted_per_frame,
            "seed": seed,
        }
    )
    path = cache / f"test_{system.name}_{key}.extxyz"

    def make() -> list[Atoms]:
        rng = np.random.default_rng(seed)
        out: list[Atoms] = []
        for i, source in enumerate(system.frames):
            for t in temperatures:
                out += oracle_md(
                    system,
                    source,
                    t,
                    md_per_temperature,
                    rng,
                    stride=5 * system.stride,  # frames 100 fs apart for Bi: a longer window
                    category=f"md{t:g}",
                    frame=i,
                )
            for frame in distorted(source, distorted_per_frame, rng):
                frame.info.update(category="distorted", frame=i)
                out.append(frame)
        return out

    return _cached(path, make), path


def random_pool(
    system: System, *, temperatures: tuple[float, ...], size: int, seed: int, cache: Path
) -> list[Atoms]:
    """Frames of plain xTB MD at ``temperatures`` from every frame, in a random order.

    At least ``size`` frames, spread evenly over frames and temperatures; the seed sets
    the velocities, the thermostat noise and the order (a uniform random draw).
    """
    per = math.ceil(size / (len(system.frames) * len(temperatures)))
    key = settings_key(
        {"what": "pool", "system": system.name, "temperatures": temperatures, "per": per}
        | {"seed": seed}
    )
    path = cache / f"pool_{system.name}_s{seed}_{key}.extxyz"

    def make() -> list[Atoms]:
        rng = np.random.default_rng([seed, 7])
        out: list[Atoms] = []
        for i, source in enumerate(system.frames):
            for t in temperatures:
                out += oracle_md(system, source, t, per, rng, category=f"random{t:g}", frame=i)
        return [out[k] for k in rng.permutation(len(out))]

    return _cached(path, make)
