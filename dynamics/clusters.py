"""Bismuth cluster builder: compact random Bi_n in several shapes and charge states.

``examples/bi_cluster.xyz`` (Bi4 0/-2, Bi6 0, Bi8 0/+1, GFN2-xTB pre-relaxed) was made with::

    frames = []
    for size, charges in ((4, [0, -2]), (6, [0]), (8, [0, 1])):
        frames += build_bi_clusters([size], shapes_per_size=1, charges=charges, seed=size,
                                    relax_with_xtb=True, min_distance_A=2.6)
    write_frames("examples/bi_cluster.xyz", frames)  # ("shape" removed from info)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms

from pal_atoms.core.checks import charge_and_multiplicity, min_distance

from .mpi_safety import local_comm

__all__ = ["build_bi_clusters", "random_cluster"]

logger = logging.getLogger(__name__)

#: Cluster sizes the builder supports.
MIN_SIZE, MAX_SIZE = 2, 16


def random_cluster(
    symbol: str,
    size: int,
    *,
    min_distance_A: float,
    rng: np.random.Generator,
    bond_spread_A: float = 0.4,
    candidates: int = 24,
) -> Atoms:
    """Compact random cluster grown atom by atom.

    The cluster draws a bond length ``b`` uniformly from ``[min_distance_A, min_distance_A
    + bond_spread_A]``; each new atom is placed at a distance in ``[b, b + 0.15 Å]`` from a
    random atom already placed, and of ``candidates`` trial positions that keep every
    distance above ``min_distance_A``, the one nearest the centroid wins (compact packing).
    The cluster is connected by construction.

    Args:
        symbol: Element symbol.
        size: Number of atoms (>= 1).
        min_distance_A: Smallest interatomic distance in Å (> 0).
        rng: Random generator.
        bond_spread_A: Range of the cluster's bond length above ``min_distance_A``, in Å.
        candidates: Trial positions per atom.

    Returns:
        The cluster, centred at the origin, no cell, no periodicity.
    """
    if size < 1 or not min_distance_A > 0:
        raise ValueError(f"need size >= 1 and min_distance_A > 0, got {size}, {min_distance_A}")
    bond = rng.uniform(min_distance_A, min_distance_A + bond_spread_A)
    positions = [np.zeros(3)]
    while len(positions) < size:
        pos = np.array(positions)
        centre = pos.mean(axis=0)
        anchors = pos[rng.integers(0, len(pos), candidates)]
        direction = rng.normal(size=(candidates, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        radius = rng.uniform(bond, bond + 0.15, (candidates, 1))
        trial = anchors + radius * direction
        dist = np.linalg.norm(trial[:, None, :] - pos[None, :, :], axis=-1).min(axis=1)
        ok = dist >= min_distance_A * (1 + 1e-9)
        if not ok.any():
            continue
        good = trial[ok]
        positions.append(good[np.argmin(np.linalg.norm(good - centre, axis=1))])
    atoms = Atoms([symbol] * size, positions=positions)
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms


def _fingerprint(atoms: Atoms) -> np.ndarray:
    n = len(atoms)
    d = atoms.get_all_distances()
    return np.sort(d[np.triu_indices(n, 1)])


def _relax_xtb(atoms: Atoms, *, fmax_eV_A: float, steps: int) -> Atoms:
    from ase.optimize import FIRE
    from tblite.ase import TBLite

    relaxed = atoms.copy()
    relaxed.calc = TBLite(
        method="GFN2-xTB",
        charge=float(atoms.info["charge"]),
        multiplicity=int(atoms.info["multiplicity"]),
        verbosity=0,
    )
    with FIRE(relaxed, logfile=None, trajectory=None, comm=local_comm()) as opt:
        opt.run(fmax=fmax_eV_A, steps=steps)
    relaxed.info["xtb_energy_eV"] = float(relaxed.get_potential_energy())
    relaxed.calc = None
    relaxed.positions -= relaxed.positions.mean(axis=0)
    return relaxed


def build_bi_clusters(
    sizes: Iterable[int],
    *,
    shapes_per_size: int = 3,
    charges: Sequence[int] = (0,),
    min_distance_A: float = 2.8,
    seed: int = 0,
    relax_with_xtb: bool = False,
    relax_fmax_eV_A: float = 0.1,
    relax_steps: int = 60,
    distinct_tol_A: float = 0.1,
    max_tries: int = 200,
) -> list[Atoms]:
    """Build Bi_n clusters: several distinct compact shapes per size, each in every charge.

    Shapes are grown by :func:`random_cluster`; two shapes count as distinct when their
    sorted interatomic distances differ by more than ``distinct_tol_A`` somewhere.
    Optionally each (shape, charge) is pre-relaxed with GFN2-xTB (tblite) in its charge
    state; a relaxed cluster that ends up with atoms closer than ``min_distance_A`` keeps
    its unrelaxed geometry (logged).

    Args:
        sizes: Cluster sizes, each in 2..16.
        shapes_per_size: Distinct starting shapes per size (>= 1).
        charges: Total charges (elementary charges), e.g. ``range(-2, 3)``.
        min_distance_A: Smallest Bi-Bi distance in Å (> 0); the Bi-Bi bond is ~3.0 Å.
        seed: Random seed (the output is deterministic).
        relax_with_xtb: Pre-relax with tblite GFN2-xTB.
        relax_fmax_eV_A: Force threshold of the pre-relaxation in eV/Å.
        relax_steps: Steps of the pre-relaxation (FIRE) at most.
        distinct_tol_A: Distance-fingerprint tolerance for distinct shapes, in Å.
        max_tries: Draws per shape before giving up on distinctness.

    Returns:
        Clusters ordered by size, shape, charge; ``atoms.info`` holds ``charge``,
        ``multiplicity`` (lowest spin the electron count allows), ``size`` and ``shape``.

    Raises:
        ValueError: A size outside 2..16, an empty ``charges``, or no distinct shapes.
    """
    sizes = list(sizes)
    charges = [int(q) for q in charges]
    if not sizes or any(not MIN_SIZE <= int(n) <= MAX_SIZE for n in sizes):
        raise ValueError(f"sizes must be in {MIN_SIZE}..{MAX_SIZE}, got {sizes}")
    if not charges:
        raise ValueError("charges must not be empty")
    if shapes_per_size < 1 or not min_distance_A > 0:
        raise ValueError(
            f"need shapes_per_size >= 1 and min_distance_A > 0, got "
            f"{shapes_per_size}, {min_distance_A}"
        )
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for size in (int(n) for n in sizes):
        shapes: list[Atoms] = []
        tries = 0
        while len(shapes) < shapes_per_size:
            tries += 1
            if tries > max_tries:
                raise ValueError(
                    f"found only {len(shapes)} distinct Bi{size} shapes in "
                    f"{max_tries} draws; lower shapes_per_size or distinct_tol_A"
                )
            cand = random_cluster("Bi", size, min_distance_A=min_distance_A, rng=rng)
            fp = _fingerprint(cand)
            if all(np.abs(fp - _fingerprint(s)).max() > distinct_tol_A for s in shapes):
                shapes.append(cand)
        for k, shape in enumerate(shapes):
            for q in charges:
                atoms = shape.copy()
                _, mult = charge_and_multiplicity(atoms, charge=q)
                atoms.info.update(charge=q, multiplicity=mult, size=size, shape=k)
                if relax_with_xtb:
                    relaxed = _relax_xtb(atoms, fmax_eV_A=relax_fmax_eV_A, steps=relax_steps)
                    if min_distance(relaxed) >= min_distance_A:
                        atoms = relaxed
                    else:
                        logger.info(
                            "Bi%d shape %d charge %+d: xTB relaxation went below "
                            "%.2f Å; keeping the unrelaxed shape",
                            size,
                            k,
                            q,
                            min_distance_A,
                        )
                out.append(atoms)
    logger.info("built %d Bi clusters (sizes %s, charges %s)", len(out), sizes, charges)
    return out
