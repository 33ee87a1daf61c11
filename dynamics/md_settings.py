"""Settings of the MD generator (integrator, temperature ramp, patience, restart policy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["INTEGRATORS", "MDSettings"]

#: Integrator names accepted by :class:`MDSettings`.
INTEGRATORS = ("langevin", "verlet", "bussi", "nose_hoover")


@dataclass(frozen=True, kw_only=True)
class MDSettings:
    """Settings of an MD generator.

    Args:
        integrator: ``"langevin"``, ``"verlet"`` (NVE), ``"bussi"`` (stochastic velocity
            rescaling) or ``"nose_hoover"`` (Nosé-Hoover chain NVT).
        temperature_K: Target temperature in K (start of the ramp); also used to draw
            velocities.
        end_temperature_K: End of a linear temperature ramp in K (``None``: no ramp).
        ramp_steps: Steps over which the ramp goes from start to end (then stays).
        timestep_fs: Time step in fs.
        friction_per_fs: Langevin friction in 1/fs.
        thermostat_time_fs: Bussi ``taut`` / Nosé-Hoover ``tdamp`` in fs.
        patience: Consecutive uncertain steps tolerated before a restart.
        restart: Where to restart: ``"last_trusted"`` frame or the ``"initial"``
            structure (always with fresh velocities).
        restart_velocities: For ``"last_trusted"``: ``"keep"`` the frame's momenta or draw
            ``"fresh"`` ones (useful for deterministic integrators).
        max_restarts: The generator finishes after this many restarts (``None``: never).
        n_steps: The generator finishes after this many steps (``None``: never).
        min_distance_A: Atoms closer than this (Å) are an unphysical state.
        max_distance_A: Fragment criterion in Å (see
            :func:`~pal_atoms.dynamics.base.check_geometry`); ``None`` disables it.
        max_energy_jump_eV: Largest allowed change of the potential energy in one step,
            in eV (``None``: off, the default). Retraining the committee between two
            steps (new E0s) also shifts the energy, so use it with a fixed model or a
            generous value.
        max_force_eV_A: Largest allowed force component in eV/Å (``None``: off); a
            blow-up sign that does not depend on the model version.
        traj_interval: Write every ``traj_interval``-th step to the trajectory file (when
            the generator has one).
        seed: Seed of the velocities and of the thermostat noise.
    """

    integrator: str = "langevin"
    temperature_K: float = 300.0
    end_temperature_K: float | None = None
    ramp_steps: int = 0
    timestep_fs: float = 1.0
    friction_per_fs: float = 0.01
    thermostat_time_fs: float = 100.0
    patience: int = 5
    restart: str = "last_trusted"
    restart_velocities: str = "keep"
    max_restarts: int | None = None
    n_steps: int | None = None
    min_distance_A: float | None = 0.5
    max_distance_A: float | None = 6.0
    max_energy_jump_eV: float | None = None
    max_force_eV_A: float | None = 50.0
    traj_interval: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_ranges()

    def _check_choices(self) -> None:
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {self.integrator!r}")
        if self.restart not in ("last_trusted", "initial"):
            raise ValueError(f"restart must be 'last_trusted' or 'initial', got {self.restart!r}")
        if self.restart_velocities not in ("keep", "fresh"):
            raise ValueError(
                f"restart_velocities must be 'keep' or 'fresh', got {self.restart_velocities!r}"
            )
        if self.integrator == "bussi" and self.temperature_K <= 0:
            raise ValueError("the Bussi thermostat needs temperature_K > 0")

    def _check_ranges(self) -> None:
        for name in ("temperature_K", "end_temperature_K"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite temperature >= 0 K, got {value}")
        for name in ("timestep_fs", "friction_per_fs", "thermostat_time_fs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("patience", "ramp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.traj_interval < 1:
            raise ValueError(f"traj_interval must be >= 1, got {self.traj_interval}")
        for name in ("max_restarts", "n_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")
        for name in ("min_distance_A", "max_distance_A", "max_energy_jump_eV", "max_force_eV_A"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if (
            self.min_distance_A is not None
            and self.max_distance_A is not None
            and self.max_distance_A <= self.min_distance_A
        ):
            raise ValueError("max_distance_A must be larger than min_distance_A")

    def target_temperature_K(self, step: int) -> float:
        """Target temperature in K at ``step`` (linear ramp, then constant)."""
        if self.end_temperature_K is None:
            return self.temperature_K
        if self.ramp_steps == 0:
            return self.end_temperature_K
        f = min(max(step, 0) / self.ramp_steps, 1.0)
        return self.temperature_K + f * (self.end_temperature_K - self.temperature_K)
