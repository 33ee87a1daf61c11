"""Rattle sampler: random displacements and strains around given structures (bootstrapping)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from pal_atoms.core.checks import min_distance

__all__ = ["rattle_sample"]

logger = logging.getLogger(__name__)


def rattle_sample(
    structures: Atoms | Sequence[Atoms],
    n: int,
    *,
    rattle_std_A: float = 0.05,
    strain_range: tuple[float, float] = (0.95, 1.05),
    seed: int = 0,
    min_distance_A: float | None = 0.5,
    max_tries: int = 100,
) -> list[Atoms]:
    """Random compressions/stretches plus Gaussian displacements around each structure.

    Each sample is the structure scaled by a factor drawn uniformly from ``strain_range``
    (about its centre of mass for a molecule or cluster; the cell with the atoms for a
    periodic structure), then every coordinate displaced by a normal deviate of standard
    deviation ``rattle_std_A``. Samples with atoms closer than ``min_distance_A`` are
    drawn again.

    Args:
        structures: One structure or several; ``atoms.info`` (``charge``,
            ``multiplicity``, ...) is kept in the samples.
        n: Samples per structure (>= 0).
        rattle_std_A: Displacement standard deviation in Å (>= 0).
        strain_range: ``(low, high)`` linear scale factors, ``0 < low <= high``.
        seed: Random seed; the output is a deterministic function of the arguments.
        min_distance_A: Smallest allowed interatomic distance in Å (``None``: no check).
        max_tries: Draws per sample before giving up.

    Returns:
        ``n * len(structures)`` new structures, grouped by source structure; each has
        ``info["rattle_source"]`` (index of its source) and ``info["rattle_scale"]``.

    Raises:
        ValueError: Bad arguments, or no valid sample in ``max_tries`` draws.
    """
    items = [structures] if isinstance(structures, Atoms) else list(structures)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not rattle_std_A >= 0:
        raise ValueError(f"rattle_std_A must be >= 0, got {rattle_std_A}")
    low, high = (float(x) for x in strain_range)
    if not 0 < low <= high:
        raise ValueError(
            f"strain_range must be (low, high) with 0 < low <= high, got {strain_range}"
        )
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for index, source in enumerate(items):
        if len(source) == 0:
            raise ValueError(f"structure {index} has no atoms")
        for _ in range(n):
            for _ in range(max_tries):
                scale = float(rng.uniform(low, high))
                sample = source.copy()
                sample.calc = None
                if sample.pbc.any():
                    sample.set_cell(sample.cell.array * scale, scale_atoms=True)
                else:
                    com = sample.get_center_of_mass()
                    sample.positions = com + scale * (sample.positions - com)
                sample.positions += rng.normal(0.0, rattle_std_A, sample.positions.shape)
                if min_distance_A is None or min_distance(sample) >= min_distance_A:
                    break
            else:
                raise ValueError(
                    f"no sample of structure {index} with atoms at least {min_distance_A} Å "
                    f"apart in {max_tries} draws; lower rattle_std_A or raise the strain"
                )
            sample.info.update(rattle_source=index, rattle_scale=scale)
            out.append(sample)
    logger.debug("rattle_sample: %d samples from %d structures", len(out), len(items))
    return out
