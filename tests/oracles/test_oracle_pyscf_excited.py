"""Excited-state PySCF oracle with the real code: states, per-state forces, failures."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from pal_atoms.oracles import PySCFExcited, label, make_oracle

from pal_atoms.core.errors import ConfigError, StructureError
from pal_atoms.core.label import LabelStatus

pytest.importorskip("pyscf", reason="PySCF is not installed (pip install 'pal-atoms[dft]')")


@pytest.fixture
def formaldehyde() -> Atoms:
    atoms = molecule("H2CO")
    atoms.positions[2] += [0.04, -0.03, 0.05]  # no symmetry: every force component non-zero
    return atoms


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"n_states": 1}, "n_states must be an integer >= 2"),
        ({"n_states": 2.5}, "n_states"),
        ({"excitation": "cis"}, "excitation must be 'tda' or 'tddft'"),
        ({"density_fit": True}, "no density-fitted TDDFT gradients"),
        ({"reference": "UKS"}, "need reference 'RKS'"),
        ({"smearing_sigma_Eh": 0.01}, "integer occupations"),
        ({"max_cycle_excited": 0}, "max_cycle_excited"),
        ({"conv_tol_excited_Eh": -1.0}, "conv_tol_excited_Eh"),
    ],
)
def test_bad_settings_are_one_clear_error(settings, match):
    with pytest.raises(ConfigError, match=match):
        PySCFExcited(**settings)


def test_defaults_and_provenance():
    oracle = make_oracle("pyscf-excited")
    assert isinstance(oracle, PySCFExcited)
    assert oracle.method == "TDA-B3LYP/6-31G*"
    assert oracle.n_states == 3 and oracle.settings["density_fit"] is False
    # The settings rebuild the same oracle (label provenance).
    assert make_oracle(oracle.name, **oracle.settings).settings == oracle.settings


def test_open_shell_is_refused_before_any_calculation():
    oh = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    with pytest.raises(StructureError, match="closed-shell singlets"):
        PySCFExcited(basis="sto-3g").check(oh)


def test_states_and_their_forces_match_finite_differences(formaldehyde):
    oracle = PySCFExcited(functional="B3LYP", basis="sto-3g", n_states=3)
    atoms = formaldehyde.copy()
    atoms.calc = oracle
    energy = atoms.get_potential_energy()
    res = oracle.results
    energies, forces = res["state_energies"], res["state_forces"]
    assert energies.shape == (3,) and forces.shape == (3, len(atoms), 3)
    assert res["excitation_energies"].shape == (2,) and res["oscillator_strengths"].shape == (2,)
    # S0 is the ground state that energy/forces report; the states come in order.
    assert energies[0] == pytest.approx(energy)
    np.testing.assert_allclose(forces[0], atoms.get_forces())
    assert 0 < energies[1] - energies[0] <= energies[2] - energies[0] < 20  # eV
    np.testing.assert_allclose(res["excitation_energies"], energies[1:] - energies[0])
    # Each state's forces are minus the gradient of that state's energy.
    h = 1e-3  # Å
    for i, c in [(0, 2), (2, 0)]:
        shifted = []
        for sign in (1, -1):
            moved = formaldehyde.copy()
            moved.positions[i, c] += sign * h
            moved.calc = PySCFExcited(functional="B3LYP", basis="sto-3g", n_states=3)
            moved.get_potential_energy()
            shifted.append(moved.calc.results["state_energies"])
        fd = -(shifted[0] - shifted[1]) / (2 * h)
        # Measured agreement ~1e-3 eV/Å (no grid response in the gradients).
        np.testing.assert_allclose(forces[:, i, c], fd, atol=5e-3)
    assert np.abs(forces[1] - forces[0]).max() > 0.1  # the excited state has its own forces


def test_label_records_the_ground_state_and_the_states(formaldehyde):
    lab = label(formaldehyde, PySCFExcited(basis="sto-3g", n_states=2, excitation="tddft"))
    assert lab.ok and lab.oracle == "pyscf-excited" and lab.method == "TDDFT-B3LYP/sto-3g"
    assert lab.atoms.info["n_states"] == 2 and lab.atoms.info["excitation"] == "tddft"
    assert np.isfinite(lab.energy) and lab.forces.shape == (len(formaldehyde), 3)


def test_an_unconverged_excited_state_solver_is_a_status_not_data(formaldehyde):
    lab = label(formaldehyde, PySCFExcited(basis="sto-3g", max_cycle_excited=1))
    assert lab.status is LabelStatus.UNCONVERGED
    assert "excited-state solver did not converge" in lab.error
    assert lab.energy is None and lab.forces is None
