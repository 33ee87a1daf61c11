"""MD generator on the real MACE committee: untrained restarts, trained runs through."""

from __future__ import annotations

import numpy as np
import pytest
from dynamics_helpers import always, bi4, labelled, make_committee, make_tblite, needs_tblite
from pal_atoms.dynamics import Action, LocalClient, MDGenerator, MDSettings

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.selection import TrustWindow

pytestmark = needs_tblite

#: Trust window of both tests, on the committee's energy spread (eV): an untrained
#: committee spreads by ~2 eV on Bi4, one trained on 30 tblite frames by ~0.04 eV. (Its
#: max_force_std does not separate them: random initial weights give tiny forces, so the
#: untrained spread is ~0.04 eV/Å, below that of the trained committee.)
WINDOW = TrustWindow(key="energy_std", lower=0.2, upper=1e3)


@pytest.fixture(scope="module")
def bi4_frames():
    """Bi4 frames from a short tblite Langevin run at 300 K, labelled with tblite."""
    gen = MDGenerator(bi4(), settings=MDSettings(temperature_K=300, timestep_fs=4, seed=1))
    frames = []
    for _ in gen.irun(
        LocalClient(calculator=make_tblite(), rule=always(Verdict.TRUSTED)), max_steps=60
    ):
        if gen.step % 2 == 0:
            frames.append(gen.atoms.copy())
    return labelled(frames, make_tblite())


def test_untrained_committee_restarts_after_patience_steps():
    committee = make_committee(["Bi"])
    client = LocalClient(calculator=committee, rule=WINDOW, record=True)
    gen = MDGenerator(bi4(), settings=MDSettings(patience=3, seed=2), generator_id=5)
    events = gen.run(client, max_steps=8)
    assert all(e.verdict is Verdict.UNCERTAIN for e in events)
    assert [e.step for e in events if e.action is Action.RESTART] == [4, 8]
    assert events[3].reason == "patience exhausted (3 uncertain steps)"
    assert len(client.selected) == client.n_evaluations  # every geometry went to labelling
    assert min(s.results["energy_std"] for s in client.selected) > WINDOW.lower


@pytest.mark.slow
def test_trained_committee_runs_through(bi4_frames):
    from pal_atoms.calculators import CommitteeTrainer, TrainerSettings

    committee = make_committee(["Bi"])
    CommitteeTrainer(
        committee,
        settings=TrainerSettings(max_epochs=120, lr=2e-2, batch_size=8, validation_fraction=0.0),
    ).train(bi4_frames)
    client = LocalClient(calculator=committee, rule=WINDOW, record=True)
    gen = MDGenerator(bi4(), settings=MDSettings(patience=3, seed=3, timestep_fs=4, n_steps=30))
    stds = []
    for event in gen.irun(client):
        stds.append(committee.results["energy_std"])
        assert event.verdict is Verdict.TRUSTED, (event, stds[-1])
    assert event.action is Action.FINISHED
    assert gen.n_restarts == 0
    assert client.selected == []
    assert np.max(stds) < WINDOW.lower
