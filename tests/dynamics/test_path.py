"""Reaction paths by adiabatic mapping along a transfer coordinate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from dynamics_helpers import make_tblite, needs_tblite
from pal_atoms.dynamics import DistanceCV, PathSettings, barrier, transfer_path

ROOT = Path(__file__).resolve().parents[2]


@needs_tblite
def test_the_methyl_transfer_path_is_symmetric_with_its_top_in_the_middle():
    atoms = read(ROOT / "examples" / "hat_methyl.xyz")
    cv = DistanceCV.transfer(0, 1, 2)
    path = transfer_path(make_tblite(multiplicity=2), atoms, cv, settings=PathSettings(images=7))
    assert len(path) == 7 and all(im.info["converged"] for im in path)
    centres = np.array([im.info["cv_center"] for im in path])
    assert centres[0] == pytest.approx(cv(atoms)) and centres[-1] == pytest.approx(-cv(atoms))
    # The stiff restraint holds each image near its centre; the cv is that of the image.
    assert np.abs(np.array([im.info["cv"] for im in path]) - centres).max() < 0.05
    assert all(im.info["cv"] == pytest.approx(cv(im)) for im in path)
    energies = np.array([im.info["energy"] for im in path])
    assert energies[-1] == pytest.approx(energies[0], abs=0.01)  # CH4 + CH3 both ways
    assert int(np.argmax(energies)) == 3 and barrier(energies) > 0.02
    assert path[0].calc is None and path[0].info["multiplicity"] == 2


@needs_tblite
def test_a_path_can_start_from_another_paths_images():
    atoms = read(ROOT / "examples" / "hat_methyl.xyz")
    cv = DistanceCV.transfer(0, 1, 2)
    settings = PathSettings(images=3)
    first = transfer_path(make_tblite(multiplicity=2), atoms, cv, settings=settings)
    again = transfer_path(make_tblite(multiplicity=2), atoms, cv, settings=settings, start=first)
    # Relaxing converged images again moves them by no more than the convergence allows.
    for a, b in zip(first, again, strict=True):
        assert np.abs(a.positions - b.positions).max() < 0.05
    with pytest.raises(ValueError, match="start has 2 images"):
        transfer_path(make_tblite(multiplicity=2), atoms, cv, settings=settings, start=first[:2])


def test_barrier_is_the_highest_image_less_the_first():
    assert barrier([0.0, 0.3, 0.1]) == pytest.approx(0.3)
    assert barrier([1.0, 0.5, 0.2]) == 0.0  # downhill: no barrier


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"images": 2}, "images"), ({"k_eV_A2": 0}, "k_eV_A2"), ({"fmax_eV_A": -1}, "fmax"),
     ({"max_steps": 0}, "max_steps")],
)  # fmt: skip
def test_path_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PathSettings(**kwargs)
