"""The md job's held-out test set: oracle MD, equilibrated first, frames spaced in fs."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from pal_atoms.dynamics import reference_md_frames

from pal_atoms.jobs.md import md_test_set
from pal_atoms.jobs.md_config import MDRunConfig


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
