"""Δ-learning: correction labels and the cheap-plus-correction calculator."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from pal_atoms.calculators import CommitteeCalculator, DeltaCalculator, delta_labels

tblite = pytest.importorskip("tblite.ase", reason="tblite (GFN2-xTB) not installed")

TINY = {"hidden_irreps": "8x0e", "mlp_irreps": "4x0e", "radial_mlp": [8], "num_bessel": 4,
        "max_ell": 1, "correlation": 2}  # fmt: skip


def _xtb(method: str):
    return tblite.TBLite(method=method, verbosity=0)


def _frames(n: int = 3):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        a = molecule("CH4")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.info.update(charge=0, multiplicity=1)
        a.calc = _xtb("GFN1-xTB")  # the "expensive" level of this test
        a.get_forces()
        out.append(a)
    return out


def test_delta_labels_are_the_expensive_minus_the_cheap_level():
    frames = _frames()
    deltas = delta_labels(frames, _xtb("GFN2-xTB"))
    for a, d in zip(frames, deltas, strict=True):
        cheap = a.copy()
        cheap.calc = _xtb("GFN2-xTB")
        assert d.get_potential_energy() == pytest.approx(
            a.get_potential_energy() - cheap.get_potential_energy(), abs=1e-6
        )
        np.testing.assert_allclose(d.get_forces(), a.get_forces() - cheap.get_forces(), atol=1e-4)
        assert d.info["delta_base"] == "TBLite" and d.info["charge"] == 0


def test_delta_calculator_adds_the_correction_and_keeps_the_committee_spread():
    committee = CommitteeCalculator.create(
        "mace", elements=["C", "H"], n_members=2, seed=1, device="cpu", dtype="float64", **TINY
    )
    calc = DeltaCalculator(_xtb("GFN2-xTB"), committee)
    atoms = _frames(1)[0].copy()
    atoms.calc = calc
    forces = atoms.get_forces()
    res = calc.results
    alone = atoms.copy()
    alone.calc = committee
    assert res["energy"] == pytest.approx(res["base_energy"] + alone.get_potential_energy())
    np.testing.assert_allclose(
        res["energy_comm"] - res["base_energy"], committee.results["energy_comm"]
    )
    assert res["max_force_std"] == pytest.approx(committee.results["max_force_std"])
    h = 1e-4
    for k, d in [(0, 0), (1, 2), (3, 1)]:
        p, m = atoms.copy(), atoms.copy()
        p.calc = m.calc = calc
        p.positions[k, d] += h
        m.positions[k, d] -= h
        fd = -(p.get_potential_energy() - m.get_potential_energy()) / (2 * h)
        assert forces[k, d] == pytest.approx(fd, abs=2e-4)


def test_delta_predict_batch_gives_what_calculate_gives_structure_by_structure():
    committee = CommitteeCalculator.create(
        "mace", elements=["C", "H"], n_members=2, seed=2, device="cpu", dtype="float64", **TINY
    )
    calc = DeltaCalculator(_xtb("GFN2-xTB"), committee)
    frames = _frames(3)
    batch = calc.predict_batch(frames)
    assert len(batch) == 3
    for a, pred in zip(frames, batch, strict=True):
        one = a.copy()
        one.calc = calc
        one.get_forces()
        # xTB restarts its SCF from the last density: its forces agree to ~1e-5 eV/Å.
        for key in ("energy", "base_energy", "max_force_std"):
            assert pred[key] == pytest.approx(calc.results[key], abs=1e-6), key
        for key in ("forces", "forces_std", "forces_comm", "energy_comm"):
            np.testing.assert_allclose(pred[key], calc.results[key], atol=1e-4, err_msg=key)
