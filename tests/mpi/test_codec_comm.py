"""Buffer codecs, the backoff and the controller's per-rank accounting (no MPI runtime)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.mpi.accounting import RankAccounting
from pal_atoms.workflow.mpi.codec import (
    _atoms_public,
    decode_predictions,
    decode_structures,
    encode_predictions,
    encode_structures,
    prediction_records,
    read_prediction,
    read_structure,
    set_verdict,
    structure_records,
)
from pal_atoms.workflow.mpi.comm import Backoff
from pal_atoms.workflow.mpi.layout import Role


def _frames():
    ethanol = molecule("CH3CH2OH")
    bulk = Atoms("Bi2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=np.eye(3) * 3.0, pbc=True)
    return [ethanol, bulk]


def test_structures_round_trip_exactly_and_match_the_public_constructor():
    frames = _frames()
    buf = encode_structures([(a, 7 + i, 100 * i) for i, a in enumerate(frames)])
    back = decode_structures(buf)
    records = structure_records(buf)
    assert len(records) == 2
    for i, ((atoms, gid, step), rec) in enumerate(zip(back, records, strict=True)):
        orig = frames[i]
        assert (gid, step) == (7 + i, 100 * i)
        assert np.array_equal(atoms.numbers, orig.numbers)
        assert np.array_equal(atoms.positions, orig.positions)
        assert np.array_equal(atoms.cell[:], orig.cell[:]) and list(atoms.pbc) == list(orig.pbc)
        again, _, _ = read_structure(rec)
        ref = _atoms_public(orig.numbers, orig.positions, orig.cell[:], orig.pbc)
        assert again == ref  # the fast path builds the same object as ase.Atoms(...)
    with pytest.raises(ValueError):
        structure_records(buf[:-3])  # a buffer that ends inside a record


def test_predictions_round_trip_with_verdicts():
    n = 9
    rng = np.random.default_rng(0)
    results = [
        {
            "energy": -1.5,
            "energy_std": 0.01,
            "max_force_std": 0.2,
            "forces": rng.normal(size=(n, 3)),
            "forces_std": rng.uniform(size=n),
        }
        for _ in range(2)
    ]
    buf = encode_predictions(results, [Verdict.UNCERTAIN, None])
    back = decode_predictions(buf)
    assert back[0][1] is Verdict.UNCERTAIN and back[1][1] is None
    for (r, _), orig in zip(back, results, strict=True):
        assert r["energy"] == orig["energy"] and r["max_force_std"] == orig["max_force_std"]
        assert np.array_equal(r["forces"], orig["forces"])
        assert np.array_equal(r["forces_std"], orig["forces_std"])
    rec = set_verdict(prediction_records(buf)[1], Verdict.TRUSTED)
    assert read_prediction(rec)[1] is Verdict.TRUSTED


@pytest.mark.parametrize(
    "kwargs",
    [{"min_sleep_s": 0}, {"min_sleep_s": 1e-3, "max_sleep_s": 1e-4}, {"factor": 1.0}],
)
def test_backoff_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_backoff_stays_short_after_traffic_and_grows_when_idle(monkeypatch):
    from pal_atoms.workflow.mpi import comm

    slept: list[float] = []
    clock = [0.0]
    monkeypatch.setattr(comm.time, "sleep", slept.append)
    monkeypatch.setattr(comm.time, "monotonic", lambda: clock[0])
    b = Backoff(min_sleep_s=1e-5, max_sleep_s=4e-3, factor=2.0, active_sleep_s=1e-4, active_s=0.05)
    for _ in range(20):  # within active_s of the first empty poll: capped low
        b.wait()
    assert slept[0] == 1e-5 and max(slept) == pytest.approx(1e-4)
    clock[0] = 0.06  # idle for longer than active_s: grows to the large cap
    for _ in range(20):
        b.wait()
    assert slept[-1] == pytest.approx(4e-3)
    b.reset()
    b.wait()
    assert slept[-1] == 1e-5  # traffic: poll soon again


def test_rank_accounting_busy_fractions_and_steps():
    roles = [Role.CONTROLLER, Role.PREDICTION, Role.ORACLE, Role.TRAINING, Role.GENERATOR]
    acct = RankAccounting(roles)
    acct.busy(1)
    acct.busy(2)
    time.sleep(0.05)
    acct.idle(1)  # prediction finished; the oracle is still busy
    acct.add_busy(3, 0.5)
    acct.steps(4, 10)
    acct.steps(4, 5)
    m = acct.metrics(1.0)
    assert set(m) == {"1", "2", "3", "4"}  # no entry for the controller itself
    assert m["1"]["role"] == "prediction" and 0.04 <= m["1"]["busy_fraction"] < 1.0
    assert m["2"]["busy_fraction"] >= m["1"]["busy_fraction"]  # counted up to now
    assert m["3"]["busy_fraction"] == 0.5
    assert m["4"] == {"role": "generator", "steps": 15, "steps_per_s": 15.0}


def _ok_label(atoms, with_stress):
    from pal_atoms.core.label import Label

    rng = np.random.default_rng(0)
    return Label(
        atoms=atoms,
        status="ok",
        energy=-12.5,
        forces=rng.normal(size=(len(atoms), 3)),
        stress=rng.normal(size=6) if with_stress else None,
        oracle="emt",
        method="EMT",
        settings={"a": 1},
        attempts=2,
        wall_time_s=0.25,
    )


@pytest.mark.parametrize("with_stress", [True, False])
def test_a_label_message_carries_stress_charge_and_provenance(with_stress):
    from pal_atoms.workflow.mpi.codec import label_data_size, label_from_message, label_message

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[3, 3, 3], pbc=True)
    atoms.info.update(charge=-1, multiplicity=2)
    sent = _ok_label(atoms, with_stress)
    control, data = label_message(sent, generator_id=3, step=7, uncertainty=0.4)
    assert data is not None and data.size == label_data_size(len(atoms), control)
    got = label_from_message(atoms, control, data)
    assert got.ok and got.energy == sent.energy and got.attempts == 2
    np.testing.assert_array_equal(got.forces, sent.forces)
    if with_stress:
        np.testing.assert_array_equal(got.stress, sent.stress)
    else:
        assert got.stress is None
    assert got.atoms.info["charge"] == -1 and got.atoms.info["multiplicity"] == 2
    assert (got.oracle, got.method, got.settings) == ("emt", "EMT", {"a": 1})
    assert (control["generator_id"], control["step"], control["uncertainty"]) == (3, 7, 0.4)


def test_a_failed_label_message_has_no_numbers():
    from pal_atoms.core.label import Label
    from pal_atoms.workflow.mpi.codec import label_data_size, label_from_message, label_message

    atoms = molecule("H2O")
    failed = Label(atoms=atoms, status="failed", error="SCF crashed", oracle="xtb")
    control, data = label_message(failed, generator_id=0, step=1, uncertainty=1.0)
    assert data is None and label_data_size(len(atoms), control) == 0
    got = label_from_message(atoms, control, None)
    assert not got.ok and got.error == "SCF crashed" and got.energy is None


def test_training_label_buffers_keep_stress():
    from ase.calculators.singlepoint import SinglePointCalculator

    from pal_atoms.workflow.mpi.codec import decode_labels, encode_labels

    a = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[3, 3, 3], pbc=True)
    a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.ones((2, 3)), stress=np.arange(6.0))
    b = molecule("H2O")
    b.calc = SinglePointCalculator(b, energy=-2.0, forces=np.zeros((3, 3)))
    got = decode_labels(encode_labels([a, b, a]))
    assert [len(x) for x in got] == [2, 3, 2]
    np.testing.assert_array_equal(got[0].get_stress(voigt=True), np.arange(6.0))
    assert "stress" not in got[1].calc.results
    assert got[1].get_potential_energy() == -2.0


def test_a_failed_prediction_travels_as_a_verdict_with_nan():
    from pal_atoms.workflow.prediction import failed_prediction

    rec = encode_predictions([failed_prediction(3)], [Verdict.FAILED])
    ((results, verdict),) = decode_predictions(rec)
    assert verdict is Verdict.FAILED
    assert np.all(np.isnan(results["forces"])) and results["forces"].shape == (3, 3)
    assert [v.severity for v in Verdict] == [0, 1, 2, 3]
