"""The settings of the run jobs: one frozen dataclass each, validated on creation.

:class:`JobConfig` holds what every run job (``md``, ``ts``, ``sh``, ``reaction``) shares:
system, oracle, committee, loop limits, trust window, test set, bootstrap, MPI ranks.
:class:`MDRunConfig` adds the MD generators' own settings (steps, steering along an atom
transfer); the saddle-search and surface-hopping configs extend :class:`JobConfig` with
theirs, so no job carries (or shows in ``--help``) options it does not use.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pal_atoms.core.errors import ConfigError
from pal_atoms.oracles.registry import EXCITED
from pal_atoms.oracles.registry import ORACLES as ORACLE_REGISTRY
from pal_atoms.workflow.settings import WorkflowSettings

__all__ = ["MODELS", "ORACLES", "TRAINING", "JobConfig", "MDRunConfig"]

#: ``--oracle`` names: the oracle registry's, less the excited-state oracles, whose
#: per-state labels the md job does not use yet (it would compute and drop them).
ORACLES = tuple(name for name in ORACLE_REGISTRY if name not in EXCITED)
#: ``--model`` names: the built-in backends (their registry imports torch, so the names
#: are listed here; a test holds them equal).
MODELS = ("mace", "schnet")
TRAINING = ("continuous", "rounds")
#: Where the bootstrap labels come from (``JobConfig.bootstrap``).
BOOTSTRAPS = ("md", "rattle")


_Config = TypeVar("_Config", bound="JobConfig")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """What every run job needs; every field is a command-line option too.

    Args:
        system: Starting structures (extxyz etc.); one generator per frame.
        out: Run directory.
        charge: Total charge for every frame (default: ``atoms.info["charge"]`` or 0).
        oracle: Reference method family.
        method: Method (default: GFN2-xTB for xtb, PBE for pyscf/turbomole).
        basis: Basis set for pyscf/turbomole (default def2-SVP).
        model: Committee backend.
        model_options: Hyperparameters of the backend that replace its defaults, e.g.
            ``{"hidden_irreps": "32x0e+32x1o"}`` for equivariant MACE features (more
            accurate, about 1.5x the prediction and 2x the training cost; see the README).
        committee: Committee members.
        temperature_K: MD temperature in K.
        timestep_fs: MD time step in fs.
        max_labels: Cap on ok labels from the active-learning loop (a limit; the normal
            end is convergence).
        time_limit_s: Wall-time limit of the active-learning loop in s.
        train_after_max_labels: With continuous training, ``max_labels`` stops labelling,
            not the loop: training goes on until its validation plateau or the time limit.
        training: ``"continuous"`` (train without stopping, publish improved weights,
            calibrate the spread) or ``"rounds"`` (retrain every ``retrain_size`` labels
            for ``train_steps`` steps; the spread stays raw).
        target_force_error: Expected force error of the worst atom (calibrated
            ``max_force_std``, eV/Å) below which a prediction is trusted: the trust
            window's lower bound unless ``lower`` is given.
        lower: Lower bound of the trust window on max_force_std, eV/Å (default
            ``target_force_error``).
        upper: Upper bound of the trust window, eV/Å (above: untrusted, MD restarts).
        convergence_window: Predictions in the window of the convergence stop.
        convergence_fraction: The run has converged when fewer than this fraction of the
            last ``convergence_window`` predictions were uncertain and (continuous
            training) the validation error has stopped improving (0: never; the run
            ends at a limit).
        final_check_ps: Length of the NVE check per starting system at the end, ps
            (0: no check).
        steps_per_label: Continuous training: a new label may be requested per this
            many optimizer steps (after a burst of 8), so labels come at the pace the
            committee can learn them (``None``: as fast as the oracle goes).
        generator_rate_hz: Cap on MD steps per second per generator (``None``: none),
            which leaves the cores of a small machine to training.
        queue_policy: Which queued structure is labelled next: ``"uncertainty"`` or
            ``"diverse"`` (uncertainty weighted by novelty, :mod:`pal_atoms.workflow.oracle_queue`).
        patience: Uncertain MD steps tolerated before a restart.
        retrain_size: New labels that start a training round (``training="rounds"``).
        bootstrap: Where the structures labelled before the loop come from: ``"md"``,
            oracle MD from each starting frame run like the test set's (its
            equilibration and spacing) from another seed, or ``"rattle"``, randomly
            displaced and strained copies of the frame. Rattled copies surround the
            start geometry, not where MD at ``temperature_K`` goes, and the first
            committee is then untrusted there: its MD restarts at every step and the
            labels stay next to the start (README, Performance). MD costs the oracle
            calls of a second test set.
        bootstrap_per_frame: Structures labelled per frame before the loop.
        test_per_frame: Held-out frames per starting structure (oracle MD), shared out
            among ``test_trajectories`` trajectories.
        test_trajectories: Independent oracle-MD trajectories per starting structure
            that the held-out frames come from (each from the structure, with its own
            velocities and ``test_equilibration_fs``). Frames 50 fs apart on one
            trajectory are correlated and may all sit in one basin: with one trajectory
            of 4 frames, Bi4(2-)'s held-out MAE swung 0.07-0.43 eV/Å between runs.
        test_equilibration_fs: Oracle MD before the first held-out frame, fs. Frames from
            the first femtoseconds after the start geometry sit next to the labels (the
            committee's MD starts there too) and flatter the potential (README,
            Performance). Costs ``test_equilibration_fs / timestep_fs`` oracle calls per
            trajectory: with DFT, lower it.
        test_spacing_fs: Oracle MD between held-out frames, fs (the test set costs
            ``test_per_frame * test_spacing_fs / timestep_fs`` oracle calls more per frame).
        train_steps: Optimizer steps per training round (``training="rounds"``; a round
            on few labels trains as long as one on many), with cosine decay from 1e-2 and
            batches of 4.
        oracle_timeout_s: Kill a label after this many s (runs labels in a child process).
        device: Torch device for the committee (default: CUDA when available).
        np: Processes (MPI ranks); 1 runs every kernel in this process; more starts
            ``mpiexec`` (at least 5: controller, prediction, training, oracle, generator).
            ``None``: the kernels' ranks plus one generator rank per generator, up to the
            cores this process may use (at least one generator rank; oversubscribing is
            cheap because idle ranks sleep), or 1 when ``mpiexec`` is not installed.
        prediction_ranks: Prediction ranks under MPI.
        oracle_ranks: Oracle ranks under MPI.
        training_ranks: Training ranks under MPI (members are shared out among them; two
            train a 4-member committee 1.4x faster than one on 2 cores, measured).
        resume: Continue the run in ``out``.
        seed: Seed of everything random.
    """

    system: Path
    out: Path = Path("pal-run")
    charge: int | None = None
    oracle: str = "xtb"
    method: str | None = None
    basis: str | None = None
    model: str = "mace"
    model_options: dict[str, Any] = field(default_factory=dict)
    committee: int = 4
    temperature_K: float = 600.0
    timestep_fs: float = 2.0
    max_labels: int = 400
    time_limit_s: float | None = 360.0
    train_after_max_labels: bool = False
    training: str = "continuous"
    target_force_error: float = 0.15
    lower: float | None = None
    upper: float = 1.0
    convergence_window: int = 1000
    convergence_fraction: float = 0.1
    final_check_ps: float = 1.0
    steps_per_label: float | None = 15.0
    generator_rate_hz: float | None = 5.0
    queue_policy: str = "uncertainty"
    patience: int = 10
    retrain_size: int = 8
    bootstrap: str = "rattle"
    bootstrap_per_frame: int = 4
    test_per_frame: int = 12
    test_trajectories: int = 3
    test_equilibration_fs: float = 200.0
    test_spacing_fs: float = 50.0
    train_steps: int = 400
    oracle_timeout_s: float | None = None
    device: str | None = None
    np: int | None = None
    prediction_ranks: int = 1
    oracle_ranks: int = 1
    training_ranks: int = 2
    resume: bool = False
    seed: int = 0

    def n_generators(self, n_frames: int) -> int:
        """Generators the job runs for ``n_frames`` starting frames (one MD per frame)."""
        return n_frames

    def __post_init__(self) -> None:
        object.__setattr__(self, "system", Path(self.system))
        object.__setattr__(self, "out", Path(self.out))
        allowed = self.allowed_oracles()
        if self.oracle not in allowed:
            raise ConfigError(f"unknown oracle {self.oracle!r}; choose from {', '.join(allowed)}")
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        if self.training not in TRAINING:
            raise ConfigError(
                f"unknown training {self.training!r}; choose from {', '.join(TRAINING)}"
            )
        self._check_stopping()
        self._check_model_options()
        for name in ("temperature_K", "timestep_fs"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be positive, got {value}")
        for name in (
            "committee",
            "train_steps",
            "prediction_ranks",
            "oracle_ranks",
            "training_ranks",
            "test_trajectories",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.np is not None and self.np < 1:
            raise ConfigError(f"np must be >= 1, got {self.np}")
        if self.committee < 2:
            raise ConfigError("a committee needs at least 2 members to estimate uncertainty")
        for name in ("bootstrap_per_frame", "test_per_frame", "patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        self._check_test_set()
        if not 0 <= self.trust_lower <= self.upper:
            raise ConfigError(f"need 0 <= lower <= upper, got {self.trust_lower}, {self.upper}")

    def _check_test_set(self) -> None:
        """The held-out test set's oracle MD (length and spacing in fs) and the bootstrap."""
        if self.bootstrap not in BOOTSTRAPS:
            raise ConfigError(
                f"unknown bootstrap {self.bootstrap!r}; choose from {', '.join(BOOTSTRAPS)}"
            )
        if not (math.isfinite(self.test_equilibration_fs) and self.test_equilibration_fs >= 0):
            raise ConfigError(
                f"test_equilibration_fs must be >= 0 fs, got {self.test_equilibration_fs}"
            )
        if not (math.isfinite(self.test_spacing_fs) and self.test_spacing_fs > 0):
            raise ConfigError(f"test_spacing_fs must be > 0 fs, got {self.test_spacing_fs}")

    @classmethod
    def allowed_oracles(cls) -> tuple[str, ...]:
        """``--oracle`` names this job takes."""
        return ORACLES

    def _check_stopping(self) -> None:
        """Trust window, convergence, label pace and final check settings."""
        for name in ("target_force_error", "upper"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of eV/Å, got {value}")
        rate = self.generator_rate_hz
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"generator_rate_hz must be positive, got {rate}")
        # The controller's own settings check the fields that go to them (labels,
        # limits, convergence, pacing, queue), once, with the library's rules.
        self.workflow_settings()
        if not (math.isfinite(self.final_check_ps) and self.final_check_ps >= 0):
            raise ConfigError(f"final_check_ps must be >= 0, got {self.final_check_ps}")

    def workflow_settings(self, n_generators: int = 1) -> WorkflowSettings:
        """The controller's settings of this job (the one mapping of the job's fields).

        Args:
            n_generators: Generators the run drives (``generator_rate_hz`` caps each).
        """
        rate = self.generator_rate_hz
        return WorkflowSettings(
            max_labels=self.max_labels,
            time_limit_s=self.time_limit_s,
            train_after_max_labels=bool(self.train_after_max_labels),
            retrain_size=self.retrain_size,
            convergence_window=self.convergence_window,
            convergence_fraction=self.convergence_fraction,
            steps_per_label=self.steps_per_label,
            queue_policy=self.queue_policy,
            max_predictions_per_s=None if rate is None else rate * n_generators,
            oracle_timeout_s=self.oracle_timeout_s,
            isolate_oracle=self.oracle_timeout_s is not None,
            seed=self.seed,
        )

    def check_frame(self, atoms: Any, *, what: str) -> None:
        """Checks of a starting frame that only this job makes (none here).

        Raises:
            InputError: the frame does not suit the job.
        """

    @property
    def n_states(self) -> int:
        """Electronic states the committee predicts (1: the ground state)."""
        return 1

    def oracle_settings(self) -> dict[str, Any]:
        """Settings of the oracle from ``method`` and ``basis`` (those given)."""
        from pal_atoms.jobs.setup import oracle_settings

        return oracle_settings(self.oracle, self.method, self.basis)

    @property
    def trust_lower(self) -> float:
        """The trust window's lower bound in eV/Å (``lower``, else ``target_force_error``)."""
        return self.target_force_error if self.lower is None else self.lower

    def _check_model_options(self) -> None:
        """Unknown hyperparameters fail here, before any MPI rank starts."""
        if not isinstance(self.model_options, dict):
            raise ConfigError(
                f"model_options must be a table of KEY = VALUE, got {self.model_options!r}"
            )
        if self.model_options:
            from pal_atoms.calculators.registry import get_backend

            try:
                get_backend(self.model).hyperparameters(self.model_options)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    @classmethod
    def from_dict(cls: type[_Config], data: dict[str, Any]) -> _Config:
        """Build from a mapping (e.g. TOML), rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        """Resolved configuration as JSON (paths as strings)."""
        return json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}, indent=2
        )

    def layout(self) -> Any:
        """The MPI rank layout of this run (:class:`~pal_atoms.workflow.mpi.layout.Layout`)."""
        from pal_atoms.workflow.mpi.layout import Layout

        return Layout(
            prediction=self.prediction_ranks,
            oracle=self.oracle_ranks,
            training=self.training_ranks,
        )


@dataclass(frozen=True, kw_only=True)
class MDRunConfig(JobConfig):
    """``pal-atoms md``: everything of :class:`JobConfig` plus the MD generators' settings.

    Args:
        steps: MD steps per generator (the run also stops at the other limits).
        transfer: ``(donor, H, acceptor)`` atom indices of an atom transfer (default:
            ``atoms.info["transfer"]`` of each frame, ``"D,H,A"``, if any): the MD is then
            steered along ``d(donor-H) - d(acceptor-H)`` from the frame's value to its
            mirror image over ``steer_steps`` steps, so it crosses the barrier.
        bias_k_eV_A2: Force constant of the steering restraint, eV/Å².
        steer_steps: Steps over which the restraint's centre moves.
        steering: ``"once"`` (the centre moves once, then stays on the product side) or
            ``"sweep"`` (back and forth, period ``2 * steer_steps``).
        patience: As in :class:`JobConfig`, with a longer default for MD (200 steps,
            400 fs at 2 fs): early in a run nearly every prediction is uncertain, and a
            trajectory cut after 10 steps never leaves the starting geometry, so the
            labels all come from its first ~20 fs (README, Performance: "The potential
            a run hands over"). Untrusted predictions and unphysical states still
            restart at once.
        bootstrap: As in :class:`JobConfig`, with oracle MD as the default for MD jobs.
        bootstrap_per_frame: As in :class:`JobConfig`, 16 by default for MD jobs: frames
            of oracle MD are where MD at ``temperature_K`` goes, and on the shipped Bi
            file 16 of them per frame gave 0.08 eV/Å held-out against 0.10 with 4 in the
            same 10 minutes (README, Performance). Costs ``16 * test_spacing_fs /
            timestep_fs`` oracle calls per frame before the loop: with DFT, lower it.
        generators_per_frame: Langevin generators per starting frame, each from its own
            seed (copy ``k`` of frame ``i`` has generator id ``i + k * n_frames``).
    """

    patience: int = 200
    bootstrap: str = "md"
    bootstrap_per_frame: int = 16
    generators_per_frame: int = 1
    steps: int = 100_000
    transfer: tuple[int, int, int] | None = None
    bias_k_eV_A2: float = 5.0
    steer_steps: int = 2000
    steering: str = "once"

    def n_generators(self, n_frames: int) -> int:
        """``generators_per_frame`` MD generators per starting frame."""
        return n_frames * self.generators_per_frame

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.generators_per_frame < 1:
            raise ConfigError(f"generators_per_frame must be >= 1, got {self.generators_per_frame}")
        self._check_transfer()

    def check_frame(self, atoms: Any, *, what: str) -> None:
        """The frame's transfer indices (``transfer`` or ``atoms.info["transfer"]``)."""
        from pal_atoms.jobs.setup import transfer_indices

        transfer_indices(self, atoms, what=what)

    def _check_transfer(self) -> None:
        """The transfer indices and the steering restraint."""
        if self.transfer is not None:
            from pal_atoms.jobs.setup import parse_transfer

            try:
                triple = parse_transfer(self.transfer)
            except ValueError as exc:
                raise ConfigError(f"transfer: {exc}") from None
            object.__setattr__(self, "transfer", triple)
        if not (math.isfinite(self.bias_k_eV_A2) and self.bias_k_eV_A2 > 0):
            raise ConfigError(f"bias_k_eV_A2 must be positive, got {self.bias_k_eV_A2}")
        if self.steer_steps < 1:
            raise ConfigError(f"steer_steps must be >= 1, got {self.steer_steps}")
        if self.steering not in ("once", "sweep"):
            raise ConfigError(f"steering must be 'once' or 'sweep', got {self.steering!r}")
