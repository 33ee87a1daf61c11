"""Buffer codecs, the backoff and the controller's per-rank accounting (no MPI runtime)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from pal_atoms.mpi.accounting import RankAccounting
from pal_atoms.mpi.codec import (
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
from pal_atoms.mpi.comm import Backoff
from pal_atoms.mpi.layout import Role
from pal_atoms.protocols import Verdict


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
    from pal_atoms.mpi import comm

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
