"""Generator building blocks: patience policy, geometry checks, state round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from dynamics_helpers import bi4
from pal_atoms.dynamics import (
    PatiencePolicy,
    UnphysicalStateError,
    atoms_from_dict,
    atoms_to_dict,
    check_geometry,
    n_fragments,
)
from pal_atoms.dynamics import base as dyn_base

from pal_atoms.core.protocols import Verdict

T, U, X = Verdict.TRUSTED, Verdict.UNCERTAIN, Verdict.UNTRUSTED


def test_patience_counts_consecutive_uncertain_steps():
    policy = PatiencePolicy(patience=2)
    assert [policy.judge(v) for v in (U, U, T, U, U)] == ["", "", "", "", ""]
    assert policy.judge(U).startswith("patience exhausted")
    assert policy.n_uncertain == 0
    assert policy.judge(X) == "untrusted prediction"
    assert PatiencePolicy(patience=0).judge(U) != ""
    with pytest.raises(ValueError, match="patience"):
        PatiencePolicy(patience=-1)


@pytest.mark.parametrize("dense_max", [256, 0])  # dense path and the sparse (KD-tree) path
def test_fragments_and_close_contacts(monkeypatch, dense_max):
    monkeypatch.setattr(dyn_base, "_DENSE_MAX", dense_max)
    atoms = bi4()
    assert n_fragments(atoms, 3.5) == 1
    atoms.positions[0] += [10, 0, 0]
    assert n_fragments(atoms, 3.5) == 2
    with pytest.raises(UnphysicalStateError, match="2 fragments"):
        check_geometry(atoms, min_distance_A=0.5, max_distance_A=3.5)
    check_geometry(atoms, min_distance_A=0.5, max_distance_A=None)
    atoms.positions[1] = atoms.positions[2] + [0, 0.2, 0]
    with pytest.raises(UnphysicalStateError, match=r"atoms [12] and [12] are 0\.200 Å apart"):
        check_geometry(atoms, min_distance_A=0.5, max_distance_A=None)


def test_periodic_geometry_uses_the_minimum_image():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    check_geometry(cu, min_distance_A=2.0, max_distance_A=3.0)
    assert n_fragments(cu, 3.0) == 1
    cu.positions[1] = cu.positions[0] + [0.1, 0, 0]
    with pytest.raises(UnphysicalStateError, match="apart"):
        check_geometry(cu, min_distance_A=0.5, max_distance_A=None)
    atoms = bi4()
    atoms.positions[0, 0] = np.nan
    with pytest.raises(UnphysicalStateError, match="non-finite"):
        check_geometry(atoms, min_distance_A=None, max_distance_A=None)


def test_atoms_dict_round_trip_is_json():
    atoms = bi4()
    atoms.info.update(charge=-2, multiplicity=1, note="x", skip=object())
    atoms.set_momenta(np.arange(12.0).reshape(4, 3))
    back = atoms_from_dict(json.loads(json.dumps(atoms_to_dict(atoms))))
    np.testing.assert_array_equal(back.positions, atoms.positions)
    np.testing.assert_array_equal(back.get_momenta(), atoms.get_momenta())
    assert back.info == {"charge": -2, "multiplicity": 1, "note": "x"}
