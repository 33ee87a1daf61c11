"""Continuous training: labels join at once, improved weights are published, plateau."""

from __future__ import annotations

import numpy as np
import pytest
from calc_clusters import force_mae
from pal_atoms.calculators import (
    CommitteeCalculator,
    StreamingTrainer,
    StreamSettings,
    is_validation,
)

from pal_atoms.core.errors import ConfigError


def _committee(**kw):
    return CommitteeCalculator.create(
        "mace", elements=["Bi"], n_members=2, device="cpu", hidden_irreps="16x0e", **kw
    )


def test_validation_split_is_deterministic_and_about_one_in_n(bi_data):
    frames = bi_data["train"]
    picks = [is_validation(a, 4) for a in frames]
    assert picks == [is_validation(a.copy(), 4) for a in frames]  # same on any copy
    assert 0 < sum(picks) < len(frames) / 2
    assert not any(is_validation(a, 0) for a in frames)


@pytest.mark.slow
def test_labels_join_at_once_and_published_weights_improve(bi_data):
    committee = _committee()
    trainer = StreamingTrainer(
        committee, StreamSettings(eval_every_steps=20, validation_every=4, min_validation=2)
    )
    first, later = bi_data["train"][:24], bi_data["train"][24:]
    trainer.add(first)
    assert trainer.n_train + len(trainer.validation_labels) == len(first)
    serving = _committee()
    serving.set_weights(committee.get_weights())
    before = force_mae(serving, bi_data["test"])
    publishes = trainer.train_steps(100)
    trainer.add(later)  # between chunks, without a round
    assert trainer.n_train + len(trainer.validation_labels) == len(bi_data["train"])
    publishes += trainer.train_steps(200)
    assert publishes and all(p.members for p in publishes)
    assert [p.step for p in publishes] == sorted(p.step for p in publishes)
    assert publishes[-1].n_train == trainer.n_train
    for p in publishes:  # the serving copy changes only through publishes
        serving.set_weights(p.weights, members=p.members)
    after = force_mae(serving, bi_data["test"])
    assert after < 0.6 * before, (before, after)
    state = trainer.state()
    assert state["step"] == 300 and state["publishes"] == len(publishes)
    assert np.isfinite(state["val_forces_mae"])


def test_members_train_separately_and_plateau_is_detected(bi_data):
    committee = _committee()
    settings = StreamSettings(
        eval_every_steps=5, validation_every=3, min_validation=2, plateau_evals=3,
        plateau_tolerance=0.9, lr=1e-3,
    )  # fmt: skip
    trainer = StreamingTrainer(committee, settings, members=[1])
    w0 = committee.get_weights()
    trainer.add(bi_data["train"][:12])
    assert not trainer.plateaued()  # no evaluations yet
    pubs = trainer.train_steps(15)
    assert {m for p in pubs for m in p.members} == {1}
    w1 = committee.get_weights()
    for k in w0[0]:  # member 0's own weights untouched (E0s and scale are common)
        if k.startswith(("backbone.", "head.")):
            assert np.array_equal(w0[0][k].numpy(), w1[0][k].numpy()), k
    assert trainer.plateaued()  # tolerance 0.9: any three evaluations count as a plateau
    trainer.add(bi_data["train"][12:30])  # new validation labels reset the window
    assert not trainer.plateaued()


def test_detach_trains_a_private_copy(bi_data):
    committee = _committee()
    trainer = StreamingTrainer(committee, StreamSettings(eval_every_steps=10))
    trainer.detach()
    trainer.add(bi_data["train"][:8])
    w0 = committee.get_weights()
    trainer.train_steps(10)
    w1 = committee.get_weights()
    assert all(np.array_equal(w0[m][k].numpy(), w1[m][k].numpy()) for m in range(2) for k in w0[m])
    assert trainer.committee is not committee


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"validation_every": 1}, "validation_every"),
        ({"eval_every_steps": 0}, "eval_every_steps"),
        ({"plateau_evals": 1}, "plateau_evals"),
        ({"plateau_tolerance": 1.5}, "plateau_tolerance"),
        ({"min_lr": 1.0}, "min_lr"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        StreamSettings(**kwargs)


def test_uncovered_charge_is_refused(bi_data):
    trainer = StreamingTrainer(_committee(), StreamSettings())
    bad = bi_data["train"][0].copy()
    bad.calc = bi_data["train"][0].calc
    bad.info["charge"] = 3
    with pytest.raises(ValueError, match="charge"):
        trainer.add([bad])
