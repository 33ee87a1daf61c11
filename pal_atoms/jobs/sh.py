"""``pal-atoms sh``: active learning on surface-hopping photodynamics.

The same job as ``pal-atoms md`` (held-out test set, bootstrap labels, committee, store,
checkpoints, resume, MPI ranks), with a committee of ``states`` electronic states, the
excited-state oracle (PySCF TDA/TDDFT, every state's energy and forces) and Landau-Zener
surface-hopping trajectories (:mod:`pal_atoms.dynamics.surface_hopping`) as generators.

Initial conditions come from the harmonic Wigner distribution of the ground-state minimum
of the first frame: the frame is relaxed on the oracle's ground state (same functional and
basis, no excited states) and its normal modes are kept in ``normal_modes.json``. The test
set and the bootstrap labels are Wigner samples too, so the committee is measured where the
trajectories start. At the end the run writes ``populations.csv`` (time in fs, then the
population of each state averaged over the trajectories that ran to their end) and
``hops.csv``, and reports the held-out force error of every state.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.errors import ConfigError, InputError
from pal_atoms.jobs.md import run_md
from pal_atoms.jobs.md_config import JobConfig
from pal_atoms.jobs.setup import load_frames
from pal_atoms.workflow import Summary

__all__ = ["SHRunConfig", "normal_modes", "run_sh", "sh_generators", "write_tables"]

logger = logging.getLogger(__name__)

_MODES_FILE = "normal_modes.json"


@dataclass(frozen=True, kw_only=True)
class SHRunConfig(JobConfig):
    """``pal-atoms sh``: the job settings (:class:`JobConfig`) plus the surface hopping.

    ``temperature_K`` is the temperature of the final NVE check on the ground state.
    ``test_per_frame`` and ``bootstrap_per_frame`` count Wigner samples of the minimum
    (``test_equilibration_fs``, ``test_spacing_fs`` and ``test_trajectories``, of the
    oracle-MD test set, do not apply).

    Args:
        states: Electronic states, S0 included (the oracle labels and the committee
            predicts all of them).
        initial_state: State every trajectory starts on (default: the highest).
        generators: Surface-hopping generators (one MPI generator rank each).
        trajectories: Trajectories per generator, each run to its end one after another.
        duration_fs: Length of a trajectory, fs.
        wigner_temperature_K: Vibrational temperature of the Wigner distribution, K (0:
            zero-point motion only).
        rescaling: Velocity rescaling after a hop: ``"gradient_difference"`` or
            ``"velocity"``.
    """

    oracle: str = "pyscf-excited"
    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    max_labels: int = 200
    bootstrap_per_frame: int = 8
    test_per_frame: int = 8
    final_check_ps: float = 0.2
    states: int = 3
    initial_state: int | None = None
    generators: int = 4
    trajectories: int = 2
    duration_fs: float = 30.0
    wigner_temperature_K: float = 0.0
    rescaling: str = "gradient_difference"

    def n_generators(self, n_frames: int) -> int:
        """``generators`` surface-hopping generators, however many frames."""
        return self.generators

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.states < 2:
            raise ConfigError(f"states must be >= 2 (S0 and S1), got {self.states}")
        for name in ("generators", "trajectories"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.first_state < self.states:
            raise ConfigError(
                f"initial_state must lie in 0..{self.states - 1}, got {self.initial_state}"
            )
        try:
            self.hopping_settings(0)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def allowed_oracles(cls) -> tuple[str, ...]:
        """Oracles that label several states."""
        from pal_atoms.oracles.registry import EXCITED

        return EXCITED

    @property
    def n_states(self) -> int:
        """Electronic states of the committee: ``states``."""
        return self.states

    @property
    def first_state(self) -> int:
        """The state trajectories start on (``initial_state``, default the highest)."""
        return self.states - 1 if self.initial_state is None else self.initial_state

    def oracle_settings(self) -> dict[str, Any]:
        """The excited-state oracle's settings: method, basis and ``n_states``."""
        return {**super().oracle_settings(), "n_states": self.states}

    def hopping_settings(self, index: int) -> Any:
        """Settings of surface-hopping generator ``index``."""
        from pal_atoms.dynamics.hopping import Rescaling
        from pal_atoms.dynamics.surface_hopping import SurfaceHoppingSettings

        return SurfaceHoppingSettings(
            initial_state=self.first_state,
            timestep_fs=self.timestep_fs,
            duration_fs=self.duration_fs,
            n_trajectories=self.trajectories,
            temperature_K=self.wigner_temperature_K,
            rescaling=Rescaling(self.rescaling),
            patience=self.patience,
            seed=self.seed + index,
        )


def normal_modes(config: SHRunConfig, oracle: Any) -> Any:
    """Normal modes of the first frame's ground-state minimum (cached in the run folder).

    Raises:
        InputError: the ground state cannot be relaxed or has no vibrational mode.
    """
    from pal_atoms.dynamics.wigner import NormalModes, harmonic_modes

    path = config.out / _MODES_FILE
    if path.is_file():
        return NormalModes.from_dict(json.loads(path.read_text()))
    if oracle is None:
        raise InputError(f"{path} is missing: the run folder was not prepared by pal-atoms sh")
    from ase.optimize import BFGS

    frame = load_frames(config, None)[0]
    ground = oracle.ground_state()  # same functional, basis and grid
    work = frame.copy()
    work.calc = ground
    logger.info("relaxing frame 0 on the ground state (%s)", ground.method)
    try:
        converged = BFGS(work, logfile=None).run(fmax=0.01, steps=200)
        if not converged:
            raise InputError("the ground-state relaxation of frame 0 did not converge")
        minimum = frame.copy()
        minimum.positions = work.positions
        modes = harmonic_modes(minimum, ground)
    except ValueError as exc:
        raise InputError(f"frame 0: {exc}") from exc
    logger.info("normal modes: %s cm⁻¹", ", ".join(f"{w:.0f}" for w in modes.wavenumbers_cm1))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(modes.as_dict()))
    tmp.replace(path)
    return modes


