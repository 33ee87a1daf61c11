"""Settings of an active-learning run (one frozen dataclass, validated on creation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from pal_atoms.core.errors import ConfigError

__all__ = ["WorkflowSettings"]


@dataclass(frozen=True, kw_only=True)
class WorkflowSettings:
    """How the controller runs, judges, stores and stops.

    Args:
        max_labels: Stop after this many ``ok`` labels were stored in this run.
        train_after_max_labels: With a continuous trainer, reaching ``max_labels`` stops
            labelling but not the run: the generators are held and training goes on, on
            every core, until every trainer's validation error plateaus (see
            ``require_training_plateau``) or another limit ends the run. A label budget
            then buys a trained potential rather than one caught mid-training.
        max_steps: Stop after this many generator steps in all (``None``: no limit).
        time_limit_s: Stop after this wall time in s (``None``: no limit).
        retrain_size: New ``ok`` labels that start a training round.
        oracle_timeout_s: A label taking longer is killed and recorded as ``timeout``
            (``None``: no limit; a limit runs each label in a child process).
        isolate_oracle: Run each label in a child process, so a crash or hang of the
            quantum-chemistry code cannot take the run down.
        queue_cap: Most structures waiting for the oracle; the least uncertain are dropped.
        diversity_A: Candidates whose sorted interatomic distances differ by less than
            this RMS (Å) from a queued or recently labelled structure are skipped.
        queue_policy: Which queued structure goes to the oracle next: ``"uncertainty"``
            (the most uncertain) or ``"diverse"`` (uncertainty weighted by distance to
            what was labelled; :mod:`pal_atoms.workflow.oracle_queue`).
        convergence_window: Predictions in the window of the convergence criterion.
        convergence_fraction: Converged when fewer than this fraction of the last
            ``convergence_window`` predictions was uncertain or untrusted (and, with
            ``require_training_plateau`` and a continuous trainer, the validation error
            has stopped improving).
        require_training_plateau: With a continuous trainer, convergence also needs every
            trainer to report a plateau of its validation loss.
        training_share: In one process with a continuous trainer, the fraction of wall
            time spent on training steps between generator steps (under MPI training has
            ranks of its own).
        steps_per_label: With a continuous trainer, the oracle gets a new structure only
            while the labels sent so far are at most ``label_burst`` plus the trainers'
            optimizer steps divided by this (``None``: no pacing). Labels then arrive at
            the pace training can absorb them, instead of as fast as a cheap oracle goes.
        label_burst: Labels allowed before any training step (see ``steps_per_label``).
        max_predictions_per_s: Cap on the generators' committee predictions per second in
            all (``None``: none). On a small machine generators that run flat out take
            the cores that training needs; above the cap the controller holds their
            requests back (one process: trains instead).
        on_convergence: ``"stop"`` ends the run; ``"ml_md"`` stops oracle and training and
            lets the generators continue on the committee until another limit is hit.
        stall_duplicates: Round-based training: stop (``stalled``) after this many
            near-duplicate proposals in a row with nothing queued or being labelled, since
            the labels a round waits for can then never come (``None``: never).
        failure_budget: Stop when more than this fraction of the last
            ``failure_window`` labels failed (any status other than ``ok``).
        failure_window: Labels in the failure-budget window.
        checkpoint_interval_s: Save generator states at least this often (s); the
            committee is saved after every training round.
        metrics_interval_s: Write a metrics line at least this often (s).
        stop_file: A file whose appearance stops the run gracefully (relative to the run
            directory); ``None`` disables it.
        seed: Seed for everything random in the controller.
        prediction_devices: Torch devices of the prediction ranks under MPI, indexed by
            node-local rank (PAL's ``gpu_pred``), e.g. ``("cuda:0",)``; empty: node-local
            rank over the visible GPUs, CPU without one.
        training_devices: The same for the training ranks (PAL's ``gpu_ml``).
    """

    max_labels: int = 100
    train_after_max_labels: bool = False
    max_steps: int | None = None
    time_limit_s: float | None = None
    retrain_size: int = 8
    oracle_timeout_s: float | None = None
    isolate_oracle: bool = False
    queue_cap: int = 64
    diversity_A: float = 0.02
    queue_policy: str = "uncertainty"
    convergence_window: int = 200
    convergence_fraction: float = 0.01
    require_training_plateau: bool = True
    training_share: float = 0.5
    steps_per_label: float | None = None
    label_burst: int = 8
    max_predictions_per_s: float | None = None
    on_convergence: Literal["stop", "ml_md"] = "stop"
    stall_duplicates: int | None = 2000
    failure_budget: float = 0.5
    failure_window: int = 20
    checkpoint_interval_s: float = 60.0
    metrics_interval_s: float = 5.0
    stop_file: str | None = "STOP"
    seed: int = 0
    prediction_devices: tuple[str, ...] = ()
    training_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_devices()
        positive_ints = (
            "max_labels",
            "retrain_size",
            "queue_cap",
            "convergence_window",
            "failure_window",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.stall_duplicates is not None and (
            not isinstance(self.stall_duplicates, int) or self.stall_duplicates < 1
        ):
            raise ConfigError(
                f"stall_duplicates must be a positive integer or None, got {self.stall_duplicates}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be positive or None, got {self.max_steps}")
        for name in ("time_limit_s", "oracle_timeout_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        self._check_pacing()
        for name in ("convergence_fraction", "failure_budget"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value}")
        if self.diversity_A < 0:
            raise ConfigError(f"diversity_A must be >= 0, got {self.diversity_A}")
        if self.on_convergence not in ("stop", "ml_md"):
            raise ConfigError(
                f"on_convergence must be 'stop' or 'ml_md', got {self.on_convergence!r}"
            )
        for name in ("checkpoint_interval_s", "metrics_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    def _check_pacing(self) -> None:
        if self.queue_policy not in ("uncertainty", "diverse"):
            raise ConfigError(
                f"queue_policy must be 'uncertainty' or 'diverse', got {self.queue_policy!r}"
            )
        for name in ("steps_per_label", "max_predictions_per_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number or None, got {value}")
        if not isinstance(self.label_burst, int) or self.label_burst < 0:
            raise ConfigError(f"label_burst must be a non-negative integer, got {self.label_burst}")
        if not 0.0 < self.training_share < 1.0:
            raise ConfigError(f"training_share must lie in (0, 1), got {self.training_share}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowSettings:
        """Build from a mapping, rejecting unknown keys with a clear message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown workflow settings: {', '.join(unknown)}")
        return cls(**data)

    def _check_devices(self) -> None:
        for name in ("prediction_devices", "training_devices"):
            devices = tuple(getattr(self, name))
            object.__setattr__(self, name, devices)
            bad = [d for d in devices if not (d == "cpu" or d.split(":")[0] in ("cuda", "mps"))]
            if bad:
                raise ConfigError(f"{name}: not a torch device: {', '.join(map(str, bad))}")
