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
    # 10 steps of equilibration, then a frame every 4 steps, from the job's seed.
    ref = reference_md_frames(
        EMT(), [start], n_per_frame=2, temperature_K=400.0, timestep_fs=2.0, stride=4,
        equilibration_steps=10, seed=1003,
    )  # fmt: skip
    assert len(frames) == 2
    for a, b in zip(frames, ref, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    assert MDRunConfig(system=tmp_path / "x.xyz").test_equilibration_fs > 0  # default: on


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
