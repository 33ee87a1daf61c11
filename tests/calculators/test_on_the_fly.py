"""OnTheFlyCalculator on real parts: tiny MACE committee, tblite GFN2-xTB, ASE Langevin."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch
from ase import units
from ase.md.langevin import Langevin

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution as thermalize_momenta,  # noqa: N813
    )

from pal_atoms.calculators import (
    CommitteeCalculator,
    CommitteeTrainer,
    OnTheFlyCalculator,
    TrainerSettings,
)
from pal_atoms.dynamics import build_bi_clusters, rattle_sample

from pal_atoms.core.errors import ConfigError
from pal_atoms.core.protocols import Verdict
from pal_atoms.store import LabelStore
from pal_atoms.workflow.metrics import force_mae
from pal_atoms.workflow.selection import TrustWindow

pytest.importorskip("tblite.ase", reason="tblite is the oracle of these tests")

from pal_atoms.oracles import XTB, label

torch.set_num_threads(1)

#: energy_std separates untrained (~0.5 eV on Bi4) from trained committees; max_force_std
#: of an untrained committee can be tiny (~0.05 eV/Å) and would trust it.
SELECTION = TrustWindow(key="energy_std", lower=0.06, upper=100.0)
TRAINING = TrainerSettings(
    max_epochs=40, max_steps=40, lr=1e-2, batch_size=4, validation_fraction=0.0, seed=0
)


def tiny_committee(seed: int = 0) -> CommitteeCalculator:
    return CommitteeCalculator.create(
        "mace", elements=["Bi"], n_members=3, hidden_irreps="8x0e", num_interactions=1,
        seed=seed, device="cpu",
    )  # fmt: skip


def tblite_direct(atoms):
    """Energy and forces of a plain tblite call (no pal-atoms code in between)."""
    from tblite.ase import TBLite

    work = atoms.copy()
    work.calc = TBLite(
        method="GFN2-xTB", charge=float(atoms.info["charge"]),
        multiplicity=int(atoms.info["multiplicity"]), verbosity=0,
    )  # fmt: skip
    return work.get_potential_energy(), work.get_forces()


@pytest.fixture(scope="module")
def bi4():
    return build_bi_clusters([4], shapes_per_size=1, charges=[0], seed=3)[0]


@pytest.fixture(scope="module")
def held_out(bi4):
    oracle = XTB()
    frames = rattle_sample(bi4, 6, rattle_std_A=0.08, seed=11)
    return [label(a, oracle).to_atoms() for a in frames]


def test_langevin_script_becomes_active_learning(tmp_path, bi4, held_out):
    t0 = time.perf_counter()
    committee = tiny_committee()
    trainer = CommitteeTrainer(committee, TRAINING)
    mae_start = force_mae(committee, held_out)

    atoms = bi4.copy()
    # The one changed line of an MD script: atoms.calc = committee -> this.
    atoms.calc = OnTheFlyCalculator(
        committee, XTB(), tmp_path / "labels.h5", selection=SELECTION, trainer=trainer,
        retrain_size=6, background=False,
    )  # fmt: skip
    calc = atoms.calc
    rng = np.random.default_rng(0)
    thermalize_momenta(atoms, temperature_K=300, rng=rng)
    dyn = Langevin(
        atoms, timestep=2 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False,
        rng=rng,
    )  # fmt: skip
    steps = []

    def check_step():
        # The results cached for this geometry are what the dynamics used.
        forces = atoms.get_forces()
        energy = atoms.get_potential_energy()
        steps.append((calc.last_verdict, calc.last_source, atoms.copy(), energy, forces.copy()))

    dyn.attach(check_step, interval=1)
    dyn.run(40)
    calc.close()

    sources = [s[1] for s in steps]
    assert "oracle" in sources, sources
    assert "committee" in sources, sources
    assert calc.n_labels >= 6
    assert calc.n_training_rounds >= 1
    assert calc.n_trusted + calc.n_labels + calc.n_failed == calc.n_calls
    for verdict, source, geometry, energy, forces in steps:
        assert np.isfinite(energy)
        assert np.all(np.isfinite(forces))
        if source == "oracle":
            assert verdict is not Verdict.TRUSTED
            e_ref, f_ref = tblite_direct(geometry)
            assert energy == pytest.approx(e_ref, abs=1e-6)
            np.testing.assert_allclose(forces, f_ref, atol=1e-6)
    # Trusted numbers are the committee's (weights unchanged since the last round).
    last_trusted = [s for s in steps if s[1] == "committee"][-1]
    (pred,) = committee.predict_batch([last_trusted[2]])
    np.testing.assert_allclose(last_trusted[4], pred["forces"], atol=1e-6)

    with LabelStore(tmp_path / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] == calc.n_labels
        frames = store.read(status="ok")
    for frame in frames:
        info = frame.info
        assert info["oracle"] == "xtb"
        assert info["method"] == "GFN2-xTB"
        assert info["settings_hash"]
        assert info["generator_id"] == 0
        assert info["generator_step"] >= 0
        assert np.isfinite(info["uncertainty"])
        assert info["charge"] == 0
        assert info["multiplicity"] == 1

    mae_end = force_mae(committee, held_out)
    assert mae_end < mae_start, (mae_start, mae_end)
    logging.getLogger(__name__).info(
        "on-the-fly run: %s, MAE %.3f -> %.3f eV/Å, %.1f s",
        calc.stats(), mae_start, mae_end, time.perf_counter() - t0,
    )  # fmt: skip


def test_background_training_swaps_weights(tmp_path, bi4):
    committee = tiny_committee(seed=1)
    before = committee.get_weights()
    trainer = CommitteeTrainer(committee, TRAINING)
    store = LabelStore(tmp_path / "labels.h5")
    calc = OnTheFlyCalculator(
        committee, XTB(), store, selection=SELECTION, trainer=trainer, retrain_size=3,
    )  # fmt: skip
    frames = rattle_sample(bi4, 4, rattle_std_A=0.05, seed=2)
    with calc:
        for frame in frames:
            frame.calc = calc
            frame.get_forces()
        assert calc.n_labels == 4
        # The live committee is untouched until the thread hands its weights over.
        assert calc.training_running or calc._pending is not None or calc.n_training_rounds
    assert calc.n_training_rounds == 1
    assert calc.last_training_error is None
    after = committee.get_weights()
    assert any(
        not torch.equal(before[0][k], after[0][k]) for k in before[0] if k.startswith("head.")
    )
    assert committee.metadata["e0_fitted"]
    assert len(store) == 4  # the store given by the caller stays open
    store.close()


def test_failed_label_returns_committee_prediction(tmp_path, bi4, caplog):
    committee = tiny_committee()
    oracle = XTB(max_iterations=1)  # a real SCF that cannot converge in one iteration
    calc = OnTheFlyCalculator(
        committee, oracle, str(tmp_path / "labels.h5"), selection=SELECTION, retrain_size=None
    )
    atoms = bi4.copy()
    atoms.calc = calc
    with caplog.at_level(logging.WARNING):
        forces = atoms.get_forces()
    (pred,) = committee.predict_batch([atoms])
    np.testing.assert_allclose(forces, pred["forces"])
    assert calc.last_source == "committee (label failed)"
    assert calc.n_failed == 1
    assert calc.n_labels == 0
    assert "returning the committee prediction" in caplog.text
    assert atoms.calc.get_property("max_force_std") == pytest.approx(pred["max_force_std"])
    calc.close()
    with LabelStore(tmp_path / "labels.h5", mode="r") as store:
        assert store.counts()["unconverged"] + store.counts()["failed"] == 1
        (rec,) = store.read(status=None)
        assert rec.info["error"]
        assert rec.calc is None


def test_rejects_bad_arguments(tmp_path):
    committee = tiny_committee()
    with pytest.raises(ConfigError, match="retrain_size"):
        OnTheFlyCalculator(committee, XTB(), tmp_path / "a.h5", retrain_size=0)
    other = CommitteeTrainer(tiny_committee(seed=2))
    with pytest.raises(ConfigError, match="background"):
        OnTheFlyCalculator(committee, XTB(), tmp_path / "b.h5", trainer=other)
