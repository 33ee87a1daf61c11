"""Turbomole excited states: the clear error without Turbomole, control-file and gradient
handling on Turbomole's formats, a failing egrad as a record, a real run where present."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Bohr, Hartree
from pal_atoms.oracles import Turbomole, TurbomoleExcited, label, make_oracle
from pal_atoms.oracles.turbomole import missing_executables
from pal_atoms.oracles.turbomole_excited import last_gradient, set_data_group

from pal_atoms.core.errors import ConfigError, OracleError, OracleSetupError, StructureError
from pal_atoms.core.label import LabelStatus

_CONTROL = """$title
$symmetry c1
$scfinstab rpas
$exopt 1
$dft
   functional b3-lyp
   gridsize   m3
$end
"""


def test_missing_egrad_is_named_and_bad_settings_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OracleSetupError, match="define, ridft, rdgrad, egrad"):
        label(molecule("H2CO"), TurbomoleExcited())
    with pytest.raises(OracleSetupError, match="define, dscf, grad, egrad"):
        TurbomoleExcited(ri=False).check(molecule("H2CO"))
    with pytest.raises(ConfigError, match="n_states must be an integer >= 2"):
        TurbomoleExcited(n_states=1)
    with pytest.raises(ConfigError, match="excitation must be 'tda' or 'tddft'"):
        TurbomoleExcited(excitation="cis")
    with pytest.raises(ConfigError, match="closed-shell singlet"):
        TurbomoleExcited(multiplicity=3)


def test_settings_method_and_the_ground_state_match_the_pyscf_excited_oracle():
    oracle = make_oracle("turbomole-excited", n_states=2, excitation="tddft", scratch_dir="/x")
    assert oracle.method == "TDDFT-b3-lyp/6-31G* (RI)"
    assert oracle.n_states == 2
    assert {"state_energies", "state_forces"} <= set(oracle.implemented_properties)
    ground = oracle.ground_state()
    assert type(ground) is Turbomole
    assert ground.config.functional == "b3-lyp" and ground.config.scratch_dir == "/x"
    params = oracle.ase_parameters(molecule("H2CO"))
    assert params["density convergence"] == 1e-7 and params["multiplicity"] == 1
    pyscf_ground = make_oracle("pyscf-excited", basis="sto-3g").ground_state()
    assert pyscf_ground.name == "pyscf" and pyscf_ground.config.basis == "sto-3g"


def test_data_groups_are_replaced_in_place_and_added_before_end(tmp_path):
    control = tmp_path / "control"
    control.write_text(_CONTROL)
    set_data_group(control, "exopt", "2")
    set_data_group(control, "scfinstab", "ciss")
    set_data_group(control, "soes", "\n a  2")
    lines = control.read_text().splitlines()
    assert lines.count("$exopt 2") == 1 and "$exopt 1" not in lines
    assert lines.count("$scfinstab ciss") == 1 and "$scfinstab rpas" not in lines
    assert lines[-3:] == ["$soes", " a  2", "$end"]
    assert "   functional b3-lyp" in lines  # other groups keep their bodies
    (tmp_path / "broken").write_text("$title\n")
    with pytest.raises(OracleError, match=r"has no \$end"):
        set_data_group(tmp_path / "broken", "exopt", "1")


def test_the_last_cycle_of_a_gradient_file_gives_energy_and_forces(tmp_path):
    path = tmp_path / "gradient"
    path.write_text(
        "$grad          cartesian gradients\n"
        "  cycle =      1    SCF energy =     -114.0000000000   |dE/dxyz| =  0.1\n"
        "    0.0 0.0 0.0      c\n    0.0 0.0 2.3      o\n"
        "  0.10000000000000D+00  0.0D+00  0.0D+00\n  -.10000000000000D+00  0.0D+00  0.0D+00\n"
        "  cycle =      2    SCF energy =     -113.8000000000   |dE/dxyz| =  0.2\n"
        "    0.0 0.0 0.0      c\n    0.0 0.0 2.3      o\n"
        "  0.0D+00  0.20000000000000D+00  0.0D+00\n  0.0D+00  -.20000000000000D+00  0.0D+00\n"
        "$end\n"
    )
    energy, forces = last_gradient(path, 2)
    assert energy == pytest.approx(-113.8 * Hartree)
    np.testing.assert_allclose(forces, np.array([[0, -0.2, 0], [0, 0.2, 0]]) * Hartree / Bohr)
    with pytest.raises(OracleError, match=r"unreadable last cycle|no gradient of 3 atoms"):
        last_gradient(path, 3)
    with pytest.raises(OracleError, match="cannot be read"):
        last_gradient(tmp_path / "missing", 2)


def _fake(folder, name, stderr):
    path = folder / name
    path.write_text(f"#!/bin/sh\ncat > /dev/null\necho '{stderr}' >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_failing_turbomole_is_a_failed_record_with_its_directory_kept(monkeypatch, tmp_path):
    bin_dir, scratch = tmp_path / "bin", tmp_path / "scratch"
    bin_dir.mkdir()
    for name in ("define", "ridft", "rdgrad", "egrad"):
        _fake(bin_dir, name, f"{name} ended abnormally")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    lab = label(molecule("H2CO"), TurbomoleExcited(scratch_dir=str(scratch)))
    assert lab.status is LabelStatus.FAILED and lab.energy is None
    kept = list(scratch.iterdir())
    assert len(kept) == 1 and str(kept[0]) in lab.error
    with pytest.raises(StructureError, match="closed-shell singlets"):
        label(molecule("CH3"), TurbomoleExcited())  # a doublet is bad input, not a label


@pytest.mark.turbomole
@pytest.mark.skipif(
    bool(missing_executables(("define", "ridft", "rdgrad", "egrad"))),
    reason="Turbomole executables (define, ridft, rdgrad, egrad) are not on PATH",
)
def test_real_turbomole_excited_states_against_finite_differences(tmp_path):
    oracle = TurbomoleExcited(basis="def2-SVP", n_states=3, scratch_dir=str(tmp_path))
    atoms = molecule("H2CO")
    lab = label(atoms, oracle)
    assert lab.ok, lab.error
    energies = lab.state_energies
    assert energies.shape == (3,) and np.all(np.diff(energies) >= 0)
    assert energies[0] == pytest.approx(lab.energy)
    assert 2.0 < energies[1] - energies[0] < 6.0  # S1 of formaldehyde, ~4 eV
    forces = lab.state_forces
    assert forces.shape == (3, 4, 3)
    # S1's force on the oxygen along the C=O bond against a central difference.
    h = 1e-3
    shifted = []
    for sign in (1, -1):
        a = atoms.copy()
        a.positions[0, 2] += sign * h
        shifted.append(label(a, oracle).state_energies[1])
    assert forces[1, 0, 2] == pytest.approx(-(shifted[0] - shifted[1]) / (2 * h), abs=2e-3)
    assert list(tmp_path.iterdir()) == []  # cleaned up on success
