"""Generators of generic samples: a particle swarm on the committee, and plain samplers.

:class:`ParticleSwarm` is PAL's generator of the thermo-fluid application: particles move
in a box (``bounds``) on the committee's prediction of ``objective`` with an
uncertainty-aware score, the lower confidence bound ``mean - kappa * std`` when
minimising (upper, ``mean + kappa * std``, when maximising), so the swarm explores where
the committee is unsure and exploits where it is sure. Every position is one prediction
through the workflow's client, judged like an MD step; a particle whose prediction is
untrusted or failed restarts at a random position. The update is the standard one
(inertia ``w``, cognitive ``c1``, social ``c2``, velocities clipped to a fraction of the
box). :meth:`ParticleSwarm.optimise` runs the same swarm on a plain function (the oracle
directly), for comparison.

:class:`RandomSampler` and :class:`LatinHypercube` propose ``n_samples`` points of the box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pal_atoms.core.errors import InputError
from pal_atoms.core.protocols import PredictionClient, Verdict
from pal_atoms.core.samples import Sample, Schema
from pal_atoms.dynamics.base import Action, Generator, GeneratorEvent

__all__ = ["LatinHypercube", "ParticleSwarm", "RandomSampler"]


class _BoxGenerator(Generator):
    """A generator of points in a box for one vector input of the schema."""

    def __init__(
        self,
        bounds: Sequence[tuple[float, float]],
        *,
        input_name: str | None = None,
        seed: int = 0,
        generator_id: int = 0,
    ):
        super().__init__(generator_id=generator_id)
        box = np.array(bounds, dtype=float)
        if box.ndim != 2 or box.shape[1] != 2 or not len(box):
            raise InputError(f"bounds must be a list of (low, high) pairs, got {bounds!r}")
        if not (np.all(np.isfinite(box)) and np.all(box[:, 1] > box[:, 0])):
            raise InputError(f"every bound needs finite low < high, got {bounds!r}")
        self.low, self.high = box[:, 0], box[:, 1]
        self.input = input_name
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int:
        """Dimension of the box."""
        return len(self.low)

    def bind(self, schema: Schema) -> None:
        """Pick the schema's input this generator fills (the run calls this).

        Raises:
            InputError: no input of the box's size, or ``input`` names none.
        """
        if self.input is None:
            fits = [k for k, s in schema.inputs.items() if math.prod(s) == self.dim]
            if len(schema.inputs) != 1 or not fits:
                raise InputError(
                    f"{type(self).__name__}: say which input it fills (input_name=...); the "
                    f"schema has {dict(schema.inputs)} and the box has {self.dim} dimensions"
                )
            self.input = fits[0]
        shape = schema.inputs.get(self.input)
        if shape is None or math.prod(shape) != self.dim:
            raise InputError(
                f"{type(self).__name__}: input {self.input!r} of shape {shape} does not fit "
                f"a box of {self.dim} dimensions"
            )
        self._shape = shape

    def sample(self, point: np.ndarray) -> Sample:
        """The sample at ``point`` (a vector of the box)."""
        name = self.input or "x"
        shape = getattr(self, "_shape", (self.dim,))
        return Sample({name: np.asarray(point, float).reshape(shape)})

    def _random(self, n: int) -> np.ndarray:
        return self.low + self.rng.random((n, self.dim)) * (self.high - self.low)

    def _finish(self, reason: str) -> GeneratorEvent:
        """Mark the generator done; the ``FINISHED`` event that says so."""
        self.done = True
        return GeneratorEvent(
            generator_id=self.generator_id,
            step=self.step,
            verdict=None,
            action=Action.FINISHED,
            reason=reason,
        )

    def _state(self) -> dict[str, Any]:
        return {**self._base_state(), "rng": self.rng.bit_generator.state}

    def _restore(self, state: dict[str, Any]) -> None:
        self._restore_base(state)
        self.rng.bit_generator.state = state["rng"]


class ParticleSwarm(_BoxGenerator):
    """Particle-swarm optimiser on the committee (see the module docstring).

    Args:
        bounds: ``[(low, high), ...]`` per dimension of the input.
        particles: Swarm size.
        objective: Output to optimise (a scalar output of the schema).
        minimise: Minimise (else maximise) the objective.
        kappa: Weight of the committee's spread in the score (0: the mean alone).
        limits: Bounds on other outputs, ``{name: (low, high)}`` (``None``: open); a
            prediction outside them is penalised by ``penalty`` times the excess.
        penalty: Penalty per unit of excess over a limit (in objective units).
        inertia: Inertia weight ``w``.
        cognitive: Pull to the particle's best ``c1``.
        social: Pull to the swarm's best ``c2``.
        max_velocity: Largest step per iteration, as a fraction of the box.
        iterations: Swarm iterations before the generator finishes (``None``: never).
        input_name: Input the positions fill (default: the schema's only input).
        seed: Random seed.
        generator_id: Id of the generator.
    """

    def __init__(
        self,
        bounds: Sequence[tuple[float, float]],
        *,
        particles: int = 16,
        objective: str,
        minimise: bool = True,
        kappa: float = 1.0,
        limits: Mapping[str, tuple[float | None, float | None]] | None = None,
        penalty: float = 10.0,
        inertia: float = 0.7,
        cognitive: float = 1.5,
        social: float = 1.5,
        max_velocity: float = 0.2,
        iterations: int | None = None,
        input_name: str | None = None,
        seed: int = 0,
        generator_id: int = 0,
    ):
        super().__init__(bounds, input_name=input_name, seed=seed, generator_id=generator_id)
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 2:
            raise InputError(f"particles must be an integer >= 2, got {particles!r}")
        for name, value in (
            ("kappa", kappa),
            ("inertia", inertia),
            ("cognitive", cognitive),
            ("social", social),
            ("max_velocity", max_velocity),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be finite and >= 0, got {value!r}")
        if iterations is not None and iterations < 1:
            raise InputError(f"iterations must be >= 1 or None, got {iterations!r}")
        self.n_particles = particles
        self.objective = objective
        self.sign = 1.0 if minimise else -1.0
        self.kappa, self.w, self.c1, self.c2 = kappa, inertia, cognitive, social
        self.limits = {k: (lo, hi) for k, (lo, hi) in (limits or {}).items()}
        self.penalty = float(penalty)
        self.v_max = max_velocity * (self.high - self.low)
        self.iterations = iterations
        self.x = self._random(particles)
        self.v = (self.rng.random((particles, self.dim)) - 0.5) * self.v_max
        self.best_x = self.x.copy()
        self.best_f = np.full(particles, np.inf)  # scores: lower is better
        self.iteration = 0
        self.cursor = 0  # next particle to evaluate in this iteration
        self.n_resets = 0

    def bind(self, schema: Schema) -> None:
        """Also check that ``objective`` is a scalar output of ``schema``."""
        super().bind(schema)
        for name in (self.objective, *self.limits):
            if schema.outputs.get(name) != ():
                raise InputError(
                    f"ParticleSwarm: {name!r} must be a scalar output; the schema has "
                    f"{dict(schema.outputs)}"
                )

    @property
    def best(self) -> tuple[np.ndarray, float]:
        """The swarm's best position and its score (in the objective's sign)."""
        i = int(np.argmin(self.best_f))
        return self.best_x[i].copy(), float(self.sign * self.best_f[i])

    def score(self, mean: Mapping[str, Any], std: Mapping[str, Any] | None = None) -> float:
        """Confidence-bound score of one prediction (lower is better).

        Args:
            mean: Output values (the committee mean, or an oracle's labels).
            std: Their spread (``None``: exact values, no exploration bonus).
        """
        spread = 0.0 if std is None else float(std[self.objective])
        value = self.sign * float(mean[self.objective]) - self.kappa * spread
        for name, (lo, hi) in self.limits.items():
            v = float(mean[name])
            excess = max(0.0, v - hi) if hi is not None else 0.0
            excess += max(0.0, lo - v) if lo is not None else 0.0
            value += self.penalty * excess
        return value

    def _advance(self) -> None:
        """Velocity and position update of every particle (after a full iteration)."""
        g = self.best_x[int(np.argmin(self.best_f))]
        r1, r2 = self.rng.random((2, self.n_particles, self.dim))
        self.v = (
            self.w * self.v + self.c1 * r1 * (self.best_x - self.x) + self.c2 * r2 * (g - self.x)
        )
        self.v = np.clip(self.v, -self.v_max, self.v_max)
        self.x = np.clip(self.x + self.v, self.low, self.high)
        self.iteration += 1
        self.cursor = 0

    def _tell(self, i: int, score: float) -> None:
        if score < self.best_f[i]:
            self.best_f[i] = score
            self.best_x[i] = self.x[i]

    def _reset(self, i: int) -> None:
        self.x[i] = self._random(1)[0]
        self.v[i] = (self.rng.random(self.dim) - 0.5) * self.v_max
        self.n_resets += 1

    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """One event per particle evaluated on the committee."""
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            if self.iterations is not None and self.iteration >= self.iterations:
                yield self._finish(f"{self.iterations} iterations")
                return
            i = self.cursor
            self.step += 1
            taken += 1
            results, verdict = client.evaluate(
                self.sample(self.x[i]), generator_id=self.generator_id, step=self.step
            )
            action, reason = Action.CONTINUE, ""
            if verdict in (Verdict.UNTRUSTED, Verdict.FAILED):
                self._reset(i)
                action, reason = Action.RESTART, f"{verdict} prediction"
            else:
                self._tell(i, self.score(results["mean"], results["std"]))
            self.cursor += 1
            if self.cursor == self.n_particles:
                self._advance()
            yield GeneratorEvent(
                generator_id=self.generator_id,
                step=self.step,
                verdict=verdict,
                action=action,
                reason=reason,
                n_evaluations=1,
            )

    def optimise(
        self,
        fn: Callable[[Sample], Any],
        iterations: int,
        *,
        on_call: Callable[[Sample, Any], None] | None = None,
    ) -> tuple[np.ndarray, float, int]:
        """Run the same swarm on a plain function (e.g. the oracle directly).

        Args:
            fn: ``fn(sample)`` -> the objective value, or a mapping of outputs (the
                objective and the limited ones); an exception or a non-finite value
                restarts the particle.
            iterations: Swarm iterations.
            on_call: Called with every sample and its result (e.g. to log the calls).

        Returns:
            ``(best position, best score in the objective's sign, number of calls)``;
            the score includes any penalty of the limits.
        """
        calls = 0
        for _ in range(iterations):
            for i in range(self.n_particles):
                sample = self.sample(self.x[i])
                calls += 1
                try:
                    out = fn(sample)
                    values = out if isinstance(out, Mapping) else {self.objective: out}
                    score = self.score(values)
                except Exception:  # a failed call (a diverged solver): restart the particle
                    out, score = None, math.nan
                if on_call is not None:
                    on_call(sample, out)
                if math.isfinite(score):
                    self._tell(i, score)
                else:
                    self._reset(i)
            self._advance()
        x, f = self.best
        return x, f, calls

    def state(self) -> dict[str, Any]:
        """Positions, velocities, bests, counters and the random state (JSON)."""
        return {
            **self._state(),
            "x": self.x.tolist(),
            "v": self.v.tolist(),
            "best_x": self.best_x.tolist(),
            "best_f": [f if math.isfinite(f) else None for f in self.best_f],
            "iteration": self.iteration,
            "cursor": self.cursor,
            "n_resets": self.n_resets,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`."""
        self._restore(state)
        self.x = np.array(state["x"], float)
        self.v = np.array(state["v"], float)
        self.best_x = np.array(state["best_x"], float)
        self.best_f = np.array([np.inf if f is None else f for f in state["best_f"]], float)
        self.iteration = int(state["iteration"])
        self.cursor = int(state["cursor"])
        self.n_resets = int(state["n_resets"])


class RandomSampler(_BoxGenerator):
    """``n_samples`` uniform random points of the box, one prediction each.

    Args:
        bounds: ``[(low, high), ...]``.
        n_samples: Points to propose before finishing.
        input_name: Input the points fill (default: the schema's only input).
        seed: Random seed.
        generator_id: Id of the generator.
    """

    def __init__(
        self,
        bounds: Sequence[tuple[float, float]],
        *,
        n_samples: int,
        input_name: str | None = None,
        seed: int = 0,
        generator_id: int = 0,
    ):
        super().__init__(bounds, input_name=input_name, seed=seed, generator_id=generator_id)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise InputError(f"n_samples must be a positive integer, got {n_samples!r}")
        self.n_samples = n_samples
        self.points = self._points()

    def _points(self) -> np.ndarray:
        return self._random(self.n_samples)

    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """One event per point."""
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            if self.step >= self.n_samples:
                yield self._finish(f"{self.n_samples} samples")
                return
            point = self.points[self.step]
            self.step += 1
            taken += 1
            _, verdict = client.evaluate(
                self.sample(point), generator_id=self.generator_id, step=self.step
            )
            yield GeneratorEvent(
                generator_id=self.generator_id,
                step=self.step,
                verdict=verdict,
                action=Action.CONTINUE,
                n_evaluations=1,
            )

    def state(self) -> dict[str, Any]:
        """Counters, the points and the random state (JSON)."""
        return {**self._state(), "points": self.points.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`."""
        self._restore(state)
        self.points = np.array(state["points"], float)


class LatinHypercube(RandomSampler):
    """``n_samples`` points of a Latin hypercube of the box (one per stratum per axis)."""

    def _points(self) -> np.ndarray:
        n = self.n_samples
        strata = np.stack([self.rng.permutation(n) for _ in range(self.dim)], axis=1)
        u = (strata + self.rng.random((n, self.dim))) / n
        return self.low + u * (self.high - self.low)
