"""CommitteeTrainer on real tblite labels of Bi4/Bi6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from calc_clusters import distorted, force_mae
from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings

from pal_atoms.core.errors import ConfigError


def test_training_lowers_force_error_threefold(trained, bi_data):
    after = force_mae(trained["committee"], bi_data["test"])
    assert after * 3 <= trained["untrained_mae"], (after, trained["untrained_mae"])
    assert trained["history"][-1]["val_forces_mae"]


def test_uncertainty_higher_on_distorted_geometries(trained, bi_data):
    committee = trained["committee"]
    near = [r["max_force_std"] for r in committee.predict_batch(bi_data["test"])]
    far = [distorted(a, 0.4, seed=i) for i, a in enumerate(bi_data["test"][:8])]
    far_std = [r["max_force_std"] for r in committee.predict_batch(far)]
    assert np.median(far_std) > 3 * np.median(near), (np.median(far_std), np.median(near))


@pytest.mark.slow
def test_error_falls_as_labels_are_added(bi_data):
    # Same committee, same step budget; only the number of labels differs.
    settings = TrainerSettings(max_steps=120, batch_size=8, validation_fraction=0, seed=1)
    maes = []
    for n in (4, 32):
        cm = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
        CommitteeTrainer(cm, settings).train(
            bi_data["train"][::-1][:n] if n == 4 else bi_data["train"][:n]
        )
        maes.append(force_mae(cm, bi_data["test"]))
    assert maes[1] < maes[0], maes


def test_incremental_training_warm_starts_and_records_history(bi_data):
    cm = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
    trainer = CommitteeTrainer(cm, TrainerSettings(max_steps=12, max_epochs=100))
    trainer.train(bi_data["train"][:16])
    opt = trainer._optimizer
    e0 = cm.model.e0.clone()
    mae_before = force_mae(cm, bi_data["test"])
    trainer.train(bi_data["train"][:32])
    assert trainer._optimizer is opt  # continued, not restarted
    assert torch.equal(cm.model.e0, e0)  # E0s stay unless refit_e0
    assert force_mae(cm, bi_data["test"]) < mae_before
    assert [h["n_labels"] for h in cm.metadata["history"]] == [16, 32]


def test_members_subset_and_determinism(bi_data):
    def run(members):
        cm = CommitteeCalculator.create("mace", elements=["Bi"], n_members=3, device="cpu")
        before = cm.get_weights()
        CommitteeTrainer(cm, TrainerSettings(max_steps=3, seed=5)).train(
            bi_data["train"][:12], members=members
        )
        return before, cm.get_weights()

    before, after = run([1])
    for m, changed in [(0, False), (1, True), (2, False)]:
        same = all(
            torch.equal(before[m][k], after[m][k])
            for k in before[m]
            if k.startswith(("backbone", "head"))
        )
        assert same != changed
    _, again = run([1])
    assert all(torch.equal(after[1][k], again[1][k]) for k in after[1])


def test_reinitialise_and_shared_mode(bi_data):
    cm = CommitteeCalculator.create(
        "schnet", elements=["Bi"], n_members=3, mode="shared", device="cpu", dtype="float64"
    )
    trainer = CommitteeTrainer(cm, TrainerSettings(max_steps=10, reinitialise=True))
    history = trainer.train(bi_data["train"][:16])
    assert history[-1]["step"] == 10
    assert cm.predict_batch(bi_data["test"][:2])[0]["energy_std"] > 0
    with pytest.raises(ValueError, match="shared"):
        trainer.train(bi_data["train"][:16], members=[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0},
        {"batch_size": 0},
        {"validation_fraction": 1.0},
        {"dtype": "float16"},
        {"energy_weight": 0, "forces_weight": 0},
        {"max_steps": 0},
    ],
)
def test_settings_are_validated(kwargs):
    with pytest.raises(ConfigError):
        TrainerSettings(**kwargs)


def test_bad_labels(bi_data):
    cm = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
    trainer = CommitteeTrainer(cm)
    with pytest.raises(ValueError, match="no labels"):
        trainer.train([])
    bare = bi_data["bi4"].copy()
    with pytest.raises(ValueError, match="calculator"):
        trainer.train([bare])
    with pytest.raises(ValueError, match="members"):
        trainer.train(bi_data["train"][:4], members=[5])


def test_labels_arriving_during_training_join_it(bi_data):
    cm = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
    trainer = CommitteeTrainer(
        cm, TrainerSettings(max_epochs=4, batch_size=4, validation_fraction=0, seed=2)
    )
    later = list(bi_data["train"][8:16])
    calls = []

    def more_labels():
        calls.append(len(calls))
        return [later.pop(), later.pop()] if len(calls) == 2 else []

    history = trainer.train(bi_data["train"][:8], more_labels=more_labels)
    assert len(calls) == len(history) == 4  # asked before every epoch
    assert [h["n_labels"] for h in history] == [8, 10, 10, 10]
    # Steps per epoch grow with the data: 2 batches of 4, then 3 (10 labels).
    assert [h["step"] for h in history] == [2, 5, 8, 11]
    assert cm.metadata["history"][-1]["n_labels"] == 10
