"""Selection rules: trust window, relative criteria, recent quantile, combinations."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.selection import (
    RecentQuantile,
    RelativeForceWindow,
    TrustWindow,
    WorstOf,
    score,
)

BI4 = Atoms("Bi4", positions=np.eye(4, 3) * 3.0)
BI6 = Atoms("Bi6", positions=np.vstack([np.eye(3) * 3.0, -np.eye(3) * 3.0]))


def _results(std, forces=None):
    std = np.asarray(std, dtype=float)
    forces = np.zeros((len(std), 3)) if forces is None else np.asarray(forces, dtype=float)
    return {"forces_std": std, "max_force_std": float(std.max()), "forces": forces}


def test_trust_window_and_per_system_bounds():
    rule = TrustWindow(lower=0.1, upper=0.5, per_system={"Bi6": (0.2, 1.0)})
    assert rule(BI4, _results([0.05] * 4)) is Verdict.TRUSTED
    assert rule(BI4, _results([0.15] * 4)) is Verdict.UNCERTAIN
    assert rule(BI4, _results([0.6] * 4)) is Verdict.UNTRUSTED
    assert rule(BI6, _results([0.15] * 6)) is Verdict.TRUSTED  # its own, wider window
    assert rule(BI6, _results([0.6] * 6)) is Verdict.UNCERTAIN
    with pytest.raises(ValueError, match="lower <= upper"):
        TrustWindow(lower=0.5, upper=0.1)


def test_relative_window_forgives_spread_on_large_forces():
    rule = RelativeForceWindow(lower=0.2, upper=2.0, floor_eV_A=0.1)
    big = _results([0.3, 0.0], forces=[[3.0, 0, 0], [0, 0, 0]])
    small = _results([0.3, 0.0], forces=[[0.1, 0, 0], [0, 0, 0]])
    assert rule.value(big) == pytest.approx(0.3 / 3.1)
    assert rule(BI4, big) is Verdict.TRUSTED  # 10 % of a 3 eV/Å force
    assert rule.value(small) == pytest.approx(0.3 / 0.2)
    assert rule(BI4, small) is Verdict.UNCERTAIN
    assert rule(BI4, _results([0.5], forces=[[0.0, 0, 0]])) is Verdict.UNTRUSTED
    with pytest.raises(ValueError, match="floor_eV_A"):
        RelativeForceWindow(floor_eV_A=0)


def test_recent_quantile_labels_the_unusual_tail():
    rule = RecentQuantile(quantile=0.8, window=100, min_history=10, floor=0.01, upper=5.0)
    rng = np.random.default_rng(0)
    values = rng.uniform(0.02, 0.1, 200)
    verdicts = [rule(BI4, {"max_force_std": v}) for v in values]
    tail = [v is Verdict.UNCERTAIN for v in verdicts[100:]]
    assert 0.1 < np.mean(tail) < 0.3  # about 1 - quantile
    assert rule.lower == pytest.approx(np.quantile(values[-100:], 0.8))
    assert rule(BI4, {"max_force_std": 0.005}) is Verdict.TRUSTED  # below the floor
    assert rule(BI4, {"max_force_std": 6.0}) is Verdict.UNTRUSTED
    fresh = RecentQuantile(min_history=5, floor=0.01)
    assert fresh(BI4, {"max_force_std": 0.02}) is Verdict.UNCERTAIN  # no history yet
    with pytest.raises(ValueError, match="quantile"):
        RecentQuantile(quantile=1.0)


def test_worst_of_takes_the_most_severe_verdict_and_scores_by_the_first_rule():
    absolute = TrustWindow(lower=0.1, upper=1.0)
    relative = RelativeForceWindow(lower=0.2, upper=0.5, floor_eV_A=0.1)
    rule = WorstOf(absolute, relative)
    res = _results([0.05], forces=[[0.0, 0, 0]])  # absolute: trusted; relative 0.5: uncertain
    assert absolute(BI4, res) is Verdict.TRUSTED
    assert rule(BI4, res) is Verdict.UNCERTAIN
    assert score(rule, res) == pytest.approx(0.05)
    assert score(relative, res) == pytest.approx(0.5)
    assert rule.key == "max_force_std" and rule.lower == 0.1
    with pytest.raises(ValueError, match="at least one"):
        WorstOf()


def _bi3(stretch: float) -> Atoms:
    atoms = Atoms("Bi3", positions=[[0, 0, 0], [3.0 + stretch, 0, 0], [1.5, 2.6, 0]])
    atoms.info["charge"] = 0
    return atoms


@pytest.mark.parametrize(
    ("policy", "second"),
    [("uncertainty", "twin"), ("diverse", "distinct")],
)
def test_queue_policy_uncertainty_vs_diverse(policy, second):
    from pal_atoms.workflow.oracle_queue import OracleQueue

    queue = OracleQueue(cap=8, diversity_A=0.0, policy=policy, novelty_A=0.1)
    names = {}
    for name, stretch, u in (("first", 0.0, 1.0), ("twin", 0.01, 0.9), ("distinct", 0.6, 0.5)):
        queue.push(_bi3(stretch), u, generator_id=len(names))
        names[len(names)] = name
    assert names[queue.pop().generator_id] == "first"  # nothing labelled yet: most uncertain
    # The twin is 0.006 Å (RMS of sorted distances) from what was just labelled.
    assert queue.novelty(_bi3(0.01)) < 0.01 < queue.novelty(_bi3(0.6))
    assert names[queue.pop().generator_id] == second


def test_queue_policy_is_checked():
    from pal_atoms.core.errors import ConfigError
    from pal_atoms.workflow.oracle_queue import OracleQueue
    from pal_atoms.workflow.settings import WorkflowSettings

    with pytest.raises(ValueError, match="policy"):
        OracleQueue(policy="random")
    with pytest.raises(ConfigError, match="queue_policy"):
        WorkflowSettings(queue_policy="random")


def test_a_candidate_the_committee_fails_on_keeps_its_place_when_the_queue_is_rescored():
    from ase import Atoms

    from pal_atoms.workflow.oracle_queue import OracleQueue

    queue = OracleQueue(cap=10, diversity_A=0.0)
    for i, u in enumerate((0.3, 0.2, 0.1)):
        queue.push(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + 0.1 * i]]), u)
    # The committee fails on the first candidate (None) and trusts the last one now.
    removed = queue.rescore(lambda frames: [None, 0.25, 0.01], keep_below=0.05)
    assert removed == 1 and len(queue) == 2
    assert [round(c.uncertainty, 2) for c in (queue.pop(), queue.pop())] == [0.3, 0.25]
