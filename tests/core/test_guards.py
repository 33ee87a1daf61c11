"""The guarded generator step and labelling call shared by both modes (unit level)."""

from __future__ import annotations

import numpy as np
from ase.build import molecule
from pal_atoms.dynamics import Action, GeneratorEvent

from pal_atoms.workflow.guards import GuardedGenerator, StepOutcome, label_guarded
from pal_atoms.workflow.prediction import predict_guarded


class Scripted:
    """A generator whose steps follow a script: 'ok', 'fault', 'bug' or 'finish'."""

    def __init__(self, script):
        self.generator_id, self.script, self.restored = 5, list(script), 0

    def state(self):
        return {"pos": 0}

    def restore(self, state):
        self.restored += 1

    def irun(self, client):
        while self.script:
            what = self.script.pop(0)
            if what == "fault":
                raise RuntimeError("exploded")
            if what == "bug":
                raise KeyError("bug")
            action = Action.FINISHED if what == "finish" else Action.CONTINUE
            yield GeneratorEvent(generator_id=5, step=0, verdict=None, action=action)


def test_a_fault_restarts_and_the_finishing_step_counts_once():
    gen = Scripted(["ok", "fault", "ok", "finish", "ok"])
    guard = GuardedGenerator(gen, client=None)
    outcomes = [guard.step() for _ in range(5)]
    assert outcomes == [
        StepOutcome.STEPPED,
        StepOutcome.RESTARTED,
        StepOutcome.STEPPED,
        StepOutcome.FINISHED,
        StepOutcome.FINISHED,
    ]
    # The step that ends the generator (MD's n_steps-th) was taken; nothing after it was.
    assert (guard.steps, guard.restarts, gen.restored, guard.finished) == (3, 1, 1, True)


def test_a_bug_propagates():
    guard = GuardedGenerator(Scripted(["ok", "bug"]), client=None)
    assert guard.step() is StepOutcome.STEPPED
    try:
        guard.step()
    except KeyError:
        pass
    else:
        raise AssertionError("a KeyError is a bug, not a restart")


def test_a_raising_labelling_function_gives_a_failed_label():
    def broken(atoms, oracle, **kwargs):
        raise TypeError("bad custom label function")

    lab = label_guarded(broken, molecule("H2O"), object(), timeout_s=None, isolate=False)
    assert not lab.ok and lab.status.value == "failed" and "TypeError" in lab.error


class HalfBroken:
    def predict_batch(self, frames):
        if any(len(a) == 2 for a in frames):
            raise RuntimeError("neighbour list overflow")
        return [{"energy": float(len(a)), "forces": np.zeros((len(a), 3))} for a in frames]


def test_one_failing_structure_does_not_fail_the_batch():
    frames = [molecule("H2O"), molecule("H2"), molecule("CH4")]
    out = predict_guarded(HalfBroken(), frames)
    assert out[1] is None and out[0]["energy"] == 3.0 and out[2]["energy"] == 5.0
