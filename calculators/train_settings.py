"""Settings of :class:`~pal_atoms.calculators.CommitteeTrainer`."""

from __future__ import annotations

from dataclasses import dataclass

from pal_atoms.core.errors import ConfigError

__all__ = ["TrainerSettings"]


@dataclass(frozen=True, kw_only=True)
class TrainerSettings:
    """Settings of :class:`CommitteeTrainer`.

    Attributes:
        max_epochs: Upper bound on passes over the training labels per :meth:`train` call.
        max_steps: Upper bound on optimizer steps per call (``None``: epochs only). Small
            label sets need many passes: a budget in steps, not epochs, is what makes a
            round on 16 labels train as long as one on 500.
        lr: Peak Adam learning rate.
        schedule: ``"plateau"``: start at ``lr`` and halve it after ``lr_patience_steps``
            optimizer steps without a better validation loss (constant without a
            validation set); ``"cosine"``: fall from ``lr`` to ``min_lr`` over the call's
            planned steps (``min(max_steps, max_epochs * batches per epoch)``). Measured
            on Bi4-Bi8 (README, Performance: Committee): plateau reached a lower held-out
            error than cosine at 16 and 256 labels (likely because cosine spends the
            second half of the budget at a learning rate too small to make progress).
        batch_size: Structures per step. Force labels of small clusters are few numbers
            per structure, so small batches give noisy steps: 16 reached a held-out error
            1.5x lower than 4 at the same step budget.
        energy_weight: Weight of the energy term, mean squared error per atom (eV²).
        forces_weight: Weight of the force term, mean squared component error (eV²/Å²).
        validation_fraction: Fraction of labels held out for early stopping (0 disables it).
        min_validation_labels: Hold labels out only from this many labels on: with fewer,
            a validation set of one or two structures is noise, and every label is needed
            for training.
        patience_steps: Stop a member after this many optimizer steps without a better
            validation loss. Counted in steps, not epochs: an epoch of 30 labels is two
            steps, and a patience in epochs stopped such rounds after ~100 steps.
        lr_patience_steps: Halve the learning rate after this many steps without a better
            validation loss (``"plateau"``).
        min_lr: Learning rate floor.
        ema_decay: Exponential moving average of the weights (as MACE trains): validation
            and the final weights use the average, which smooths the step-to-step noise of
            small batches. ``None`` disables it.
        bootstrap: Resample labels per member (else members differ by seed only).
        seed: Seed of the split, the resamples, the batch order and re-initialisation.
        warm_start: Keep the optimizer state between calls (weights are always kept unless
            ``reinitialise``).
        reinitialise: Draw fresh weights before training (PAL's retrain-from-scratch).
        refit_e0: Refit the E0s and the energy scale from the labels of this call (they
            are always fitted on the first call).
        dtype: ``"float32"``/``"float64"`` to convert the committee before training;
            ``None`` keeps its dtype.
    """

    max_epochs: int = 1000
    max_steps: int | None = 800
    lr: float = 2e-2
    schedule: str = "plateau"
    batch_size: int = 16
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    validation_fraction: float = 0.1
    min_validation_labels: int = 20
    patience_steps: int = 600
    lr_patience_steps: int = 100
    min_lr: float = 1e-4
    ema_decay: float | None = 0.99
    bootstrap: bool = True
    seed: int = 0
    warm_start: bool = True
    reinitialise: bool = False
    refit_e0: bool = False
    dtype: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}"),
            (
                self.max_steps is None or self.max_steps >= 1,
                f"max_steps must be >= 1 or None, got {self.max_steps}",
            ),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.energy_weight >= 0
                and self.forces_weight >= 0
                and self.energy_weight + self.forces_weight > 0,
                "energy_weight and forces_weight must be >= 0 and not both 0",
            ),
            (
                0 <= self.validation_fraction < 1,
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}",
            ),
            (
                self.patience_steps >= 1,
                f"patience_steps must be >= 1, got {self.patience_steps}",
            ),
            (
                self.lr_patience_steps >= 1,
                f"lr_patience_steps must be >= 1, got {self.lr_patience_steps}",
            ),
            (
                self.schedule in ("cosine", "plateau"),
                f"schedule must be 'cosine' or 'plateau', got {self.schedule!r}",
            ),
            (
                self.min_validation_labels >= 2,
                f"min_validation_labels must be >= 2, got {self.min_validation_labels}",
            ),
            (0 < self.min_lr <= self.lr, "min_lr must be in (0, lr]"),
            (
                self.ema_decay is None or 0 < self.ema_decay < 1,
                f"ema_decay must be in (0, 1) or None, got {self.ema_decay}",
            ),
            (
                self.dtype in (None, "float32", "float64"),
                f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
