"""Settings of the continuous trainer, and the validation split every process agrees on."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from pal_atoms.core.errors import ConfigError

__all__ = ["StreamSettings", "is_validation"]


def is_validation(atoms: Atoms, every: int) -> bool:
    """Whether a label belongs to the validation set (about one in ``every``).

    Deterministic in the positions (rounded to 1e-6 Å) and the total charge, so the
    training ranks and the prediction rank agree on the split without messages.
    """
    if every <= 0:
        return False
    key = np.round(np.asarray(atoms.positions, dtype=float), 6).tobytes()
    key += str(int(atoms.info.get("charge", 0))).encode()
    return zlib.crc32(key) % every == 0


@dataclass(frozen=True, kw_only=True)
class StreamSettings:
    """Settings of :class:`StreamingTrainer`.

    Attributes:
        lr: Peak Adam learning rate (at the start; warm restarts go back to a fraction).
        min_lr: Learning-rate floor.
        schedule: ``"plateau"`` or ``"cycles"`` (cosine per restart cycle; module
            docstring).
        cycle_epochs: Length of a cosine cycle in passes over the training set.
        min_cycle_steps: Shortest cycle in optimizer steps (few labels, short epochs).
        restart_decay: Peak of each warm restart relative to the previous peak.
        batch_size: Structures per optimizer step, drawn at random from the training set.
        energy_weight: Weight of the per-atom energy MSE (eV²).
        forces_weight: Weight of the force-component MSE (eV²/Å²).
        ema_decay: Decay of the weight average that is validated and published.
        validation_every: About one label in this many goes to the validation set.
        min_validation: Validation labels needed before publishing depends on them; with
            fewer, weights are published at every evaluation.
        eval_every_steps: Optimizer steps between validations (and possible publishes).
        lr_patience_evals: Halve the learning rate after this many evaluations without a
            better validation loss.
        restart_growth: Warm restart once the training set has grown by this fraction
            since the last restart (0.5: by half).
        improvement: Relative decrease of the validation loss that counts as better.
        plateau_evals: Evaluations in the window of :meth:`StreamingTrainer.plateaued`.
        plateau_tolerance: Training has plateaued when the best validation loss fell by
            less than this fraction over the last ``plateau_evals`` evaluations (with the
            validation set unchanged).
        bootstrap: Weight each label per member by a Poisson(1) count (the online
            bootstrap), so members disagree where data are scarce.
        seed: Seed of the bootstrap counts and the batch draws.
    """

    lr: float = 1e-2
    min_lr: float = 2e-4
    schedule: str = "plateau"
    cycle_epochs: float = 40.0
    min_cycle_steps: int = 300
    restart_decay: float = 0.7
    batch_size: int = 8
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    ema_decay: float = 0.99
    validation_every: int = 8
    min_validation: int = 4
    eval_every_steps: int = 50
    lr_patience_evals: int = 4
    restart_growth: float = 0.5
    improvement: float = 1e-3
    plateau_evals: int = 6
    plateau_tolerance: float = 0.02
    bootstrap: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be > 0, got {self.lr}"),
            (0 < self.min_lr <= self.lr, f"min_lr must be in (0, lr], got {self.min_lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.schedule in ("cycles", "plateau"),
                f"schedule must be 'cycles' or 'plateau', got {self.schedule!r}",
            ),
            (self.cycle_epochs > 0, f"cycle_epochs must be > 0, got {self.cycle_epochs}"),
            (
                self.min_cycle_steps >= 1,
                f"min_cycle_steps must be >= 1, got {self.min_cycle_steps}",
            ),
            (
                0 < self.restart_decay <= 1,
                f"restart_decay must be in (0, 1], got {self.restart_decay}",
            ),
            (
                self.energy_weight >= 0
                and self.forces_weight >= 0
                and self.energy_weight + self.forces_weight > 0,
                "energy_weight and forces_weight must be >= 0 and not both 0",
            ),
            (0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}"),
            (
                self.validation_every >= 2,
                f"validation_every must be >= 2, got {self.validation_every}",
            ),
            (self.min_validation >= 1, f"min_validation must be >= 1, got {self.min_validation}"),
            (
                self.eval_every_steps >= 1,
                f"eval_every_steps must be >= 1, got {self.eval_every_steps}",
            ),
            (
                self.lr_patience_evals >= 1,
                f"lr_patience_evals must be >= 1, got {self.lr_patience_evals}",
            ),
            (self.restart_growth > 0, f"restart_growth must be > 0, got {self.restart_growth}"),
            (0 <= self.improvement < 1, f"improvement must be in [0, 1), got {self.improvement}"),
            (self.plateau_evals >= 2, f"plateau_evals must be >= 2, got {self.plateau_evals}"),
            (
                0 <= self.plateau_tolerance < 1,
                f"plateau_tolerance must be in [0, 1), got {self.plateau_tolerance}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
