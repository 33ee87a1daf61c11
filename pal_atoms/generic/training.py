"""Training an :class:`~pal_atoms.generic.Ensemble` on labelled samples, in rounds.

Each member trains on its own bootstrap resample of the labels (the committee's spread
then reflects where data are thin, as for the atomistic committees), on standardised
inputs and outputs, with Adam and a cosine learning-rate decay, warm-started from its
current weights. The standardisation is refitted when the label count has doubled since
the last fit, so the members see unit-scale data as the run grows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pal_atoms.core.errors import InputError

if TYPE_CHECKING:
    from pal_atoms.generic.ensemble import Ensemble

__all__ = ["EnsembleTrainer", "TrainingSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """How an ensemble trains (one round).

    Args:
        epochs: Passes over each member's resample per round.
        batch_size: Samples per optimizer step.
        lr: Initial learning rate (decays by cosine to ``lr / 100`` over the round).
        weight_decay: Adam weight decay.
        bootstrap: Train each member on a resample with replacement (else all labels).
        seed: Seed of the resamples and batch orders (per member and round).
    """

    epochs: int = 300
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.0
    bootstrap: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be positive, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


class EnsembleTrainer:
    """Trains an ensemble's members on labelled samples (``train(labels)``, a round).

    Args:
        ensemble: The committee (trained in place).
        settings: :class:`TrainingSettings`.
    """

    def __init__(self, ensemble: Ensemble, settings: TrainingSettings | None = None):
        self.ensemble = ensemble
        self.settings = settings or ensemble.training
        self.rounds = 0
        self._scaled_at = 0

    def _arrays(self, labels: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        schema = self.ensemble.schema
        x = np.stack([schema.flat_inputs(s) for s in labels])
        y = np.stack([schema.flat_outputs(s) for s in labels])
        dev = self.ensemble.device
        return (
            torch.as_tensor(x, dtype=torch.float64, device=dev),
            torch.as_tensor(y, dtype=torch.float64, device=dev),
        )

    def train(
        self,
        labels: Sequence[Mapping[str, Any]],
        members: Sequence[int] | None = None,
        more_labels: Callable[[], Sequence[Any]] | None = None,
    ) -> dict[str, float]:
        """One round on ``labels`` (samples holding inputs and outputs).

        Args:
            labels: Labelled samples (what the store's ``read("ok")`` returns).
            members: Members to train (default all; an MPI training rank trains its own).
            more_labels: Ignored (a round trains on the labels it started with).

        Returns:
            ``{member: final training loss}`` (standardised MSE) as strings -> floats.

        Raises:
            InputError: no labels.
        """
        if not labels:
            raise InputError("training needs at least one labelled sample")
        ens, s = self.ensemble, self.settings
        x, y = self._arrays(labels)
        refit = len(labels) >= 2 * max(self._scaled_at, 1) or not ens.trained
        idx = range(len(ens)) if members is None else members
        losses: dict[str, float] = {}
        for m in idx:
            member = ens.members[m]
            if refit:
                member.fit_scales(x, y)
            gen = torch.Generator().manual_seed(s.seed + 1000 * self.rounds + m)
            n = len(x)
            pick = (
                torch.randint(n, (n,), generator=gen) if s.bootstrap and n > 1 else torch.arange(n)
            )
            xs, ys = x[pick], y[pick]
            target = (ys - member.y_mean) / member.y_scale
            opt = torch.optim.Adam(member.parameters(), lr=s.lr, weight_decay=s.weight_decay)
            steps = s.epochs * max(1, math.ceil(n / s.batch_size))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=s.lr / 100)
            member.train()
            loss = torch.zeros(())
            for _ in range(s.epochs):
                order = torch.randperm(n, generator=gen)
                for start in range(0, n, s.batch_size):
                    b = order[start : start + s.batch_size]
                    opt.zero_grad()
                    loss = torch.mean((member.forward_scaled(xs[b]) - target[b]) ** 2)
                    loss.backward()
                    opt.step()
                    sched.step()
            member.eval()
            losses[str(m)] = float(loss.detach())
        if refit:
            self._scaled_at = len(labels)
        ens._update_label_scale()
        ens.trained = True
        self.rounds += 1
        logger.info("ensemble round %d on %d labels: losses %s", self.rounds, len(labels), losses)
        return losses