def _wigner_frames(config: SHRunConfig, oracle: Any, n: int, seed: int) -> list[Atoms]:
    from pal_atoms.dynamics.wigner import wigner_sample

    modes = normal_modes(config, oracle)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = wigner_sample(modes, rng, temperature_K=config.wigner_temperature_K)
        atoms.set_velocities(np.zeros((len(atoms), 3)))
        frames.append(atoms)
    return frames


def sh_test_set(config: SHRunConfig, oracle: Any, frames: list[Atoms]) -> list[Atoms]:
    """``test_per_frame`` Wigner samples labelled by the oracle (failed ones left out)."""
    from pal_atoms.oracles import label

    samples = _wigner_frames(config, oracle, config.test_per_frame, config.seed + 1000)
    logger.info("labelling %d held-out Wigner samples", len(samples))
    labels = [label(a, oracle) for a in samples]
    return [lab.to_atoms() for lab in labels if lab.ok]


def sh_bootstrap(config: SHRunConfig, oracle: Any, frames: list[Atoms]) -> list[Atoms]:
    """``bootstrap_per_frame`` Wigner samples of the minimum."""
    return _wigner_frames(config, oracle, config.bootstrap_per_frame, config.seed)


def sh_generators(config: SHRunConfig, frames: list[Atoms]) -> list[Any]:
    """``generators`` surface-hopping generators from the Wigner distribution."""
    from pal_atoms.dynamics.surface_hopping import SurfaceHoppingGenerator

    modes = normal_modes(config, None)
    return [
        SurfaceHoppingGenerator(modes, settings=config.hopping_settings(i), generator_id=i)
        for i in range(config.generators)
    ]


def write_tables(config: SHRunConfig) -> dict[str, Any]:
    """``populations.csv`` and ``hops.csv`` from the saved generator states; a summary."""
    from pal_atoms.dynamics.surface_hopping import populations

    path = config.out / "generators.json"
    states = json.loads(path.read_text()) if path.is_file() else {}
    trajectories = [t for s in states.values() for t in s.get("trajectories", [])]
    counts, pops = populations(trajectories, config.states)
    with (config.out / "populations.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time_fs", *(f"S{s}" for s in range(config.states)), "trajectories"])
        for k in range(len(counts)):
            row = [f"{k * config.timestep_fs:.3f}", *(f"{p:.4f}" for p in pops[k])]
            writer.writerow([*row, int(counts[k])])
    hops = [
        {"generator": int(gid), **hop}
        for gid, s in sorted(states.items(), key=lambda kv: int(kv[0]))
        for hop in s.get("hops", [])
    ]
    fields = ["generator", "trajectory", "time_fs", "from", "to", "probability", "gap_eV"]
    with (config.out / "hops.csv").open("w", newline="") as fh:
        table = csv.DictWriter(fh, fieldnames=[*fields, "frustrated"])
        table.writeheader()
        table.writerows(hops)
    complete = sum(t["status"] == "complete" for t in trajectories)
    return {
        "trajectories_complete": complete,
        "trajectories_aborted": sum(t["status"] == "aborted" for t in trajectories),
        "hops": sum(not h["frustrated"] for h in hops),
        "frustrated_hops": sum(bool(h["frustrated"]) for h in hops),
        "final_populations": pops[-1].tolist() if len(pops) and complete else None,
    }


def state_force_mae(committee: Any, frames: list[Atoms]) -> list[float] | None:
    """Held-out force MAE of every state (eV/Å) on labelled frames with states."""
    with_states = [a for a in frames if "state_forces" in a.calc.results]
    if not with_states:
        return None
    pred = committee.predict_batch(with_states)
    err = [
        np.abs(p["state_forces"] - a.calc.results["state_forces"][: committee.n_states]).mean(
            axis=(1, 2)
        )
        for p, a in zip(pred, with_states, strict=True)
    ]
    return np.mean(err, axis=0).tolist()


def run_sh(config: SHRunConfig, comm: Any | None = None) -> Summary | None:
    """Run the job (see the module docstring); the summary adds the surface hopping.

    Args:
        config: The job.
        comm: MPI communicator under ``mpiexec``/``srun``; ``None`` runs in this process.

    Returns:
        The run's summary; ``None`` on MPI ranks other than 0.
    """

    def add_report(summary: Summary, oracle: Any) -> None:
        from pal_atoms.calculators import CommitteeCalculator
        from pal_atoms.store.exchange import read_labelled

        report = write_tables(config)
        committee = CommitteeCalculator.load(config.out / "committee", device=config.device)
        test_set = read_labelled(config.out / "test_set.extxyz")
        report["test_state_force_mae"] = state_force_mae(committee, test_set)
        summary.report["surface_hopping"] = report
        maes = report["test_state_force_mae"]
        logger.info(
            "surface hopping: %d complete trajectories, %d hops (%d frustrated); held-out "
            "force MAE per state %s eV/Å",
            report["trajectories_complete"],
            report["hops"],
            report["frustrated_hops"],
            "n/a" if maes is None else ", ".join(f"{m:.3f}" for m in maes),
        )

    return run_md(
        config,
        comm,
        make_generators=sh_generators,
        add_to_report=add_report,
        make_test_set=sh_test_set,
        make_bootstrap=sh_bootstrap,
    )
