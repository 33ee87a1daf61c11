"""Shared fixtures: tiny seeded structures built in code."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator


def bi_cluster(n: int, *, seed: int = 0, charge: int = 0, spacing_A: float = 3.1) -> Atoms:
    """A compact Bi_n cluster: points on a jittered fcc-like grid, minimum distance ~3 Å."""
    rng = np.random.default_rng(seed)
    grid = np.array([(i, j, k) for i in range(3) for j in range(3) for k in range(3)], float)
    grid = grid[np.argsort(np.linalg.norm(grid - 1.0, axis=1))][:n]
    pos = grid * spacing_A + rng.normal(scale=0.05, size=(n, 3))
    atoms = Atoms(f"Bi{n}", positions=pos - pos.mean(axis=0))
    atoms.info["charge"] = charge
    return atoms


def with_fake_label(atoms: Atoms, *, seed: int = 0, stress: bool = False) -> Atoms:
    """Attach deterministic numbers (for store tests, which test storage, not physics)."""
    rng = np.random.default_rng(seed)
    results = {"energy": float(rng.normal()), "forces": rng.normal(size=(len(atoms), 3))}
    if stress:
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture
def mixed_frames() -> list[Atoms]:
    """Structures of different sizes, elements and periodicity, with labels attached."""
    frames = [bi_cluster(2), bi_cluster(8, seed=1, charge=-2), molecule("CH3CH2OH")]
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    frames = [with_fake_label(a, seed=i) for i, a in enumerate(frames)]
    frames.append(with_fake_label(cu, seed=9, stress=True))
    return frames
