"""Uncertainty-aware molecular dynamics generator (Langevin, velocity Verlet, Bussi, Nosé-Hoover).

The integrators are ASE's own, unmodified, running on a
:class:`~pal_atoms.dynamics.forwarding.ForwardingCalculator`. After each step the
generator reads the verdict and applies PAL's patience policy; unphysical states (atoms
too close, fragments flying apart, energy blow-up) restart the trajectory as well. Every
restart is logged with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary, ZeroRotation

try:  # ASE >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution as thermalize_momenta,  # noqa: N813
    )

from pal_atoms.core.checks import validate_structure
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
from .bias import BiasCalculator, UmbrellaBias
from .forwarding import ForwardingCalculator, UnphysicalStateError
from .frames import FrameWriter
from .md_settings import INTEGRATORS, MDSettings
from .mpi_safety import local_comm

__all__ = ["INTEGRATORS", "MDGenerator", "MDSettings"]

logger = logging.getLogger(__name__)


@dataclass
class _Frame:
    atoms: Atoms  # with momenta
    results: dict[str, Any] | None = None  # prediction at this geometry, if known


class MDGenerator(Generator):
    """MD generator with PAL's patience policy and unphysical-state restarts.

    Args:
        atoms: Starting structure (copied; ``atoms.info`` such as ``charge`` is kept and
            sent along with every geometry). Existing momenta are ignored; velocities are
            drawn from a Maxwell-Boltzmann distribution at ``temperature_K``.
        settings: MD settings.
        generator_id: Id of this generator.
        trajectory: Optional frame file (``.traj``, ``.h5``/``.hdf5``, ``.xyz``) written
            every ``settings.traj_interval`` steps by this rank alone.
        bias: Optional restraint on a reaction coordinate (umbrella or steered MD, see
            :mod:`~pal_atoms.dynamics.bias`). Only the integrator sees it: verdicts,
            energies and frames are those of the unbiased committee.

    Raises:
        StructureError: The starting structure is unusable (atoms closer than
            ``min_distance_A``, NaN).
        ValueError: The starting structure is already split into fragments.
    """

    def __init__(
        self,
        atoms: Atoms,
        *,
        settings: MDSettings | None = None,
        generator_id: int = 0,
        trajectory: str | Path | None = None,
        bias: UmbrellaBias | None = None,
    ) -> None:
        super().__init__(generator_id=generator_id)
        self.settings = settings if settings is not None else MDSettings()
        s = self.settings
        self.bias = bias
        if bias is not None:
            bias.cv.check(atoms)
        validate_structure(atoms, min_distance_A=s.min_distance_A, what="MD starting structure")
        try:
            check_geometry(atoms, min_distance_A=None, max_distance_A=s.max_distance_A)
        except UnphysicalStateError as exc:
            raise ValueError(f"MD starting structure: {exc}") from None
        self.trajectory = None if trajectory is None else Path(trajectory)
        self.rng = np.random.default_rng(s.seed)
        self.atoms = atoms.copy()
        self.atoms.calc = None
        self._draw_velocities(s.temperature_K)
        self._initial = _Frame(self.atoms.copy())
        self._last_trusted = _Frame(self.atoms.copy())
        self.policy = PatiencePolicy(patience=s.patience)
        self._prev_energy: float | None = None
        self._calc: ForwardingCalculator | None = None
        self._dyn: Any = None  # an ASE MolecularDynamics
        self._writer: FrameWriter | None = None
        self._append_frames = False  # True after restore(): keep the frames written so far

    # ---------------------------------------------------------------- setup
    def _draw_velocities(self, temperature_K: float) -> None:
        thermalize_momenta(self.atoms, temperature_K=temperature_K, rng=self.rng, comm=local_comm())
        Stationary(self.atoms)
        if not self.atoms.pbc.any() and len(self.atoms) > 2:
            ZeroRotation(self.atoms)
        if self.settings.integrator == "bussi" and self.atoms.get_kinetic_energy() <= 1e-12:
            # Bussi refuses a zero kinetic energy (e.g. a single atom); give it a nudge.
            self.atoms.set_momenta(self.rng.normal(0.0, 1e-3, (len(self.atoms), 3)))

    def _build_dynamics(self) -> MolecularDynamics:
        s, dt = self.settings, self.settings.timestep_fs * units.fs
        temp = s.target_temperature_K(self.step)
        common: dict[str, Any] = {"logfile": None, "trajectory": None, "comm": local_comm()}
        if s.integrator == "langevin":
            from ase.md.langevin import Langevin

            return Langevin(
                self.atoms,
                dt,
                temperature_K=temp,
                friction=s.friction_per_fs / units.fs,
                fixcm=False,
                rng=self.rng,
                **common,
            )
        if s.integrator == "verlet":
            from ase.md.verlet import VelocityVerlet

            return VelocityVerlet(self.atoms, dt, **common)
        if s.integrator == "bussi":
            from ase.md.bussi import Bussi

            return Bussi(
                self.atoms,
                dt,
                temperature_K=temp,
                taut=s.thermostat_time_fs * units.fs,
                rng=self.rng,
                **common,
            )
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(
            self.atoms, dt, temperature_K=temp, tdamp=s.thermostat_time_fs * units.fs, **common
        )

    def _set_temperature(self, temperature_K: float) -> None:
        dyn = self._dyn
        kT = units.kB * temperature_K
        if self.settings.integrator == "langevin":
            dyn.set_temperature(temperature_K=temperature_K)
        elif self.settings.integrator == "bussi":
            dyn.temp = kT
            dyn.target_kinetic_energy = 0.5 * kT * dyn.ndof
        elif self.settings.integrator == "nose_hoover":
            # ASE keeps the chain masses fixed; only the target kT follows the ramp.
            dyn._thermostat._kT = kT

    def _connect(self, client: PredictionClient) -> ForwardingCalculator:
        s = self.settings
        if self._calc is None or self._calc.client is not client:
            calc = ForwardingCalculator(client, generator_id=self.generator_id)
            calc.guard = lambda a: check_geometry(
                a, min_distance_A=s.min_distance_A, max_distance_A=s.max_distance_A
            )
            if self._calc is not None:
                calc.step = self._calc.step
            self._calc = calc
            self._attach(calc)
        if self._dyn is None:
            self._dyn = self._build_dynamics()
        if self.trajectory is not None and self._writer is None:
            self._writer = FrameWriter(self.trajectory, append=self._append_frames)
        return self._calc

    def _attach(self, calc: ForwardingCalculator) -> None:
        """Put ``calc`` (wrapped in the bias, if any) on the atoms the integrator moves."""
        self.atoms.calc = calc if self.bias is None else BiasCalculator(calc, self.bias)

    @property
    def cv(self) -> float | None:
        """Value of the biased reaction coordinate now, in Å (``None`` without a bias)."""
        return None if self.bias is None else self.bias.cv(self.atoms)

    # ---------------------------------------------------------------- running
    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """Propagate, one event per MD step (see :meth:`Generator.irun`)."""
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            calc = self._connect(client)
            event = self._one_step(calc)
            taken += 1
            yield event

    def _one_step(self, calc: ForwardingCalculator) -> GeneratorEvent:
        s, dyn = self.settings, self._dyn
        assert dyn is not None
        self.step += 1
        self._set_temperature(s.target_temperature_K(self.step))
        if isinstance(self.atoms.calc, BiasCalculator):
            self.atoms.calc.step = self.step  # a steered centre moves with the step
        calls = calc.step
        problem = ""
        try:
            if self.step == 1 and self._initial.results is None:  # keep the start's results
                self.atoms.get_forces()
                self._initial.results = dict(calc.results)
                self._last_trusted.results = dict(calc.results)
                self._prev_energy = float(calc.results["energy"])
            dyn.step()
            dyn.nsteps += 1
            energy = float(calc.results["energy"])
            problem = self._blow_up(energy, calc.results["forces"])
        except UnphysicalStateError as exc:
            problem = str(exc)
        verdict = calc.last_verdict if calc.step > calls else None
        n_eval = calc.step - calls
        energy_out = float(calc.results["energy"]) if calc.results else None
        if problem:
            return self._restart(f"unphysical state: {problem}", verdict, n_eval)
        self._prev_energy = energy
        assert verdict is not None
        reason = self.policy.judge(verdict)
        if verdict is Verdict.TRUSTED:
            self._last_trusted = _Frame(self.atoms.copy(), dict(calc.results))
        if self._writer is not None and self.step % s.traj_interval == 0:
            self._writer.write(
                self.atoms,
                step=self.step,
                energy=energy,
                forces=calc.results["forces"],
                verdict=verdict,
            )
        if reason:
            return self._restart(reason, verdict, n_eval, energy_out)
        return self._event(verdict, Action.CONTINUE, "", n_eval, energy_out)

    def _blow_up(self, energy: float, forces: np.ndarray) -> str:
        s = self.settings
        if not np.isfinite(energy) or not np.all(np.isfinite(self.atoms.get_momenta())):
            return "non-finite energy or momenta"
        if s.max_force_eV_A is not None:
            fmax = float(np.abs(forces).max())
            if fmax > s.max_force_eV_A:
                return f"force component of {fmax:.3g} eV/Å (> {s.max_force_eV_A} eV/Å)"
        if s.max_energy_jump_eV is not None and self._prev_energy is not None:
            jump = abs(energy - self._prev_energy)
            if jump > s.max_energy_jump_eV:
                return f"energy jumped by {jump:.3g} eV in one step (> {s.max_energy_jump_eV} eV)"
        return ""

    def _restart(
        self, reason: str, verdict: Verdict | None, n_eval: int, energy: float | None = None
    ) -> GeneratorEvent:
        s = self.settings
        self.n_restarts += 1
        self.policy.n_uncertain = 0
        frame = self._last_trusted if s.restart == "last_trusted" else self._initial
        logger.info(
            "generator %d: restart %d at step %d from the %s frame: %s",
            self.generator_id,
            self.n_restarts,
            self.step,
            s.restart.replace("_", " "),
            reason,
        )
        self.atoms.positions = frame.atoms.positions
        self.atoms.set_momenta(frame.atoms.get_momenta())
        if s.restart == "initial" or s.restart_velocities == "fresh":
            self._draw_velocities(s.target_temperature_K(self.step))
        if frame.results is not None and self._calc is not None:
            self._calc.prime(self.atoms, frame.results)
            self._prev_energy = float(frame.results["energy"])
        else:
            self._prev_energy = None
        self._dyn = self._build_dynamics()  # fresh thermostat state (Nosé-Hoover keeps p, q)
        if s.max_restarts is not None and self.n_restarts > s.max_restarts:
            return self._event(
                verdict,
                Action.FINISHED,
                f"{reason}; restart budget ({s.max_restarts}) used up",
                n_eval,
                energy,
            )
        return self._event(verdict, Action.RESTART, reason, n_eval, energy)

    def _event(
        self,
        verdict: Verdict | None,
        action: Action,
        reason: str,
        n_eval: int,
        energy: float | None,
    ) -> GeneratorEvent:
        if (
            action is not Action.FINISHED
            and self.settings.n_steps is not None
            and self.step >= self.settings.n_steps
        ):
            action, reason = Action.FINISHED, (reason + "; " if reason else "") + "n_steps reached"
        if action is Action.FINISHED:
            self.done = True
            self.close()
        return GeneratorEvent(
            generator_id=self.generator_id,
            step=self.step,
            verdict=verdict,
            action=action,
            reason=reason,
            n_evaluations=n_eval,
            energy=energy,
        )

    def close(self) -> None:
        """Close the trajectory file; if the generator runs again, it appends to it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._append_frames = True

    @property
    def dynamics(self) -> Any:
        """The ASE integrator in use (``None`` before the first step); rebuilt on restart."""
        return self._dyn

    @property
    def last_trusted(self) -> Atoms:
        """Copy of the last trusted frame (with momenta)."""
        return self._last_trusted.atoms.copy()

    # ---------------------------------------------------------------- resume
    def state(self) -> dict[str, Any]:
        """Resumable state: frames, counters, random generator (JSON-serialisable).

        The thermostat's internal variables (Nosé-Hoover chain) are not kept; they
        restart from zero after :meth:`restore`.
        """
        return {
            **self._base_state(),
            "settings": asdict(self.settings),
            "current": atoms_to_dict(self.atoms),
            "initial": atoms_to_dict(self._initial.atoms),
            "last_trusted": atoms_to_dict(self._last_trusted.atoms),
            "n_uncertain": self.policy.n_uncertain,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state` (settings are taken from the state)."""
        self._restore_base(state)
        self.settings = MDSettings(**state["settings"])
        self.policy = PatiencePolicy(
            patience=self.settings.patience, n_uncertain=int(state["n_uncertain"])
        )
        current = atoms_from_dict(state["current"])
        self.atoms = current
        self._initial = _Frame(atoms_from_dict(state["initial"]))
        self._last_trusted = _Frame(atoms_from_dict(state["last_trusted"]))
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self._prev_energy = None
        self.close()
        self._append_frames = True
        old = self._calc
        self._calc, self._dyn = None, None
        if old is not None:  # keep the round-trip counter, reconnect on the next irun
            self._calc = ForwardingCalculator(
                old.client, generator_id=self.generator_id, guard=old.guard
            )
            self._calc.step = old.step
            self._attach(self._calc)
