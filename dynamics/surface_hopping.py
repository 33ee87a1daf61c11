"""Trajectory surface hopping on a committee of electronic states (Landau-Zener).

Each :class:`SurfaceHoppingGenerator` runs ``n_trajectories`` trajectories one after
another, each from its own draw of the harmonic Wigner distribution of the ground-state
minimum (:mod:`~pal_atoms.dynamics.wigner`), on ``initial_state``. Nuclei move by velocity
Verlet on the active state's forces; every geometry goes through the prediction client
like an MD step (so the controller judges the uncertainty of every state: the committee's
``max_force_std`` is the maximum over states) and hops are decided from the gaps alone
(:mod:`~pal_atoms.dynamics.hopping`). An untrusted step, an exhausted patience or an
unphysical geometry aborts the trajectory and starts a fresh one; only trajectories that
ran to their end count in :func:`populations`.

Every step's active state and every hop (frustrated ones included) are kept in
:meth:`SurfaceHoppingGenerator.state`, so a job can write populations and hop tables
from the saved generator states.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import units

from pal_atoms.core.protocols import PredictionClient, Verdict

from .base import (
    Action,
    Generator,
    GeneratorEvent,
    PatiencePolicy,
    atoms_from_dict,
    atoms_to_dict,
    check_geometry,
)
from .forwarding import ForwardingCalculator, UnphysicalStateError, worst_verdict
from .hopping import GapTracker, Rescaling, rescale_velocities
from .wigner import NormalModes, wigner_sample

__all__ = ["SurfaceHoppingGenerator", "SurfaceHoppingSettings", "populations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SurfaceHoppingSettings:
    """Settings of one surface-hopping generator.

    Args:
        initial_state: State every trajectory starts on (0 is the ground state).
        timestep_fs: Velocity-Verlet time step, fs.
        duration_fs: Length of one trajectory, fs.
        n_trajectories: Trajectories this generator runs to their end, one after another.
        temperature_K: Vibrational temperature of the Wigner distribution, K (0: zero-point
            motion only).
        rescaling: Direction of the velocity rescaling after a hop.
        patience: Consecutive uncertain steps tolerated before the trajectory is aborted.
        max_restarts: The generator finishes after this many aborted trajectories
            (``None``: never).
        min_distance_A: Atoms closer than this are an unphysical state, Å.
        max_distance_A: Fragment criterion, Å (see
            :func:`~pal_atoms.dynamics.base.check_geometry`).
        seed: Seed of the Wigner draws and the hopping decisions.
    """

    initial_state: int = 1
    timestep_fs: float = 0.5
    duration_fs: float = 50.0
    n_trajectories: int = 1
    temperature_K: float = 0.0
    rescaling: Rescaling = Rescaling.GRADIENT_DIFFERENCE
    patience: int = 5
    max_restarts: int | None = None
    min_distance_A: float | None = 0.5
    max_distance_A: float | None = 6.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rescaling", Rescaling(self.rescaling))
        if self.initial_state < 0:
            raise ValueError(f"initial_state must be >= 0, got {self.initial_state}")
        for name in ("timestep_fs", "duration_fs"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.duration_fs < 3 * self.timestep_fs:
            raise ValueError("duration_fs must span at least 3 time steps")
        if self.n_trajectories < 1:
            raise ValueError(f"n_trajectories must be >= 1, got {self.n_trajectories}")
        if not (math.isfinite(self.temperature_K) and self.temperature_K >= 0):
            raise ValueError(f"temperature_K must be >= 0, got {self.temperature_K}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 or None, got {self.max_restarts}")

    @property
    def steps_per_trajectory(self) -> int:
        """Time steps of one trajectory."""
        return round(self.duration_fs / self.timestep_fs)


class SurfaceHoppingGenerator(Generator):
    """Landau-Zener surface hopping on the prediction client's states (module docstring).

    Args:
        modes: Normal modes of the ground-state minimum (initial conditions).
        settings: Settings.
        generator_id: Id of this generator.

    Raises:
        ValueError: bad settings.
    """

    def __init__(
        self,
        modes: NormalModes,
        *,
        settings: SurfaceHoppingSettings | None = None,
        generator_id: int = 0,
    ) -> None:
        super().__init__(generator_id=generator_id)
        self.modes = modes
        self.settings = settings or SurfaceHoppingSettings()
        self.policy = PatiencePolicy(patience=self.settings.patience)
        self.rng = np.random.default_rng([self.settings.seed, self.generator_id])
        self.masses = modes.atoms.get_masses()
        self.tracker = GapTracker(self.settings.timestep_fs)
        #: One dict per trajectory: ``status`` (running, complete, aborted), ``states``
        #: (active state after each step, the start first), ``gaps_eV`` (gap between the
        #: active state and the nearest other state after each step), ``reason`` (why
        #: aborted).
        self.trajectories: list[dict[str, Any]] = []
        #: One dict per hop attempt: trajectory, time_fs, from, to, probability, gap_eV,
        #: frustrated.
        self.hops: list[dict[str, Any]] = []
        self._calc: ForwardingCalculator | None = None
        self._results: dict[str, Any] | None = None
        self._new_trajectory()

    # ---------------------------------------------------------------- trajectories
    def _new_trajectory(self) -> None:
        self.atoms = wigner_sample(self.modes, self.rng, temperature_K=self.settings.temperature_K)
        self.active = self.settings.initial_state
        self.step_in_trajectory = 0
        self.tracker.clear()
        self.policy.n_uncertain = 0
        self._results = None
        self.trajectories.append(
            {"status": "running", "states": [self.active], "gaps_eV": [], "reason": ""}
        )

    @property
    def n_complete(self) -> int:
        """Trajectories that ran to their end."""
        return sum(t["status"] == "complete" for t in self.trajectories)

    def _connect(self, client: PredictionClient) -> ForwardingCalculator:
        s = self.settings
        if self._calc is None or self._calc.client is not client:
            old = self._calc
            self._calc = ForwardingCalculator(
                client,
                generator_id=self.generator_id,
                guard=lambda a: check_geometry(
                    a, min_distance_A=s.min_distance_A, max_distance_A=s.max_distance_A
                ),
            )
            if old is not None:
                self._calc.step = old.step
        return self._calc

    def _predict(self, calc: ForwardingCalculator) -> tuple[dict[str, Any], Verdict]:
        work = self.atoms.copy()
        work.calc = calc
        work.get_potential_energy()
        results = dict(calc.results)
        if "state_energies" not in results or "state_forces" not in results:
            raise ValueError(
                "surface hopping needs predictions of several states (a committee created "
                "with n_states > 1)"
            )
        n_states = len(results["state_energies"])
        if self.settings.initial_state >= n_states:
            raise ValueError(
                f"initial_state {self.settings.initial_state} out of range: the committee "
                f"predicts {n_states} states"
            )
        assert calc.last_verdict is not None
        return results, calc.last_verdict

    # ---------------------------------------------------------------- running
    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """Propagate, one event per time step (see :meth:`Generator.irun`)."""
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            yield self._one_step(self._connect(client))
            taken += 1

    def _one_step(self, calc: ForwardingCalculator) -> GeneratorEvent:
        s = self.settings
        self.step += 1
        calls = calc.step
        verdicts: list[Verdict] = []
        dt = s.timestep_fs * units.fs
        try:
            if self._results is None:  # the start of a trajectory
                self._results, first = self._predict(calc)
                verdicts.append(first)
                self.tracker.push(self._results["state_energies"], self.active)
                self._record_gap(self._results)
            v = self.atoms.get_velocities()
            accel = self._results["state_forces"][self.active] / self.masses[:, None]
            v = v + 0.5 * dt * accel
            self.atoms.positions = self.atoms.positions + dt * v
            results, verdict = self._predict(calc)
            verdicts.append(verdict)
            accel = results["state_forces"][self.active] / self.masses[:, None]
            self.atoms.set_velocities(v + 0.5 * dt * accel)
            self._results = results
        except UnphysicalStateError as exc:
            return self._abort(f"unphysical state: {exc}", worst_verdict(verdicts), calc, calls)
        self._maybe_hop(results)
        self.step_in_trajectory += 1
        self.trajectories[-1]["states"].append(self.active)
        self._record_gap(results)
        worst = worst_verdict(verdicts)
        assert worst is not None
        reason = self.policy.judge(worst)
        if reason:
            return self._abort(reason, worst, calc, calls)
        if self.step_in_trajectory >= s.steps_per_trajectory:
            self.trajectories[-1]["status"] = "complete"
            if self.n_complete >= s.n_trajectories:
                return self._event(worst, Action.FINISHED, "all trajectories done", calc, calls)
            self._new_trajectory()
            return self._event(worst, Action.RESTART, "trajectory complete", calc, calls)
        return self._event(worst, Action.CONTINUE, "", calc, calls)

    def _record_gap(self, results: dict[str, Any]) -> None:
        energies = np.asarray(results["state_energies"], dtype=float)
        others = np.delete(np.abs(energies - energies[self.active]), self.active)
        self.trajectories[-1]["gaps_eV"].append(round(float(others.min()), 5))

    def _maybe_hop(self, results: dict[str, Any]) -> None:
        energies = np.asarray(results["state_energies"], dtype=float)
        candidates = self.tracker.push(energies, self.active)
        if not candidates:
            return
        u = float(self.rng.random())
        total = 0.0
        for cand in candidates:
            total += cand.probability
            if u < min(total, 1.0):
                break
        else:
            return
        forces = np.asarray(results["state_forces"], dtype=float)
        delta_e = float(energies[cand.target] - energies[self.active])
        direction = (
            forces[cand.target] - forces[self.active]
            if self.settings.rescaling is Rescaling.GRADIENT_DIFFERENCE
            else None
        )
        new_v = rescale_velocities(self.atoms.get_velocities(), self.masses, delta_e, direction)
        hop = {
            "trajectory": len(self.trajectories) - 1,
            "time_fs": (self.step_in_trajectory + 1) * self.settings.timestep_fs,
            "from": self.active,
            "to": cand.target,
            "probability": cand.probability,
            "gap_eV": cand.gap_eV,
            "frustrated": new_v is None,
        }
        self.hops.append(hop)
        if new_v is None:
            logger.debug("generator %d: frustrated hop %s", self.generator_id, hop)
            return
        logger.info(
            "generator %d: hop %d -> %d at %.2f fs (P = %.3f, gap %.3f eV)",
            self.generator_id,
            self.active,
            cand.target,
            hop["time_fs"],
            cand.probability,
            cand.gap_eV,
        )
        self.atoms.set_velocities(new_v)
        self.active = cand.target
        self.tracker.clear()

    def _abort(
        self, reason: str, verdict: Verdict | None, calc: ForwardingCalculator, calls: int
    ) -> GeneratorEvent:
        s = self.settings
        self.n_restarts += 1
        self.trajectories[-1].update(status="aborted", reason=reason)
        logger.info(
            "generator %d: trajectory %d aborted at %.2f fs: %s",
            self.generator_id,
            len(self.trajectories) - 1,
            self.step_in_trajectory * s.timestep_fs,
            reason,
        )
        if s.max_restarts is not None and self.n_restarts > s.max_restarts:
            return self._event(
                verdict,
                Action.FINISHED,
                f"{reason}; restart budget ({s.max_restarts}) used up",
                calc,
                calls,
            )
        self._new_trajectory()
        return self._event(verdict, Action.RESTART, reason, calc, calls)

    def _event(
        self,
        verdict: Verdict | None,
        action: Action,
        reason: str,
        calc: ForwardingCalculator,
        calls: int,
    ) -> GeneratorEvent:
        if action is Action.FINISHED:
            self.done = True
        energy = None
        if self._results is not None:
            energy = float(self._results["state_energies"][self.active])
        return GeneratorEvent(
            generator_id=self.generator_id,
            step=self.step,
            verdict=verdict,
            action=action,
            reason=reason,
            n_evaluations=calc.step - calls,
            energy=energy,
        )

    def total_energy(self) -> float | None:
        """Kinetic plus active-state potential energy of the current point, eV."""
        if self._results is None:
            return None
        kinetic = float(self.atoms.get_kinetic_energy())
        return kinetic + float(self._results["state_energies"][self.active])

    # ---------------------------------------------------------------- resume
    def state(self) -> dict[str, Any]:
        """Resumable state (JSON-serialisable): trajectories, hops, current point, RNG."""
        settings = asdict(self.settings)
        settings["rescaling"] = str(self.settings.rescaling)
        return {
            **self._base_state(),
            "settings": settings,
            "modes": self.modes.as_dict(),
            "current": atoms_to_dict(self.atoms),
            "active": self.active,
            "step_in_trajectory": self.step_in_trajectory,
            "trajectories": self.trajectories,
            "hops": self.hops,
            "n_uncertain": self.policy.n_uncertain,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`; the trajectory in progress starts afresh."""
        self._restore_base(state)
        self.settings = SurfaceHoppingSettings(**state["settings"])
        self.modes = NormalModes.from_dict(state["modes"])
        self.masses = self.modes.atoms.get_masses()
        self.tracker = GapTracker(self.settings.timestep_fs)
        self.policy = PatiencePolicy(patience=self.settings.patience)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.hops = list(state["hops"])
        self.trajectories = [t for t in state["trajectories"] if t["status"] != "running"]
        self.atoms = atoms_from_dict(state["current"])
        if not self.done:
            # The gap history and the prediction at the current point are not kept: a
            # trajectory cut by the crash would resume with a gap in its hop detection.
            self._new_trajectory()


def populations(
    trajectories: Sequence[dict[str, Any]], n_states: int, *, complete_only: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Average state populations over trajectories at every time step.

    Args:
        trajectories: Trajectory dicts of :attr:`SurfaceHoppingGenerator.trajectories`
            (of any number of generators).
        n_states: Number of states.
        complete_only: Average over complete trajectories only (aborted ones end early
            and would bias later times towards the trajectories that survive).

    Returns:
        ``(counts, populations)``: trajectories reaching each step, ``(n_steps + 1,)``,
        and the fraction of them on each state, ``(n_steps + 1, n_states)``.
    """
    chosen = [t for t in trajectories if t["status"] == "complete" or not complete_only]
    length = max((len(t["states"]) for t in chosen), default=0)
    counts = np.zeros(length, dtype=int)
    occupied = np.zeros((length, n_states))
    for t in chosen:
        states = np.asarray(t["states"], dtype=int)
        counts[: len(states)] += 1
        occupied[np.arange(len(states)), states] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(counts[:, None] > 0, occupied / np.maximum(counts, 1)[:, None], 0.0)
    return counts, fractions
