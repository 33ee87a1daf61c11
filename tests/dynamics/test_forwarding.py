"""ForwardingCalculator and LocalClient: unmodified ASE code on the prediction client."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from ase.optimize import BFGS
from dynamics_helpers import ScriptedRule, always, bi4, ethane, make_tblite, needs_tblite
from pal_atoms.dynamics import (
    ForwardingCalculator,
    LocalClient,
    UnphysicalStateError,
    check_geometry,
    local_comm,
    worst_verdict,
)

from pal_atoms.core.protocols import PredictionClient, Verdict

pytestmark = needs_tblite


def test_local_client_is_a_prediction_client():
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    assert isinstance(client, PredictionClient)


def test_forwarded_results_match_the_calculator_and_keep_the_verdict():
    atoms = bi4()
    ref = atoms.copy()
    ref.calc = make_tblite()
    rule = ScriptedRule([Verdict.UNCERTAIN])
    client = LocalClient(calculator=make_tblite(), rule=rule, record=True)
    atoms.calc = calc = ForwardingCalculator(client, generator_id=7)
    assert calc.last_verdict is None
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-8)
    assert calc.last_verdict is Verdict.UNCERTAIN
    assert calc.step == 1  # energy and forces came from one round trip (cached)
    assert client.n_evaluations == 1
    (sel,) = client.selected
    assert (sel.generator_id, sel.step, sel.verdict) == (7, 1, Verdict.UNCERTAIN)
    assert sel.atoms is not atoms
    assert calc.get_property("free_energy") == pytest.approx(atoms.get_potential_energy())
    # tblite has no uncertainty: declared but absent keys raise the ASE error
    with pytest.raises(PropertyNotImplementedError):
        calc.get_property("max_force_std", atoms)
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert calc.step == 2
    assert calc.pop_verdicts() == [Verdict.UNCERTAIN, Verdict.TRUSTED]
    assert calc.pop_verdicts() == []


def test_on_selected_callback_sees_only_non_trusted_geometries():
    seen = []
    rule = ScriptedRule([Verdict.TRUSTED, Verdict.UNTRUSTED, Verdict.UNCERTAIN])
    client = LocalClient(calculator=make_tblite(), rule=rule, on_selected=seen.append)
    atoms = bi4()
    atoms.calc = ForwardingCalculator(client, generator_id=3)
    for _ in range(3):
        atoms.positions[1, 2] += 0.02
        atoms.get_forces()
    assert [s.verdict for s in seen] == [Verdict.UNTRUSTED, Verdict.UNCERTAIN]
    assert [s.step for s in seen] == [2, 3]
    assert client.selected == []  # record=False keeps nothing


def test_guard_stops_a_geometry_before_the_model_sees_it():
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    atoms = bi4()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    atoms.calc = ForwardingCalculator(
        client, guard=lambda a: check_geometry(a, min_distance_A=0.5, max_distance_A=None)
    )
    with pytest.raises(UnphysicalStateError, match=r"0\.300 Å apart"):
        atoms.get_forces()
    assert client.n_evaluations == 0


def test_prime_avoids_a_second_round_trip():
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    atoms = bi4()
    atoms.calc = calc = ForwardingCalculator(client)
    forces = atoms.get_forces().copy()
    saved = dict(calc.results)
    atoms.positions[0] += 0.05
    atoms.get_forces()
    atoms.positions[0] -= 0.05
    calc.prime(atoms, saved)
    np.testing.assert_array_equal(atoms.get_forces(), forces)
    assert client.n_evaluations == 2


def test_unmodified_ase_optimizer_runs_on_the_forwarding_calculator():
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    atoms = ethane()
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc = ForwardingCalculator(client, generator_id=1)
    with BFGS(atoms, logfile=None, comm=local_comm()) as opt:
        assert opt.run(fmax=0.05, steps=100)
    assert np.abs(atoms.get_forces()).max() < 0.05
    assert calc.step == client.n_evaluations > 1


def test_non_finite_predictions_are_rejected():
    class NaNCalc(type(make_tblite())):  # type: ignore[misc]
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.results["forces"] = self.results["forces"] * np.nan

    client = LocalClient(calculator=NaNCalc(verbosity=0), rule=always(Verdict.TRUSTED))
    atoms = bi4()
    atoms.calc = calc = ForwardingCalculator(client)
    with pytest.raises(UnphysicalStateError, match="non-finite"):
        atoms.get_forces()
    assert calc.last_verdict is Verdict.TRUSTED


def test_worst_verdict_and_bad_arguments():
    assert worst_verdict([]) is None
    assert worst_verdict([Verdict.TRUSTED, Verdict.UNCERTAIN]) is Verdict.UNCERTAIN
    assert worst_verdict(["untrusted", Verdict.TRUSTED]) is Verdict.UNTRUSTED
    with pytest.raises(ValueError, match="evaluate"):
        ForwardingCalculator(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule"):
        LocalClient(calculator=make_tblite(), rule=3)  # type: ignore[arg-type]


def test_cache_follows_positions_and_the_charge_in_info():
    client = LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED))
    atoms = bi4()
    atoms.calc = calc = ForwardingCalculator(client)
    atoms.get_forces()
    atoms.get_potential_energy()
    assert calc.step == 1
    assert calc.check_state(atoms) == []
    atoms.info["charge"] = -2
    assert calc.check_state(atoms) == ["initial_charges"]
    atoms.get_potential_energy()
    assert calc.step == 2  # same positions, new charge: a new round trip
    atoms.info["charge"] = 0
    atoms.get_potential_energy()
    assert calc.step == 3
    atoms.positions[0, 0] += 1e-9
    assert calc.check_state(atoms) == ["positions"]
