"""Held-out frames from MD on the reference method (real EMT on periodic Cu)."""

from __future__ import annotations

import numpy as np
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
