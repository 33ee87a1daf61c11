"""Reaction-coordinate generators: distance CVs, umbrella/steered bias, transfer sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from dynamics_helpers import ScriptedRule, always, make_tblite, needs_tblite
from pal_atoms.dynamics import (
    Action,
    BiasCalculator,
    DistanceCV,
    LocalClient,
    MDGenerator,
    MDSettings,
    TransferSampler,
    TransferSettings,
    UmbrellaBias,
)

from pal_atoms.core.protocols import Verdict

HAT = Path(__file__).resolve().parents[2] / "examples" / "hat_methyl.xyz"


def hat():
    """CH4 + CH3 radical, H 1 between C 0 (donor) and C 2 (acceptor), doublet."""
    return read(HAT)


def test_transfer_cv_value_and_gradient_match_finite_differences():
    atoms = hat()
    cv = DistanceCV.transfer(0, 1, 2)
    s, grad = cv.value_and_gradient(atoms.positions)
    assert s == pytest.approx(atoms.get_distance(0, 1) - atoms.get_distance(2, 1))
    rng = np.random.default_rng(0)
    pos = atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
    _, grad = cv.value_and_gradient(pos)
    h = 1e-6
    for k in (0, 1, 2, 5):
        for d in range(3):
            p, m = pos.copy(), pos.copy()
            p[k, d] += h
            m[k, d] -= h
            fd = (cv.value_and_gradient(p)[0] - cv.value_and_gradient(m)[0]) / (2 * h)
            assert grad[k, d] == pytest.approx(fd, abs=1e-6)
    assert np.all(grad[6:] == 0)  # atoms outside the CV feel nothing


def test_steered_centre_moves_linearly_then_stays():
    bias = UmbrellaBias(
        cv=DistanceCV.transfer(0, 1, 2), k_eV_A2=2.0, center_A=-0.6, end_center_A=0.6,
        steer_steps=100,
    )  # fmt: skip
    assert [bias.center(s) for s in (0, 50, 100, 500)] == pytest.approx([-0.6, 0.0, 0.6, 0.6])
    e, _f, s = bias.energy_and_forces(hat().positions, step=0)
    assert e == pytest.approx(0.5 * 2.0 * (s + 0.6) ** 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k_eV_A2": 0.0}, "k_eV_A2"),
        ({"end_center_A": 1.0}, "steer_steps"),
        ({"center_A": float("nan")}, "center_A"),
    ],
)
def test_bad_bias_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UmbrellaBias(cv=DistanceCV.transfer(0, 1, 2), **kwargs)
    with pytest.raises(ValueError, match="three different"):
        DistanceCV.transfer(0, 1, 1)


@needs_tblite
def test_biased_forces_are_minus_the_gradient_of_the_biased_energy():
    atoms = hat()
    bias = UmbrellaBias(cv=DistanceCV.transfer(0, 1, 2), k_eV_A2=4.0, center_A=0.0)
    calc = BiasCalculator(make_tblite(multiplicity=2), bias)
    atoms.calc = calc
    forces = atoms.get_forces()
    res = calc.results
    assert res["energy"] == pytest.approx(res["unbiased_energy"] + res["bias_energy"])
    assert res["bias_energy"] == pytest.approx(0.5 * 4.0 * res["cv"] ** 2)
    h = 1e-4
    for k, d in [(1, 0), (0, 0), (2, 1), (4, 2)]:
        p, m = atoms.copy(), atoms.copy()
        p.calc = m.calc = calc
        p.positions[k, d] += h
        m.positions[k, d] -= h
        fd = -(p.get_potential_energy() - m.get_potential_energy()) / (2 * h)
        assert forces[k, d] == pytest.approx(fd, abs=2e-3)


@needs_tblite
def test_steered_md_carries_the_hydrogen_across_and_is_judged_unbiased():
    atoms = hat()
    cv = DistanceCV.transfer(0, 1, 2)
    start = cv(atoms)
    assert start < -0.5  # H on the donor
    bias = UmbrellaBias(cv=cv, k_eV_A2=5.0, center_A=start, end_center_A=-start, steer_steps=150)
    client = LocalClient(calculator=make_tblite(multiplicity=2), rule=always(Verdict.TRUSTED))
    gen = MDGenerator(
        atoms, settings=MDSettings(temperature_K=300, timestep_fs=0.5, n_steps=200, seed=1),
        bias=bias,
    )  # fmt: skip
    events = gen.run(client, max_steps=100)
    state = gen.state()
    events += gen.run(client)
    assert events[-1].action is Action.FINISHED
    assert gen.cv is not None and gen.cv > 0.4  # H now on the acceptor
    # The energies reported with the steps are the committee's (here xTB's), unbiased.
    probe = gen.atoms.copy()
    probe.calc = make_tblite(multiplicity=2)
    assert events[-1].energy == pytest.approx(probe.get_potential_energy(), abs=1e-6)
    # Resumed from step 100, the integrator sees the bias again, centred where step 102 is.
    again = MDGenerator(hat(), settings=gen.settings, bias=bias)
    again.restore(state)
    list(again.irun(client, max_steps=2))
    assert isinstance(again.atoms.calc, BiasCalculator) and again.atoms.calc.step == 102


@needs_tblite
def test_transfer_sampler_places_the_hydrogen_between_donor_and_acceptor():
    settings = TransferSettings(donor=0, hydrogen=1, acceptor=2, n_samples=12, seed=3)
    rule = ScriptedRule([Verdict.UNCERTAIN] * 3, then=Verdict.TRUSTED)
    client = LocalClient(calculator=make_tblite(multiplicity=2), rule=rule)
    sampler = TransferSampler([hat()], settings=settings)
    events = sampler.run(client)
    assert len(events) == 12 and events[-1].action is Action.FINISHED
    assert [e.verdict for e in events[:3]] == [Verdict.UNCERTAIN] * 3  # every one is judged
    assert rule.calls == 12
    assert all(0.3 <= f <= 0.7 for f in sampler.fractions)
    proposal = sampler.propose()
    d_dh, d_ah = proposal.get_distance(0, 1), proposal.get_distance(2, 1)
    assert d_dh < proposal.get_distance(0, 2) and d_ah < proposal.get_distance(0, 2)
    assert proposal.info["multiplicity"] == 2
    resumed = TransferSampler([hat()], settings=settings)
    mid = TransferSampler([hat()], settings=settings)
    list(mid.irun(client, max_steps=5))
    resumed.restore(mid.state())
    assert resumed.step == 5 and not resumed.done
    np.testing.assert_allclose(resumed.propose().positions, mid.propose().positions)


def test_transfer_settings_are_checked():
    with pytest.raises(ValueError, match="three different"):
        TransferSettings(donor=0, hydrogen=0, acceptor=2)
    with pytest.raises(ValueError, match="fraction_range"):
        TransferSettings(donor=0, hydrogen=1, acceptor=2, fraction_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="outside"):
        TransferSampler([hat()], settings=TransferSettings(donor=0, hydrogen=1, acceptor=40))


def test_a_sweeping_centre_goes_back_and_forth_between_its_ends():
    cv = DistanceCV.transfer(0, 1, 2)
    bias = UmbrellaBias(cv=cv, center_A=-1.0, end_center_A=1.0, steer_steps=10, sweep=True)
    centres = [bias.center(step) for step in (0, 5, 10, 15, 20, 25, 30)]
    assert centres == pytest.approx([-1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 1.0])
    once = UmbrellaBias(cv=cv, center_A=-1.0, end_center_A=1.0, steer_steps=10)
    assert once.center(30) == 1.0
