"""Checks before calling, settings validation, the factory and argument errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from pal_atoms.oracles import (
    XTB,
    PySCF,
    RetryPolicy,
    Turbomole,
    XTBPython,
    label,
    make_oracle,
)

from pal_atoms.core.errors import ConfigError, StructureError


class Exploding(XTB):
    """Fails the test if the expensive call is ever reached."""

    def _compute(self, atoms, *, want_stress):
        raise AssertionError("the oracle was called despite an invalid structure")


def test_element_beyond_rn_refused_before_call():
    atoms = Atoms("FrH", positions=[[0, 0, 0], [0, 0, 2.5]])
    with pytest.raises(StructureError, match="Fr, not covered"):
        label(atoms, Exploding())


def test_close_atoms_refused_before_call():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.2]])
    with pytest.raises(StructureError, match=r"closer than 0\.5"):
        label(atoms, Exploding())
    # The threshold is a setting.
    with pytest.raises(StructureError, match=r"closer than 0\.8"):
        label(molecule("H2"), Exploding(min_distance_A=0.8))


@pytest.mark.parametrize(("charge", "multiplicity"), [(0, 2), (-1, 1), (1, 1), (20, 1)])
def test_impossible_charge_multiplicity_refused(charge, multiplicity):
    atoms = molecule("H2O")  # 10 electrons
    with pytest.raises(StructureError):
        label(atoms, Exploding(charge=charge, multiplicity=multiplicity))


def test_parity_from_atoms_info_refused():
    atoms = molecule("H2O")
    atoms.info["multiplicity"] = 2
    with pytest.raises(StructureError, match="multiplicity 2 is impossible"):
        label(atoms, Exploding())
    atoms.info["multiplicity"] = 0
    with pytest.raises(StructureError, match="multiplicity must be >= 1"):
        label(atoms, Exploding())


def test_non_finite_positions_refused():
    atoms = molecule("H2O")
    atoms.positions[0, 0] = np.nan
    with pytest.raises(StructureError, match="non-finite"):
        label(atoms, Exploding())


def test_pyscf_refuses_pbc_and_uncovered_basis():
    pytest.importorskip("pyscf", reason="PySCF is not installed")
    cell = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(StructureError, match="molecules and clusters only"):
        PySCF(basis="sto-3g").check(cell)
    bi2 = Atoms("Bi2", positions=[[0, 0, 0], [0, 0, 3.0]])
    with pytest.raises(StructureError, match="no functions for Bi"):
        PySCF(basis="6-31G").check(bi2)


@pytest.mark.parametrize(
    ("name", "settings", "match"),
    [
        ("xtb", {"method": "GFN3-xTB"}, "method must be one of"),
        ("xtb", {"electronic_temperature_K": -1.0}, "electronic_temperature_K"),
        ("xtb", {"max_iterations": 0}, "max_iterations"),
        ("xtb", {"multiplicity": 3, "unpaired_electrons": 1}, "contradicts"),
        ("xtb", {"charge": 1.5}, "charge must be an integer"),
        ("xtb", {"temperature": 300.0}, "unknown settings for oracle 'xtb': temperature"),
        ("pyscf", {"reference": "ROKS"}, "reference"),
        ("pyscf", {"reference": "RKS", "multiplicity": 3}, "needs multiplicity 1"),
        ("pyscf", {"grid_level": 12}, "grid_level"),
        ("pyscf", {"use_gpu": "yes"}, "use_gpu"),
        ("turbomole", {"scf_iterations": -5}, "scf_iterations"),
        ("gaussian", {}, "unknown oracle 'gaussian'"),
    ],
)
def test_bad_settings_are_value_errors(name, settings, match):
    with pytest.raises(ValueError, match=match):
        make_oracle(name, **settings)


def test_factory_names_and_interface():
    for name, cls in [
        ("xtb", XTB),
        ("xtb-python", XTBPython),
        ("pyscf", PySCF),
        ("turbomole", Turbomole),
    ]:
        oracle = make_oracle(name)
        assert type(oracle) is cls
        assert oracle.name == name
        assert isinstance(oracle.implemented_properties, tuple)
        assert {"energy", "free_energy", "forces"} <= set(oracle.implemented_properties)
        assert isinstance(oracle.method, str)
        assert oracle.method
        back = pickle.loads(pickle.dumps(oracle))
        assert back.config == oracle.config
        assert make_oracle(name, **oracle.settings).settings == oracle.settings
    assert make_oracle("pyscf", functional="B3LYP", basis="def2-TZVP").method == "B3LYP/def2-TZVP"
    assert XTB().covered_numbers == frozenset(range(1, 87))


def test_label_argument_errors():
    atoms = molecule("H2O")
    with pytest.raises(ValueError, match="timeout_s"):
        label(atoms, XTB(), timeout_s=-1.0, isolate=True)
    with pytest.raises(ValueError, match="an ASE calculator, got object"):
        label(atoms, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="retry_on"):
        RetryPolicy(retry_on=("ok",))


def test_ase_set_changes_settings():
    oracle = XTB()
    assert oracle.set(electronic_temperature_K=1000.0) == {"electronic_temperature_K": 1000.0}
    assert oracle.settings["electronic_temperature_K"] == 1000.0
    with pytest.raises(ConfigError, match="unknown settings"):
        oracle.set(etemp=5)
