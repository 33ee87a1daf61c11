"""The training rank's loop, driven message by message (no mpiexec: a scripted controller).

The real ranks are exercised in test_controller_mpi.py; here the order of rounds is pinned
down exactly: when they start, what they train on, and the last round when the run stops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from pal_atoms.workflow.mpi import training
from pal_atoms.workflow.mpi.codec import encode_labels
from pal_atoms.workflow.mpi.comm import Message, Tag

CTRL = 0


def labels(n: int, start: int) -> np.ndarray:
    """``n`` labelled Bi2 frames, encoded as the controller sends them; energy = index."""
    frames = []
    for i in range(start, start + n):
        a = Atoms("Bi2", positions=[[0, 0, 0], [0, 0, 2.5 + 0.01 * i]])
        a.calc = SinglePointCalculator(a, energy=float(i), forces=np.zeros((2, 3)))
        frames.append(a)
    return encode_labels(frames)


class ScriptedController:
    """What the controller sends, in order; records what the training rank sends back.

    A ``None`` in the script means "nothing more has arrived yet": a non-blocking drain
    stops there, a blocking receive waits past it.
    """

    def __init__(self, script: list[Message | None]):
        self.script = script
        self.sent: list[tuple[Tag, Any]] = []

    def recv(self, comm: Any, source: int | None = None, tag: int | None = None, **_: Any):
        head = self.script[0] if self.script else None
        if tag is not None and (head is None or head.tag != tag):
            return None  # a non-blocking drain of TRAIN_DATA finds nothing (else) yet
        while self.script and self.script[0] is None:
            self.script.pop(0)
        if not self.script:
            raise AssertionError("the training rank waited for a message after the script")
        return self.script.pop(0)

    def send(self, obj: Any, dest: int, tag: Tag) -> None:
        assert dest == CTRL
        self.sent.append((Tag(tag), obj))

    def send_array(self, comm: Any, array: np.ndarray, dest: int, tag: Tag) -> None:
        self.send(array, dest, tag)


class RecordingTrainer:
    def __init__(self) -> None:
        self.rounds: list[list[float]] = []

    def train(self, labels: list[Atoms], members: list[int], more_labels: Any = None) -> None:
        self.rounds.append([a.get_potential_energy() for a in labels])


class Weights:
    def get_weights(self) -> list[dict[str, Any]]:
        return [{"w": np.zeros(1)}, {"w": np.ones(1)}]


def run_rank(monkeypatch: pytest.MonkeyPatch, script: list[Message | None]) -> tuple[Any, Any]:
    ctrl = ScriptedController(script)
    monkeypatch.setattr(training, "recv", ctrl.recv)
    monkeypatch.setattr(training, "send_array", ctrl.send_array)
    monkeypatch.setattr(training, "serialize_weights", lambda w, m: np.zeros(3, np.uint8))
    trainer = RecordingTrainer()
    training.training_rank(ctrl, CTRL, Weights(), trainer, members=[0, 1], retrain_size=3)
    return trainer, ctrl


@pytest.mark.parametrize(
    ("criterion", "last_round"),
    [
        ("max_labels", True),
        ("generators_finished", True),
        ("time_limit", False),
        ("signal", False),
        ("stop_file", False),
        ("error", False),
    ],
)
def test_rounds_every_retrain_size_labels_and_a_last_round_unless_urgent(
    monkeypatch, criterion, last_round
):
    script = [
        Message(CTRL, Tag.TRAIN_DATA, labels(2, 0)),
        Message(CTRL, Tag.TRAIN_DATA, labels(1, 2)),  # 3 new: round 1
        None,
        Message(CTRL, Tag.TRAIN_DATA, labels(1, 3)),
        Message(CTRL, Tag.TRAIN_DATA, labels(1, 4)),  # 2 new: below retrain_size
        Message(CTRL, Tag.STOP, {"reason": "the run stops", "criterion": criterion}),
    ]
    trainer, ctrl = run_rank(monkeypatch, script)
    expected = [[0.0, 1.0, 2.0]] + ([[0.0, 1.0, 2.0, 3.0, 4.0]] if last_round else [])
    assert trainer.rounds == expected
    tags = [tag for tag, _ in ctrl.sent]
    assert tags == [Tag.WEIGHTS, Tag.LOG] * len(expected) + [Tag.DONE]
    assert ctrl.sent[-1][1] == {"role": "training", "rounds": len(expected)}
    logs = [obj for tag, obj in ctrl.sent if tag is Tag.LOG]
    assert [(e["round"], e["labels"]) for e in logs] == [
        (i + 1, len(r)) for i, r in enumerate(expected)
    ]


def test_no_last_round_without_new_labels(monkeypatch):
    script = [
        Message(CTRL, Tag.TRAIN_DATA, labels(3, 0)),
        Message(CTRL, Tag.STOP, {"reason": "reached max_labels=3", "criterion": "max_labels"}),
    ]
    trainer, ctrl = run_rank(monkeypatch, script)
    assert len(trainer.rounds) == 1
    assert ctrl.sent[-1] == (Tag.DONE, {"role": "training", "rounds": 1})
