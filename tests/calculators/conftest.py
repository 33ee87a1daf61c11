"""Session fixtures: tblite-labelled Bi4/Bi6 data and one small trained MACE committee."""

from __future__ import annotations

import pytest
import torch
from calc_clusters import bi_cluster, force_mae, md_frames, relax

pytest.importorskip("tblite.ase", reason="tblite is needed to label test structures")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def bi_data():
    """Near-equilibrium 300 K frames of Bi4 and Bi6 (train 48, held-out 16)."""
    b4, b6 = relax(bi_cluster(4)), relax(bi_cluster(6))
    train = md_frames(b4, 24, 300, seed=1) + md_frames(b6, 24, 300, seed=2)
    test = md_frames(b4, 8, 300, seed=3) + md_frames(b6, 8, 300, seed=4)
    return {"train": train, "test": test, "bi4": b4, "bi6": b6}


@pytest.fixture(scope="session")
def trained(bi_data):
    """A 4-member MACE committee before and after a short training on bi_data['train']."""
    from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings

    committee = CommitteeCalculator.create("mace", elements=["Bi"], n_members=4, device="cpu")
    untrained_mae = force_mae(committee, bi_data["test"])
    trainer = CommitteeTrainer(committee, TrainerSettings(max_epochs=15, patience_steps=40))
    history = trainer.train(bi_data["train"])
    return {
        "committee": committee,
        "trainer": trainer,
        "history": history,
        "untrained_mae": untrained_mae,
    }
