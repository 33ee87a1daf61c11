"""Single-process ActiveLearning: stopping rules and selection, with fast stand-ins.

The committee here is a stand-in (Lennard-Jones forces with a scripted uncertainty) so
that the stopping logic runs in a second; the same loop with a real MACE committee and
real tblite labels is tested in tests/mpi/test_controller_mpi.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones
from pal_atoms.dynamics import MDGenerator, MDSettings
from pal_atoms.oracles import Wrapped

from pal_atoms.store import LabelStore
from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.selection import RelativeForceWindow, TrustWindow, WorstOf
from pal_atoms.workflow.settings import WorkflowSettings


def _lj() -> LennardJones:
    return LennardJones(sigma=2.7, epsilon=0.1, rc=8.0, smooth=True)


class ScriptedCommittee:
    """LJ predictions; ``max_force_std`` from ``std(call)`` (calls counted per structure)."""

    n_members = 2

    def __init__(self, std):
        self.std, self.calls, self.saved = std, 0, 0

    def predict_batch(self, frames):
        out = []
        for atoms in frames:
            work = atoms.copy()
            work.calc = _lj()
            e, f = work.get_potential_energy(), work.get_forces()
            s = float(self.std(self.calls))
            self.calls += 1
            out.append(
                {
                    "energy": e,
                    "free_energy": e,
                    "forces": f,
                    "energy_std": s,
                    "forces_std": np.full(len(atoms), s),
                    "max_force_std": s,
                }
            )
        return out

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        self.saved += 1


class CountingTrainer:
    def __init__(self):
        self.rounds = []

    def train(self, labels):
        self.rounds.append(len(labels))


def _bi4():
    return Atoms("Bi4", positions=[[0, 0, 0], [3.0, 0, 0], [1.5, 2.6, 0], [1.5, 0.87, 2.45]])


def _loop(tmp_path, std, *, selection=None, n_generators=2, **settings):
    committee, trainer = ScriptedCommittee(std), CountingTrainer()
    generators = [
        MDGenerator(
            _bi4(),
            generator_id=i,
            settings=MDSettings(temperature_K=300, timestep_fs=1.0, patience=1000, seed=i),
        )
        for i in range(n_generators)
    ]
    base = {
        "max_labels": 1000,
        "time_limit_s": 60.0,
        "retrain_size": 4,
        "metrics_interval_s": 1.0,
        "diversity_A": 0.0,
    }
    loop = ActiveLearning(
        committee=committee,
        oracle=Wrapped(_lj()),
        generators=generators,
        store=tmp_path / "labels.h5",
        trainer=trainer,
        selection=selection or TrustWindow(lower=0.1, upper=1.0),
        settings=WorkflowSettings(**{**base, **settings}),
        run_dir=tmp_path,
    )
    return loop, committee, trainer


def test_convergence_stops_the_run(tmp_path):
    # Uncertain for the first 20 predictions, then confident: the window empties.
    loop, _, trainer = _loop(
        tmp_path, lambda k: 0.5 if k < 20 else 0.01, convergence_window=30,
        convergence_fraction=0.05,
    )  # fmt: skip
    summary = loop.run()
    assert summary.stop_reason.startswith("converged"), summary.stop_reason
    assert summary.labels_ok >= 4 and trainer.rounds
    # The window (30) must be full and clean; re-scoring after training also calls the
    # committee, so fewer than 20 of the predictions were uncertain.
    assert 30 <= summary.predictions <= 20 + 30 + 30
    with LabelStore(tmp_path / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] == summary.labels_ok


def test_convergence_in_ml_md_mode_stops_labelling_and_generators_go_on(tmp_path):
    loop, _, trainer = _loop(
        tmp_path, lambda k: 0.5 if k < 20 else 0.01, convergence_window=30,
        convergence_fraction=0.05, on_convergence="ml_md", max_steps=300,
    )  # fmt: skip
    summary = loop.run()
    assert summary.stop_reason == "reached max_steps=300"
    assert not loop.labelling
    labels_at_convergence = summary.labels_ok
    assert labels_at_convergence <= 20
    assert summary.predictions >= 300  # plain ML-MD went on after convergence
    rounds = len(trainer.rounds)
    assert rounds >= 1
    # Nothing uncertain after convergence is labelled, even if the committee doubts again.
    with LabelStore(tmp_path / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] == labels_at_convergence


def test_stop_file_ends_the_run_gracefully(tmp_path):
    (tmp_path / "STOP").touch()
    loop, _, _ = _loop(tmp_path, lambda k: 0.5)
    summary = loop.run()
    assert summary.stop_reason.startswith("stop file")
    assert (tmp_path / "generators.json").is_file()


def test_a_relative_criterion_selects_inside_a_run(tmp_path):
    # Absolute spread 0.05 eV/Å is trusted by the window, but relative to the small LJ
    # forces of a near-equilibrium cluster it is large: WorstOf sends it to the oracle.
    loop, _, _ = _loop(
        tmp_path, lambda k: 0.05,
        selection=WorstOf(TrustWindow(lower=0.1, upper=1.0),
                          RelativeForceWindow(lower=0.05, upper=100.0, floor_eV_A=0.05)),
        max_labels=3,
    )  # fmt: skip
    summary = loop.run()
    assert summary.stop_reason == "reached max_labels=3"
    loop2, _, _ = _loop(tmp_path / "abs", lambda k: 0.05, max_steps=60)
    assert loop2.run().labels_ok == 0  # the absolute window alone trusts all of it


@pytest.mark.parametrize("bad", [{"convergence_fraction": 1.5}, {"on_convergence": "pause"}])
def test_bad_settings(bad):
    from pal_atoms.core.errors import ConfigError

    with pytest.raises(ConfigError):
        WorkflowSettings(**bad)


class FakeStream:
    """A continuous trainer stand-in: counts steps, never publishes."""

    class settings:  # noqa: N801  (attribute namespace like StreamSettings)
        eval_every_steps = 5
        validation_every = 8

    def __init__(self, plateau=False):
        self.step, self.labels, self.plateau = 0, [], plateau

    @property
    def n_train(self):
        return len(self.labels)

    validation_labels = ()

    def add(self, labels):
        self.labels += list(labels)

    def detach(self):
        pass

    def train_steps(self, n):
        self.step += n
        return []

    def state(self):
        return {"step": self.step, "n_train": self.n_train, "n_val": 0, "plateau": self.plateau}


def _stream_loop(tmp_path, trainer, std, **settings):
    loop, _, _ = _loop(tmp_path, std, **settings)
    loop.trainer, loop.stream, loop.continuous = trainer, trainer, True
    return loop


def test_continuous_labels_are_paced_by_training_steps(tmp_path):
    trainer = FakeStream()
    loop = _stream_loop(
        tmp_path, trainer, lambda k: 0.5, steps_per_label=10.0, label_burst=2,
        max_labels=6, training_share=0.5,
    )  # fmt: skip
    summary = loop.run()
    assert summary.stop_criterion == "max_labels"
    assert summary.training_rounds == 0  # no rounds in continuous mode
    # Every label was allowed by the budget: burst + steps / steps_per_label.
    assert loop.dispatched <= 2 + summary.training_steps / 10.0
    assert trainer.n_train == summary.labels_ok  # each label joined the stream at once


def test_continuous_convergence_waits_for_a_training_plateau(tmp_path):
    trainer = FakeStream(plateau=False)
    trainer.labels = ["a label from an earlier run"]
    loop = _stream_loop(
        tmp_path, trainer, lambda k: 0.01, convergence_window=20, max_steps=400,
    )  # fmt: skip
    assert loop.run().stop_criterion == "max_steps"  # confident, but training not done
    trainer = FakeStream(plateau=True)
    trainer.labels = ["a label from an earlier run"]  # something to train on
    (tmp_path / "b").mkdir()
    loop = _stream_loop(tmp_path / "b", trainer, lambda k: 0.01, convergence_window=20)
    summary = loop.run()
    assert summary.stop_criterion == "converged"
    assert "validation error stopped improving" in summary.stop_reason


def test_prediction_cap_holds_generators_back(tmp_path):
    loop, _, _ = _loop(
        tmp_path, lambda k: 0.01, max_predictions_per_s=50.0, time_limit_s=1.0,
        convergence_window=100000,
    )  # fmt: skip
    summary = loop.run()
    # Side by side with no cap in the same test: the cap binds (counts, not times).
    assert summary.predictions <= 50.0 * summary.wall_time_s + 5
    loop2, _, _ = _loop(
        tmp_path / "free", lambda k: 0.01, time_limit_s=1.0, convergence_window=100000
    )
    assert loop2.run().predictions > summary.predictions


def test_the_summary_puts_the_jobs_report_at_the_top_level():
    from pal_atoms.workflow.summary import Summary

    out = Summary(labels_ok=3, report={"final_check": {"stable": True}}).as_dict()
    assert out["final_check"] == {"stable": True} and out["labels_ok"] == 3
    assert "report" not in out
