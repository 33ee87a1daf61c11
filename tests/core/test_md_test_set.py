"""The md job's held-out test set and bootstrap: oracle MD, equilibrated first, frames
spaced in fs."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from pal_atoms.dynamics import reference_md_frames

from pal_atoms.core.errors import ConfigError
from pal_atoms.jobs.md_config import JobConfig, MDRunConfig
from pal_atoms.jobs.md_frames import md_bootstrap, md_test_set


def test_test_set_equilibrates_and_spaces_frames_in_femtoseconds(tmp_path):
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    start.info["charge"] = 0
    config = MDRunConfig(
        system=tmp_path / "x.xyz",
        test_per_frame=2,
        timestep_fs=2.0,
        test_equilibration_fs=20.0,
        test_spacing_fs=8.0,
        temperature_K=400.0,
        seed=3,
    )
    frames = md_test_set(config, EMT(), [start])
    # Per trajectory 10 steps of equilibration, then a frame every 4 steps, from the
    # job's seed; the 2 frames come from 2 of the default 3 trajectories (1 + 1 + 0).
    ref = reference_md_frames(
        EMT(), [start], n_per_frame=2, temperature_K=400.0, timestep_fs=2.0, stride=4,
        equilibration_steps=10, seed=1003, trajectories=3,
    )  # fmt: skip
    assert len(frames) == 2
    for a, b in zip(frames, ref, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    default = MDRunConfig(system=tmp_path / "x.xyz")
    assert default.test_equilibration_fs > 0 and default.test_trajectories == 3  # default: on
    with pytest.raises(ConfigError, match="test_trajectories must be >= 1"):
        MDRunConfig(system=tmp_path / "x.xyz", test_trajectories=0)


def test_held_out_frames_come_from_independent_trajectories():
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    kw = {"temperature_K": 400.0, "timestep_fs": 2.0, "stride": 4, "equilibration_steps": 10}
    one = reference_md_frames(EMT(), [start], n_per_frame=4, seed=5, **kw)
    three = reference_md_frames(EMT(), [start], n_per_frame=4, seed=5, trajectories=3, **kw)
    assert len(three) == 4
    # Shares 2 + 1 + 1: the first trajectory's two frames are the one-trajectory run's
    # first two (same seed, same draws); the others restart from the start geometry
    # with new velocities, so frame 3 is its trajectory's first, not the fourth of one.
    for a, b in zip(three[:2], one[:2], strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    assert not np.allclose(three[2].positions, one[2].positions, atol=1e-3)
    # Without equilibration the second trajectory's first frame is one stride from the
    # start geometry, closer to it than the third frame of a single trajectory.
    kw0 = {**kw, "equilibration_steps": 0}
    one = reference_md_frames(EMT(), [start], n_per_frame=3, seed=5, **kw0)
    two = reference_md_frames(EMT(), [start], n_per_frame=3, seed=5, trajectories=2, **kw0)
    moved = [np.linalg.norm(a.positions - start.positions) for a in (*one, *two)]
    assert moved[0] == pytest.approx(moved[3]) and moved[5] < moved[2]
    with pytest.raises(ValueError, match="trajectories >= 1"):
        reference_md_frames(EMT(), [start], n_per_frame=2, trajectories=0, **kw)


def _copper():
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    start.info["charge"] = 0
    return start


def test_md_bootstrap_is_oracle_md_like_the_test_set_from_another_seed(tmp_path):
    start = _copper()
    config = MDRunConfig(
        system=tmp_path / "x.xyz", bootstrap_per_frame=3, test_per_frame=3, timestep_fs=2.0,
        test_equilibration_fs=20.0, test_spacing_fs=8.0, temperature_K=400.0, seed=3,
    )  # fmt: skip
    assert config.bootstrap == "md"  # the md job's default
    boot = md_bootstrap(config, EMT(), [start])
    ref = reference_md_frames(
        EMT(), [start], n_per_frame=3, temperature_K=400.0, timestep_fs=2.0, stride=4,
        equilibration_steps=10, seed=2003,
    )  # fmt: skip
    assert len(boot) == 3
    for a, b in zip(boot, ref, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    test = md_test_set(config, EMT(), [start])
    # held out: no bootstrap frame is a test frame
    assert min(np.abs(a.positions - b.positions).max() for a in boot for b in test) > 1e-3
    assert md_bootstrap(
        MDRunConfig(system=tmp_path / "x.xyz", bootstrap_per_frame=0), EMT(), [start]
    ) == []  # fmt: skip


def test_rattle_bootstrap_surrounds_the_start_geometry(tmp_path):
    start = _copper()
    config = MDRunConfig(system=tmp_path / "x.xyz", bootstrap="rattle", bootstrap_per_frame=4)
    boot = md_bootstrap(config, EMT(), [start])
    assert len(boot) == 4
    assert all(a.calc is None for a in boot)  # geometries only: the job labels them
    # The other jobs keep rattled copies by default (their oracle MD would cost twice).
    assert JobConfig(system=tmp_path / "x.xyz").bootstrap == "rattle"


def test_unknown_bootstrap_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown bootstrap 'foo'; choose from md, rattle"):
        MDRunConfig(system=tmp_path / "x.xyz", bootstrap="foo")
