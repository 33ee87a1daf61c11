"""Held-out frames from MD on the reference method (real EMT on periodic Cu)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from pal_atoms.dynamics import reference_md_frames


def test_frames_are_labelled_by_the_reference_and_reproducible():
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    start.info["charge"] = 0
    kw = {"n_per_frame": 3, "temperature_K": 500.0, "timestep_fs": 2.0, "stride": 5, "seed": 4}
    frames = reference_md_frames(EMT(), [start, start], **kw)
    again = reference_md_frames(EMT(), [start, start], **kw)
    assert len(frames) == 6
    for a, b in zip(frames, again, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        ref = a.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-10)
        assert a.info["charge"] == 0
    assert not np.allclose(frames[0].positions, start.positions)  # it moved


def test_equilibration_runs_before_the_first_kept_frame():
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    kw = {"temperature_K": 500.0, "timestep_fs": 2.0, "stride": 4, "seed": 2}
    plain = reference_md_frames(EMT(), [start], n_per_frame=3, **kw)
    # The same trajectory: 8 steps of equilibration, then a frame every 4 steps.
    late = reference_md_frames(EMT(), [start], n_per_frame=1, equilibration_steps=8, **kw)
    np.testing.assert_allclose(late[0].positions, plain[2].positions, atol=1e-12)
    np.testing.assert_allclose(late[0].get_forces(), plain[2].get_forces(), atol=1e-12)


def test_bad_stride_or_equilibration_is_refused():
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    kw = {"n_per_frame": 1, "temperature_K": 300.0, "timestep_fs": 2.0}
    with pytest.raises(ValueError, match="stride >= 1"):
        reference_md_frames(EMT(), [start], stride=0, **kw)
    with pytest.raises(ValueError, match="equilibration_steps >= 0"):
        reference_md_frames(EMT(), [start], equilibration_steps=-1, **kw)
