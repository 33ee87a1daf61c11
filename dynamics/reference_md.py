"""Held-out frames from MD on the reference method itself (the oracle as an ASE calculator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from .mpi_safety import local_comm

__all__ = ["reference_md_frames"]


def reference_md_frames(
    calculator: Any,
    frames: Sequence[Atoms],
    *,
    n_per_frame: int,
    temperature_K: float,
    timestep_fs: float,
    stride: int = 10,
    equilibration_steps: int = 0,
    friction_per_fs: float = 0.02,
    seed: int = 0,
    trajectories: int = 1,
) -> list[Atoms]:
    """Langevin MD on ``calculator`` from each frame; every ``stride``-th step kept.

    Costs ``trajectories * equilibration_steps + n_per_frame * stride`` reference calls
    per frame.

    Args:
        calculator: The reference method (an oracle is an ASE calculator).
        frames: Starting structures; their ``info`` (charge, multiplicity) is kept.
        n_per_frame: Frames kept per starting structure.
        temperature_K: Thermostat temperature in K (also the initial velocities).
        timestep_fs: Time step in fs.
        stride: MD steps between kept frames.
        equilibration_steps: MD steps run before the first kept frame, so the frames
            come from where MD at ``temperature_K`` goes rather than from the first
            femtoseconds after the start geometry.
        friction_per_fs: Langevin friction in 1/fs.
        seed: Random seed of velocities and noise.
        trajectories: Independent trajectories per frame (each from the frame, with its
            own velocities and equilibration); the ``n_per_frame`` frames are shared out
            among them, the first ones getting one more where it does not divide. Frames
            of one trajectory ``stride`` steps apart are correlated; several trajectories
            sample more of the basins that MD at ``temperature_K`` visits.

    Returns:
        ``n_per_frame * len(frames)`` structures (per frame, trajectory by trajectory),
        each with a ``SinglePointCalculator`` holding the reference energy (eV) and
        forces (eV/Å).

    Raises:
        ValueError: ``stride < 1``, ``equilibration_steps < 0`` or ``trajectories < 1``.
    """
    if stride < 1 or equilibration_steps < 0 or trajectories < 1:
        raise ValueError(
            "need stride >= 1, equilibration_steps >= 0 and trajectories >= 1, got "
            f"{stride}, {equilibration_steps}, {trajectories}"
        )
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    shares = [len(part) for part in np.array_split(np.arange(n_per_frame), trajectories)]
    for atoms, n_kept in ((a, n) for a in frames for n in shares if n):
        work = atoms.copy()
        work.calc = calculator
        MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng, comm=local_comm())
        dyn = Langevin(
            work,
            timestep=timestep_fs * units.fs,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            rng=rng,
            comm=local_comm(),
            fixcm=False,  # ASE >= 3.28: fixcm=True is deprecated (biased NVT)
        )
        if equilibration_steps:
            dyn.run(equilibration_steps)
        for _ in range(n_kept):
            dyn.run(stride)
            frame = work.copy()
            frame.info.update(atoms.info)
            frame.calc = SinglePointCalculator(
                frame, energy=work.get_potential_energy(), forces=work.get_forces()
            )
            out.append(frame)
    return out
