"""Transition-state generators: Sella and (CI-)NEB on tblite and on the MACE committee."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.optimize import BFGS
from dynamics_helpers import (
    ScriptedRule,
    always,
    ethane,
    labelled,
    make_committee,
    make_tblite,
    needs_sella,
    needs_tblite,
)
from pal_atoms.dynamics import (
    Action,
    DynamicsGenerator,
    LocalClient,
    NEBGenerator,
    NEBSettings,
    SellaGenerator,
    SellaSettings,
    local_comm,
)

from pal_atoms.core.protocols import Verdict

pytestmark = [needs_tblite, needs_sella]


def eclipsed_deviation_deg(atoms):
    """Largest deviation (degrees) of the H-C-C-H dihedrals from eclipsed (0 mod 120)."""
    d = np.array([atoms.get_dihedral(i, 0, 1, j) for i in (2, 3, 4) for j in (5, 6, 7)])
    return float(np.abs((d + 60) % 120 - 60).max())


def hessian_eigenvalues(atoms, calc, delta=1e-3):
    """Eigenvalues (eV/Å²) of the finite-difference Hessian of ``atoms`` with ``calc``."""
    a = atoms.copy()
    a.calc = calc
    x0, n = a.positions.copy(), 3 * len(a)
    h = np.zeros((n, n))
    for k in range(n):
        for sign in (1, -1):
            x = x0.copy().ravel()
            x[k] += sign * delta
            a.positions = x.reshape(-1, 3)
            h[k] -= sign * a.get_forces().ravel() / (2 * delta)
    return np.linalg.eigvalsh(0.5 * (h + h.T))


def rotated_ethane(angle_deg=120.0):
    """Ethane with one methyl group turned by ``angle_deg`` (the NEB end point)."""
    atoms = ethane()
    atoms.set_dihedral(2, 0, 1, 5, atoms.get_dihedral(2, 0, 1, 5) + angle_deg, indices=[1, 5, 6, 7])
    return atoms


@pytest.fixture(scope="module")
def ethane_committee():
    """MACE committee trained on a tblite torsion scan of ethane (~15 s on one core)."""
    from pal_atoms.calculators import CommitteeTrainer, TrainerSettings

    rng = np.random.default_rng(0)
    scan = []
    for phi in np.arange(180, 300.1, 10):
        for sigma in (0.01, 0.01):
            atoms = molecule("C2H6")
            atoms.set_dihedral(2, 0, 1, 5, phi, indices=[1, 5, 6, 7])
            atoms.positions += rng.normal(0, sigma, atoms.positions.shape)
            scan.append(atoms)
    committee = make_committee(["H", "C"])
    CommitteeTrainer(
        committee,
        settings=TrainerSettings(max_epochs=150, lr=2e-2, batch_size=8, validation_fraction=0.0),
    ).train(labelled(scan, make_tblite()))
    return committee


def test_sella_finds_the_ethane_rotation_saddle_with_tblite():
    gen = SellaGenerator(ethane(), settings=SellaSettings(seed=0, fmax_eV_A=0.01))
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    events = gen.run(client)
    assert events[-1].action is Action.FINISHED
    assert events[-1].reason == "converged"
    assert gen.converged
    assert gen.saddle is not None
    assert sum(e.n_evaluations for e in events) == client.n_evaluations
    assert eclipsed_deviation_deg(gen.saddle) < 1.0
    eig = hessian_eigenvalues(gen.saddle, make_tblite())
    assert eig[0] < -0.01  # one imaginary mode (the torsion) ...
    assert eig[1] > -0.01  # ... and only one (translations/rotations are ~0)
    barrier = events[-1].energy - client.calculator.get_potential_energy(ethane())
    assert 0.05 < barrier < 0.2  # eV; GFN2-xTB gives ~0.1 eV


def test_sella_with_the_trained_committee_finds_the_saddle(ethane_committee):
    client = LocalClient(calculator=ethane_committee, rule=always(Verdict.TRUSTED))
    gen = SellaGenerator(ethane(), settings=SellaSettings(seed=1, fmax_eV_A=0.02))
    events = gen.run(client)
    assert gen.converged, events[-1]
    # The committee is trained on a few tblite frames; its saddle lies within a few degrees
    # of the exact eclipsed one (0.1-5 deg seen), far from the staggered minimum (60 deg).
    assert eclipsed_deviation_deg(gen.saddle) < 10.0
    assert "max_force_std" in ethane_committee.results


def test_neb_runs_with_the_committee_and_every_image_is_judged(ethane_committee):
    seen = []
    client = LocalClient(
        calculator=ethane_committee, rule=always(Verdict.TRUSTED), on_selected=seen.append
    )
    gen = NEBGenerator(
        ethane(),
        rotated_ethane(),
        generator_id=3,
        settings=NEBSettings(n_images=3, fmax_eV_A=0.05, max_iterations=150),
    )
    events = gen.run(client)
    assert events[-1].action is Action.FINISHED
    assert gen.converged, events[-1]
    assert sum(e.n_evaluations for e in events) == client.n_evaluations
    assert events[0].n_evaluations == 5  # two end points and three images
    energies = gen.energies()
    top = int(np.argmax(energies))
    assert top == 2  # the climbing image sits in the middle ...
    assert eclipsed_deviation_deg(gen.images[top]) < 5.0  # ... at the eclipsed geometry
    assert 0.02 < energies[top] - energies[0] < 0.3


def test_neb_with_tblite_reproduces_the_barrier():
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    gen = NEBGenerator(ethane(), rotated_ethane(), settings=NEBSettings(n_images=3))
    gen.run(client)
    assert gen.converged
    energies = gen.energies()
    assert 0.08 < max(energies) - energies[0] < 0.14  # eV


def test_uncertain_neb_images_count_against_patience():
    rule = ScriptedRule([Verdict.TRUSTED] * 5 + [Verdict.UNCERTAIN] * 20)
    client = LocalClient(calculator=make_tblite(), rule=rule, record=True)
    gen = NEBGenerator(
        ethane(), rotated_ethane(), settings=NEBSettings(n_images=3, patience=1, max_restarts=0)
    )
    events = gen.run(client)
    assert [e.verdict for e in events][:3] == [
        Verdict.TRUSTED,
        Verdict.UNCERTAIN,
        Verdict.UNCERTAIN,
    ]
    assert events[-1].action is Action.FINISHED
    assert "restart budget (0) used up" in events[-1].reason
    assert not gen.converged
    assert len(client.selected) == 6  # two steps of three uncertain images


def test_sella_restarts_from_a_new_perturbation_on_untrusted():
    rule = ScriptedRule([Verdict.TRUSTED, Verdict.UNTRUSTED])
    gen = SellaGenerator(ethane(), settings=SellaSettings(seed=0, max_restarts=2))
    client = LocalClient(calculator=make_tblite(), rule=rule)
    first = None
    for event in gen.irun(client):
        if first is None:
            first = gen.atoms.positions.copy()
        if event.action is Action.RESTART:
            break
    assert event.reason == "untrusted prediction"
    gen.run(client, max_steps=1)
    assert gen.attempt == 1
    assert not np.allclose(gen.atoms.positions, first)  # a different perturbation
    state = json.loads(json.dumps(gen.state()))
    twin = SellaGenerator(ethane())
    twin.restore(state)
    assert (twin.step, twin.attempt, twin.n_restarts) == (gen.step, 1, 1)
    twin.run(client)
    assert twin.converged
    assert eclipsed_deviation_deg(twin.saddle) < 1.0


def test_any_ase_optimizer_is_a_generator():
    gen = DynamicsGenerator(
        ethane(), lambda a: BFGS(a, logfile=None, comm=local_comm()), fmax_eV_A=0.02
    )
    gen.initial.rattle(0.05, seed=2)
    events = gen.run(LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED)))
    assert events[-1].action is Action.FINISHED
    assert gen.converged
    assert np.abs(gen.atoms.get_forces()).max() < 0.02


def test_bad_ts_settings():
    for bad in (
        {"fmax_eV_A": 0},
        {"max_iterations": 0},
        {"perturbation_A": -1},
        {"order": -1},
        {"patience": -1},
    ):
        with pytest.raises(ValueError):
            SellaSettings(**bad)
    for bad in (
        {"n_images": 0},
        {"interpolation": "spline"},
        {"optimizer": "SD"},
        {"spring_eV_A2": 0},
    ):
        with pytest.raises(ValueError):
            NEBSettings(**bad)
    with pytest.raises(ValueError, match="same atoms"):
        NEBGenerator(ethane(), molecule("CH4"))
