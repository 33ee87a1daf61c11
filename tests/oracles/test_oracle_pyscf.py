"""PySCF oracle with the real code: finite-difference forces, non-convergence, ECP metadata."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from pal_atoms.oracles import PySCF, RetryPolicy, gpu_available, label

from pal_atoms.core.label import LabelStatus

pytest.importorskip("pyscf", reason="PySCF is not installed (pip install 'pal-atoms[dft]')")


@pytest.fixture
def water():
    atoms = molecule("H2O")
    atoms.positions[1] += [0.05, -0.03, 0.02]  # no symmetry, non-zero forces everywhere
    return atoms


def test_forces_match_finite_differences(water):
    oracle = PySCF(functional="PBE", basis="sto-3g")
    lab = label(water, oracle)
    assert lab.ok
    assert lab.oracle == "pyscf"
    assert lab.method == "PBE/sto-3g"
    assert lab.atoms.info["backend"] in ("pyscf", "gpu4pyscf")
    assert "ecp" not in lab.atoms.info  # all-electron
    h = 1e-3  # Å
    for i, c in [(1, 0), (2, 2)]:
        plus, minus = water.copy(), water.copy()
        plus.positions[i, c] += h
        minus.positions[i, c] -= h
        fd = -(label(plus, oracle).energy - label(minus, oracle).energy) / (2 * h)
        # Measured 4e-4 eV/Å (PySCF gradients omit the grid response at grid level 3).
        assert lab.forces[i, c] == pytest.approx(fd, abs=2e-3)
    assert np.abs(lab.forces).max() > 0.1


def test_open_shell_runs_unrestricted():
    oh = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    lab = label(oh, PySCF(basis="sto-3g", density_fit=False))
    assert lab.ok
    assert lab.atoms.info["multiplicity"] == 2


def test_max_cycle_one_is_unconverged(water):
    lab = label(water, PySCF(basis="sto-3g", max_cycle=1))
    assert lab.status is LabelStatus.UNCONVERGED
    assert "not converged in 1 cycles" in lab.error
    assert lab.energy is None
    assert lab.forces is None


def test_retry_adds_level_shift_and_cycles():
    oracle = PySCF(basis="sto-3g", max_cycle=10)
    relaxed = oracle.relaxed(RetryPolicy(level_shift_Eh=0.2, iterations_factor=3.0), 2)
    assert relaxed is not None
    assert relaxed.config.level_shift_Eh == pytest.approx(0.4)
    assert relaxed.config.max_cycle == 90


def test_bi_gets_def2_ecp_stated_in_metadata():
    bi4 = Atoms("Bi4", positions=[[0, 0, 0], [3.1, 0, 0], [1.55, 2.68, 0], [1.55, 0.89, 2.53]])
    bi4.info["charge"] = -2
    oracle = PySCF(basis="def2-SVP")
    oracle.check(bi4)
    assert oracle.settings["ecp"] == "def2-SVP"
    assert oracle.settings["ecp_min_Z"] == 37
    info = oracle.describe(bi4)
    assert info["charge"] == -2
    assert info["multiplicity"] == 1
    assert info["ecp"] == "Bi:def2-SVP"
    assert info["ecp_core_electrons"] == 4 * 60
    # All-electron on request, and no ECP for light elements.
    assert PySCF(basis="def2-SVP", ecp=None).ecp_for(bi4) == {}
    assert PySCF().ecp_for(molecule("H2O")) == {}


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="GPU4PySCF or a CUDA device is missing")
def test_gpu_matches_cpu(water):
    cpu = label(water, PySCF(basis="def2-SVP", use_gpu=False))
    gpu = label(water, PySCF(basis="def2-SVP", use_gpu=True))
    assert gpu.atoms.info["backend"] == "gpu4pyscf"
    assert gpu.energy == pytest.approx(cpu.energy, abs=1e-5)
    np.testing.assert_allclose(gpu.forces, cpu.forces, atol=1e-3)
