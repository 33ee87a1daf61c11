"""The md job's generators: ``generators_per_frame`` Langevin MD per starting frame."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from pal_atoms.core.errors import ConfigError
from pal_atoms.jobs.md_config import MDRunConfig
from pal_atoms.jobs.md_frames import md_generators
from pal_atoms.jobs.reaction import ReactionRunConfig


def _frames() -> list[Atoms]:
    frames = []
    for d in (2.5, 2.6):
        a = Atoms("Cu3", positions=[[0, 0, 0], [d, 0, 0], [0, d, 0]])
        a.info.update(charge=0, multiplicity=2)
        frames.append(a)
    return frames


def test_several_generators_per_frame_have_their_own_ids_seeds_and_paths(tmp_path):
    frames = _frames()
    config = MDRunConfig(system=tmp_path / "x.xyz", generators_per_frame=3, seed=5)
    gens = md_generators(config, frames)
    assert config.n_generators(len(frames)) == len(gens) == 6
    assert sorted(g.generator_id for g in gens) == list(range(6))
    assert sorted(g.settings.seed for g in gens) == list(range(5, 11))
    # Copy k of frame i is generator i + k * n_frames: frame i's copies start alike ...
    by_id = {g.generator_id: g for g in gens}
    for i, frame in enumerate(frames):
        for k in range(3):
            np.testing.assert_allclose(by_id[i + 2 * k].atoms.positions, frame.positions)
    # ... with their own velocities (own seeds), so they go their own ways.
    assert not np.allclose(by_id[0].atoms.get_momenta(), by_id[2].atoms.get_momenta())


def test_one_generator_per_frame_by_default_and_reaction_counts_its_samplers(tmp_path):
    assert MDRunConfig(system=tmp_path / "x.xyz").n_generators(5) == 5
    config = ReactionRunConfig(
        system=tmp_path / "x.xyz", generators_per_frame=2, transfer_samples=3
    )
    assert config.n_generators(2) == 2 * 2 + 2


def test_generators_per_frame_below_one_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="generators_per_frame must be >= 1, got 0"):
        MDRunConfig(system=tmp_path / "x.xyz", generators_per_frame=0)
