"""The final check of a run: per-system held-out MAE and a short NVE run on the committee."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from pal_atoms.jobs.final_check import final_check, system_key


class LJCommittee(LennardJones):
    """A Lennard-Jones 'committee' (exact forces): NVE conserves its energy."""

    def predict_batch(self, frames):
        out = []
        for atoms in frames:
            work = atoms.copy()
            work.calc = LennardJones(sigma=2.7, epsilon=0.1, rc=8.0, smooth=True)
            out.append({"forces": work.get_forces(), "energy": work.get_potential_energy()})
        return out


def _cluster(charge=0, scale=1.0):
    pos = np.array([[0, 0, 0], [3.0, 0, 0], [1.5, 2.6, 0], [1.5, 0.87, 2.45]]) * scale
    atoms = Atoms("Ar4", positions=pos)
    atoms.info["charge"] = charge
    return atoms


def _labelled(atoms, shift=0.0):
    from ase.calculators.singlepoint import SinglePointCalculator

    ref = atoms.copy()
    ref.calc = LennardJones(sigma=2.7, epsilon=0.1, rc=8.0, smooth=True)
    f = ref.get_forces() + shift
    ref.calc = SinglePointCalculator(ref, energy=0.0, forces=f)
    ref.info = dict(atoms.info)
    return ref


def test_system_key_names_formula_and_charge():
    assert system_key(_cluster(0)) == "Ar4(0)"
    assert system_key(_cluster(-2)) == "Ar4(-2)"
    assert system_key(_cluster(1)) == "Ar4(+1)"


def test_stable_nve_and_per_system_error():
    committee = LJCommittee(sigma=2.7, epsilon=0.1, rc=8.0, smooth=True)
    frames = [_cluster(0), _cluster(1)]
    tests = [_labelled(_cluster(0), 0.0), _labelled(_cluster(1), 0.1)]
    checks = final_check(
        committee, frames, tests, temperature_K=50, timestep_fs=2.0, duration_ps=0.2
    )
    assert [c.system for c in checks] == ["Ar4(0)", "Ar4(+1)"]
    assert checks[0].test_force_mae == pytest.approx(0.0, abs=1e-12)
    assert checks[1].test_force_mae == pytest.approx(0.1)
    for c in checks:
        assert c.nve_steps == 100 and c.test_frames == 1
        assert c.stable and abs(c.energy_drift_eV_atom_ps) < 1e-3
        assert 2.0 < c.min_distance_A < 3.5


class Exploding(LJCommittee):
    """Forces that pull every atom onto the centre: the cluster collapses."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = -50.0 * (atoms.positions - atoms.positions.mean(axis=0))


def test_collapse_is_reported_unstable():
    (check,) = final_check(
        Exploding(), [_cluster(0)], [], temperature_K=50, timestep_fs=2.0, duration_ps=0.2
    )
    assert not check.stable and check.test_force_mae is None
