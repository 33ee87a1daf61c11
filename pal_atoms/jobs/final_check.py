"""The check a run makes of its final committee before it exits.

Per starting system: a short NVE trajectory on the committee (energy drift per atom,
smallest interatomic distance, whether anything blew up) and the held-out force MAE on
that system's test frames. A potential that passes is one the user can run MD with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

if TYPE_CHECKING:
    from pal_atoms.jobs.md_config import JobConfig

__all__ = ["SystemCheck", "final_check", "final_check_report", "system_key"]

logger = logging.getLogger(__name__)

#: Largest energy drift (eV/atom/ps) and smallest distance ratio (to the starting
#: frame's closest pair) of a trajectory called stable.
MAX_DRIFT_EV_ATOM_PS = 5e-3
MIN_DISTANCE_RATIO = 0.6


def system_key(atoms: Atoms) -> str:
    """Formula and total charge, e.g. ``Bi4(-2)``: how results are grouped per system."""
    charge = int(atoms.info.get("charge", 0))
    return f"{atoms.get_chemical_formula(mode='hill')}({charge:+d})".replace("(+0)", "(0)")


@dataclass(frozen=True, kw_only=True)
class SystemCheck:
    """Result for one starting system.

    Attributes:
        system: :func:`system_key` of the system.
        test_force_mae: Held-out force MAE on its test frames, eV/Å (``None``: no frames).
        test_frames: Number of those frames.
        nve_steps: NVE steps run (fewer than asked if it blew up).
        energy_drift_eV_atom_ps: Slope of the total energy per atom, eV/atom/ps.
        energy_range_eV_atom: Largest minus smallest total energy per atom, eV.
        min_distance_A: Smallest interatomic distance seen, Å.
        stable: Finite throughout, drift and distances within the limits.
    """

    system: str
    test_force_mae: float | None
    test_frames: int
    nve_steps: int
    energy_drift_eV_atom_ps: float
    energy_range_eV_atom: float
    min_distance_A: float
    stable: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy."""
        return asdict(self)


def _min_distance(atoms: Atoms) -> float:
    if len(atoms) < 2:
        return float("inf")
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    return float(d[np.triu_indices(len(atoms), 1)].min())


def _nve(
    committee: Any, frame: Atoms, *, temperature_K: float, timestep_fs: float, steps: int, seed: int
) -> tuple[int, float, float, float, bool]:
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = frame.copy()
    atoms.info = dict(frame.info)
    atoms.calc = committee
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed)
    )
    # The committee's mean forces are the gradient of its mean energy: NVE must conserve it.
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies, d_min, finite = [], _min_distance(atoms), True
    d_start = d_min
    n = 0
    for n in range(1, steps + 1):
        try:
            dyn.run(1)
            e_total = float(atoms.get_total_energy())
        except Exception as exc:  # the committee refused the geometry: not stable
            logger.warning(
                "final NVE check of %s stopped at step %d: %s", system_key(frame), n, exc
            )
            finite = False
            break
        if not (np.isfinite(e_total) and np.all(np.isfinite(atoms.positions))):
            finite = False
            break
        energies.append(e_total / len(atoms))
        d_min = min(d_min, _min_distance(atoms))
        if d_min < 0.3 * d_start:  # collapsed: no point in going on
            break
    e = np.asarray(energies)
    t_ps = np.arange(e.size) * timestep_fs * 1e-3
    drift = float(np.polyfit(t_ps, e, 1)[0]) if e.size > 2 else float("nan")
    span = float(e.max() - e.min()) if e.size else float("nan")
    stable = (
        finite
        and n == steps
        and np.isfinite(drift)
        and abs(drift) <= MAX_DRIFT_EV_ATOM_PS
        and d_min >= MIN_DISTANCE_RATIO * d_start
    )
    return n, drift, span, d_min, bool(stable)


def final_check(
    committee: Any,
    frames: Sequence[Atoms],
    test_set: Sequence[Atoms],
    *,
    temperature_K: float,
    timestep_fs: float,
    duration_ps: float = 1.0,
    seed: int = 0,
) -> list[SystemCheck]:
    """Check the committee per starting system (module docstring).

    Args:
        committee: ASE calculator with ``predict_batch`` (the final committee).
        frames: Starting structures (one NVE run each).
        test_set: Held-out labelled frames, grouped by :func:`system_key`.
        temperature_K: Initial Maxwell-Boltzmann temperature of the NVE runs, K.
        timestep_fs: Time step, fs.
        duration_ps: Length of each NVE run, ps.
        seed: Seed of the initial velocities.

    Returns:
        One :class:`SystemCheck` per starting frame.
    """
    steps = max(1, round(duration_ps * 1000.0 / timestep_fs))
    out = []
    for i, frame in enumerate(frames):
        key = system_key(frame)
        tests = [a for a in test_set if system_key(a) == key]
        mae = None
        if tests:
            preds = committee.predict_batch(tests)
            mae = float(
                np.mean(
                    np.concatenate(
                        [
                            np.abs(np.asarray(p["forces"]) - a.get_forces()).ravel()
                            for p, a in zip(preds, tests, strict=True)
                        ]
                    )
                )
            )
        n, drift, span, d_min, stable = _nve(
            committee,
            frame,
            temperature_K=temperature_K,
            timestep_fs=timestep_fs,
            steps=steps,
            seed=seed + i,
        )
        out.append(
            SystemCheck(
                system=key,
                test_force_mae=mae,
                test_frames=len(tests),
                nve_steps=n,
                energy_drift_eV_atom_ps=drift,
                energy_range_eV_atom=span,
                min_distance_A=d_min,
                stable=stable,
            )
        )
    return out


def final_check_report(
    config: JobConfig,
    committee: Any,
    frames: Sequence[Atoms],
    test_set: Sequence[Atoms],
    *,
    what: str = "final check",
) -> dict[str, Any]:
    """:func:`final_check` with a job's settings, logged per system, as ``summary.json`` holds it.

    Args:
        config: The job's settings: ``temperature_K``, ``timestep_fs``, ``final_check_ps``
            (the NVE length) and ``seed``.
        committee: As for :func:`final_check`.
        frames: As for :func:`final_check`.
        test_set: As for :func:`final_check` (empty: NVE only).
        what: How the log lines name the check (e.g. ``"final check (expensive level)"``).

    Returns:
        ``duration_ps``, ``stable`` (every system), ``max_system_test_force_mae`` (eV/Å,
        ``None`` without test frames) and ``systems`` (:meth:`SystemCheck.as_dict` each).
    """
    checks = final_check(
        committee,
        frames,
        test_set,
        temperature_K=config.temperature_K,
        timestep_fs=config.timestep_fs,
        duration_ps=config.final_check_ps,
        seed=config.seed,
    )
    for c in checks:
        logger.info(
            "%s %s: held-out force MAE %s eV/Å, NVE %d steps, drift %.2g eV/atom/ps, "
            "closest pair %.2f Å: %s",
            what,
            c.system,
            "n/a" if c.test_force_mae is None else f"{c.test_force_mae:.4f}",
            c.nve_steps,
            c.energy_drift_eV_atom_ps,
            c.min_distance_A,
            "stable" if c.stable else "UNSTABLE",
        )
    maes = [c.test_force_mae for c in checks if c.test_force_mae is not None]
    return {
        "duration_ps": config.final_check_ps,
        "stable": all(c.stable for c in checks),
        "max_system_test_force_mae": max(maes) if maes else None,
        "systems": [c.as_dict() for c in checks],
    }
