"""Particle swarm and samplers: on a function directly, on a committee, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from pal_atoms.core.errors import InputError
from pal_atoms.core.protocols import Verdict
from pal_atoms.core.samples import Schema
from pal_atoms.generic import LatinHypercube, ParticleSwarm, RandomSampler

BRANIN_MIN = 0.397887
BOX = [(-5.0, 10.0), (0.0, 15.0)]


def branin(x) -> float:
    x1, x2 = float(x[0]), float(x[1])
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


def rosenbrock(x) -> float:
    return float(sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


class ExactClient:
    """A committee that is the function itself, sure everywhere except where told."""

    def __init__(self, untrusted=lambda x: False):
        self.untrusted = untrusted
        self.calls = 0

    def evaluate(self, sample, *, generator_id=0, step=0):
        self.calls += 1
        x = sample["x"]
        verdict = Verdict.UNTRUSTED if self.untrusted(x) else Verdict.TRUSTED
        return {
            "mean": {"y": np.array(branin(x))},
            "std": {"y": np.array(0.0)},
            "uncertainty": 0.0,
        }, verdict


def bound(gen):
    gen.bind(Schema({"x": (2,)}, {"y": ()}))
    return gen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_swarm_finds_the_branin_minimum_on_the_function(seed):
    pso = bound(ParticleSwarm(BOX, particles=16, objective="y", seed=seed))
    x, f, calls = pso.optimise(lambda s: branin(s["x"]), iterations=60)
    assert f == pytest.approx(BRANIN_MIN, abs=5e-3) and calls == 960
    assert branin(x) == pytest.approx(f)


def test_the_swarm_finds_the_rosenbrock_valley_in_four_dimensions():
    pso = ParticleSwarm([(-2.0, 2.0)] * 4, particles=32, objective="y", seed=0)
    pso.bind(Schema({"x": (4,)}, {"y": ()}))
    x, f, _ = pso.optimise(lambda s: rosenbrock(s["x"]), iterations=300)
    assert f < 0.1 and np.allclose(x, 1.0, atol=0.3)


def test_maximising_flips_the_sign():
    pso = bound(ParticleSwarm(BOX, particles=16, objective="y", minimise=False, seed=0))
    _, f, _ = pso.optimise(lambda s: -branin(s["x"]), iterations=60)
    assert f == pytest.approx(-BRANIN_MIN, abs=5e-3)


def test_on_the_committee_it_converges_and_restarts_untrusted_particles():
    pso = bound(ParticleSwarm(BOX, particles=16, objective="y", iterations=40, seed=0))
    client = ExactClient(untrusted=lambda x: x[0] > 9.0)
    events = list(pso.irun(client))
    assert events[-1].action.value == "finished" and pso.iteration == 40
    restarts = [e for e in events if e.action.value == "restart"]
    assert restarts and pso.n_resets == len(restarts)
    x, f = pso.best
    assert f == pytest.approx(BRANIN_MIN, abs=0.02) and x[0] <= 9.0


def test_a_restored_swarm_continues_exactly():
    a = bound(ParticleSwarm(BOX, particles=8, objective="y", seed=3))
    list(a.irun(ExactClient(), max_steps=13))
    state = a.state()
    list(a.irun(ExactClient(), max_steps=20))
    b = bound(ParticleSwarm(BOX, particles=8, objective="y", seed=99))
    b.restore(state)
    list(b.irun(ExactClient(), max_steps=20))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.best_f, b.best_f)
    assert a.step == b.step == 33


def test_latin_hypercube_fills_every_stratum_once():
    lhs = bound(LatinHypercube(BOX, n_samples=10, seed=0))
    cells = ((lhs.points - lhs.low) / (lhs.high - lhs.low) * 10).astype(int)
    for axis in range(2):
        assert sorted(cells[:, axis]) == list(range(10))
    events = list(lhs.irun(ExactClient()))
    assert len(events) == 11 and events[-1].action.value == "finished"


def test_a_sampler_resumes_where_it_stopped():
    a = bound(RandomSampler(BOX, n_samples=6, seed=1))
    list(a.irun(ExactClient(), max_steps=3))
    b = bound(RandomSampler(BOX, n_samples=6, seed=2))
    b.restore(a.state())
    client = ExactClient()
    list(b.irun(client))
    assert client.calls == 3 and b.done
    np.testing.assert_array_equal(b.points, a.points)


@pytest.mark.parametrize(
    ("make", "schema", "text"),
    [
        (lambda: ParticleSwarm(BOX, objective="y"), Schema({"x": (3,)}, {"y": ()}), "dimensions"),
        (lambda: ParticleSwarm(BOX, objective="z"), Schema({"x": (2,)}, {"y": ()}), "scalar"),
        (lambda: ParticleSwarm(BOX, objective="y"), Schema({"x": (2,)}, {"y": (3,)}), "scalar"),
        (
            lambda: RandomSampler(BOX, n_samples=2),
            Schema({"x": (2,), "u": (1,)}, {"y": ()}),
            "input_name=",
        ),
    ],
)
def test_a_generator_that_does_not_fit_the_schema_says_why(make, schema, text):
    with pytest.raises(InputError, match=text):
        make().bind(schema)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"bounds": [(1.0, 0.0)]}, "low < high"),
        ({"bounds": [1.0, 2.0]}, "pairs"),
        ({"particles": 1}, "particles"),
        ({"kappa": -1.0}, "kappa"),
    ],
)
def test_bad_swarm_settings_say_why(kwargs, text):
    args = {"bounds": BOX, "objective": "y", **kwargs}
    with pytest.raises(InputError, match=text):
        ParticleSwarm(args.pop("bounds"), **args)
