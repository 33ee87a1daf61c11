"""Continuous training on a stream of labels (PAL's training kernel, without rounds).

A :class:`StreamingTrainer` trains from the first labels until the run ends. Labels join
the moment they arrive (:meth:`StreamingTrainer.add`); a fixed rule sends about one label
in ``validation_every`` to a rolling validation set (:func:`is_validation`: a hash of the
positions, so every process that sees a label puts it on the same side without talking
to the others). Every ``eval_every_steps`` optimizer steps the averaged (EMA) weights
are validated; a member whose validation loss improved is *published*: its weights are
handed to the caller, who sends them to the prediction side.

The learning rate suits an open-ended stream. By default (``schedule="plateau"``) it is
halved after ``lr_patience_evals`` evaluations without improvement and goes back to a
peak (a warm restart, ``restart_decay`` times the previous one) once the training set has
grown by ``restart_growth`` since the last restart, so new regions of configuration
space are learned at a useful rate. While labels keep arriving the rolling validation
set changes, which resets the plateau count, so the rate stays near its peak until the
data settle. ``schedule="cycles"`` instead follows a cosine from the peak to ``min_lr``
over ``cycle_epochs`` passes after each restart (measured slower on the shipped Bi
clusters: it settles the weights too early; README, Performance).

The single-process loop and the MPI training ranks drive the same object: the first by
time share between generator steps, the second in a loop of its own.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase import Atoms

from .stream_settings import StreamSettings, is_validation
from .train_utils import EMA, committee_loss, fit_e0, label_arrays

__all__ = ["Publish", "StreamSettings", "StreamingTrainer", "is_validation"]

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Publish:
    """Weights ready for the prediction side.

    Attributes:
        members: Member indices whose weights improved.
        weights: Their state dicts (as :meth:`CommitteeCalculator.get_weights`), EMA weights.
        step: Optimizer steps taken by the trainer so far.
        n_train: Training labels at this point.
        n_val: Validation labels at this point.
        val_forces_mae: Mean over the trainer's members of the validation force MAE (eV/Å),
            ``nan`` without validation labels.
    """

    members: list[int]
    weights: list[dict[str, torch.Tensor]]
    step: int
    n_train: int
    n_val: int
    val_forces_mae: float


@dataclass
class _Data:
    labels: list[Atoms] = field(default_factory=list)
    energies: list[Any] = field(default_factory=list)  # floats, or (S,) arrays for states
    forces: list[np.ndarray] = field(default_factory=list)


class StreamingTrainer:
    """Trains ``members`` of a committee for as long as it is asked to (module docstring).

    Args:
        committee: The committee trained (in place; its weights are the live weights).
        settings: Stream settings.
        members: Member indices this trainer owns (default all).
    """

    def __init__(
        self,
        committee: Any,
        settings: StreamSettings | None = None,
        *,
        members: Sequence[int] | None = None,
    ) -> None:
        self.committee = committee
        self.settings = s = settings or StreamSettings()
        n = committee.n_members
        self.members = list(range(n)) if members is None else [int(m) for m in members]
        if not self.members or any(not 0 <= m < n for m in self.members):
            raise ValueError(f"members must be indices in 0..{n - 1}, got {members}")
        if committee.model.mode == "shared" and sorted(self.members) != list(range(n)):
            raise ValueError("a shared-backbone committee trains all members together")
        self.train_set = _Data()
        self.val_set = _Data()
        self._boot = np.zeros((len(self.members), 0))
        self._rng = np.random.default_rng([s.seed, *self.members])
        self.step = 0
        self.lr = s.lr
        self._peak = s.lr
        self._restart_step = 0
        self._n_at_restart = 0
        self._best = np.full(len(self.members), np.inf)
        self._best_total = np.inf
        self._stale_evals = 0
        self._val_changed = False
        self._optimizer: torch.optim.Optimizer | None = None
        self._ema: EMA | None = None
        self.last_val_forces_mae = math.nan
        self.evaluations = 0
        self.publishes = 0
        self._val_version = 0
        # (validation-set version, best total validation loss) after each evaluation.
        self._best_history: deque[tuple[int, float]] = deque(maxlen=s.plateau_evals)

    # -- data ---------------------------------------------------------------------------------
    @property
    def validation_labels(self) -> list[Atoms]:
        """The rolling validation set."""
        return list(self.val_set.labels)

    @property
    def labels(self) -> list[Atoms]:
        """Every label added so far (training and validation)."""
        return self.train_set.labels + self.val_set.labels

    @property
    def n_train(self) -> int:
        """Training labels."""
        return len(self.train_set.labels)

    def add(self, labels: Sequence[Atoms]) -> None:
        """Add labels (energy in eV, forces in eV/Å, charge in ``info``) to the stream.

        Raises:
            ValueError: a label without energy/forces, or an element or charge the
                committee does not cover.
        """
        labels = list(labels)
        if not labels:
            return
        energies, forces = label_arrays(labels, self.committee.n_states)
        for k, atoms in enumerate(labels):
            self.committee.species.indices(atoms, what=f"label {k}")
        s = self.settings
        for atoms, e, f in zip(labels, energies, forces, strict=True):
            val = is_validation(atoms, s.validation_every)
            target = self.val_set if val else self.train_set
            target.labels.append(atoms)
            target.energies.append(e)
            target.forces.append(f)
            if val:
                self._val_changed = True
                self._val_version += 1
            else:
                w = self._rng.poisson(1.0, (len(self.members), 1)) if s.bootstrap else 1.0
                w = np.broadcast_to(w, (len(self.members), 1)).astype(float)
                # A label no member sees is wasted: give it to one member at random.
                if not w.any():
                    w[self._rng.integers(len(self.members)), 0] = 1.0
                self._boot = np.concatenate([self._boot, w], axis=1)
        if not self.committee.metadata.get("e0_fitted") and self.n_train:
            self._fit_e0()
        if self.n_train >= (1 + s.restart_growth) * max(self._n_at_restart, 1):
            if self._n_at_restart:
                self._peak = max(self._peak * s.restart_decay, s.min_lr)
                logger.info(
                    "warm restart at %d training labels (lr %.3g -> %.3g)",
                    self.n_train,
                    self.lr,
                    self._peak,
                )
            self._n_at_restart = self.n_train
            self._restart_step = self.step
            self.lr = self._peak
            self._stale_evals = 0

    def _fit_e0(self) -> None:
        cm, d = self.committee, self.train_set
        counts = np.stack(
            [np.bincount(cm.species.indices(a), minlength=len(cm.species)) for a in d.labels]
        )
        e0 = fit_e0(counts, np.asarray(d.energies))
        rms_f = float(np.sqrt(np.mean(np.concatenate(d.forces) ** 2)))
        model = cm.model
        model.e0.data = torch.as_tensor(e0, dtype=torch.float64, device=cm.device)
        model.scale.data.fill_(rms_f if rms_f > 1e-6 else 1.0)
        cm.metadata["e0_fitted"] = True
        logger.info("fitted E0s %s eV, energy scale %.4g eV", e0.round(4).tolist(), rms_f)

    # -- training -----------------------------------------------------------------------------
    def _opt(self) -> tuple[torch.optim.Optimizer, EMA]:
        if self._optimizer is None or self._ema is None:
            params = self.committee.model.member_parameters(self.members)
            self._optimizer = torch.optim.Adam(params, lr=self.lr)
            self._ema = EMA(params, self.settings.ema_decay)
        return self._optimizer, self._ema

    def train_steps(self, n_steps: int) -> list[Publish]:
        """Take ``n_steps`` optimizer steps (none without training labels).

        Returns:
            The publishes that happened on the way (at most one per evaluation).
        """
        out: list[Publish] = []
        if not self.n_train:
            return out
        s = self.settings
        opt, ema = self._opt()
        model = self.committee.model
        model.train()
        d = self.train_set
        for _ in range(n_steps):
            if s.schedule == "cycles":
                self.lr = self._cycle_lr()
            for group in opt.param_groups:
                group["lr"] = self.lr
            batch = self._rng.integers(0, self.n_train, min(s.batch_size, self.n_train))
            loss = committee_loss(
                self.committee,
                [d.labels[i] for i in batch],
                np.asarray(d.energies)[batch],
                [d.forces[i] for i in batch],
                self.members,
                weights=self._boot[:, batch],
                training=True,
                energy_weight=s.energy_weight,
                forces_weight=s.forces_weight,
            )
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            ema.update()
            self.step += 1
            if self.step % s.eval_every_steps == 0:
                publish = self._evaluate()
                if publish is not None:
                    out.append(publish)
        model.eval()
        self.committee.reset()
        return out

    def _cycle_lr(self) -> float:
        """Cosine from the current peak to ``min_lr`` over one cycle, then ``min_lr``."""
        s = self.settings
        length = max(s.min_cycle_steps, s.cycle_epochs * self.n_train / s.batch_size)
        frac = min(1.0, (self.step - self._restart_step) / length)
        return s.min_lr + 0.5 * (self._peak - s.min_lr) * (1.0 + math.cos(math.pi * frac))

    def _evaluate(self) -> Publish | None:
        """Validate the averaged weights; return a :class:`Publish` of the improved members."""
        s = self.settings
        ema = self._opt()[1]
        self.evaluations += 1
        v = self.val_set
        if self._val_changed:
            # A new validation label changes the yardstick: compare from scratch.
            self._best[:] = np.inf
            self._best_total = np.inf
            self._val_changed = False
        with ema.applied():
            if len(v.labels) >= s.min_validation:
                loss, f_mae = self._validate()
                self.last_val_forces_mae = float(np.mean(f_mae))
                total = float(np.sum(loss))
                better = 1 - s.improvement
                if self.committee.model.mode == "shared":  # members share the backbone
                    shared_better = total < self._best_total * better
                    improved = list(range(len(self.members))) if shared_better else []
                else:
                    improved = [
                        c for c in range(len(self.members)) if loss[c] < self._best[c] * better
                    ]
                for c in improved:
                    self._best[c] = loss[c]
                if total < self._best_total * (1 - s.improvement):
                    self._best_total = total
                    self._stale_evals = 0
                else:
                    self._stale_evals += 1
                    if s.schedule == "plateau" and self._stale_evals >= s.lr_patience_evals:
                        self._stale_evals = 0
                        self.lr = max(self.lr * 0.5, s.min_lr)
                        logger.debug("lr halved to %.3g at step %d", self.lr, self.step)
            else:  # nothing to judge by yet: every evaluation publishes
                improved = list(range(len(self.members)))
            self._best_history.append((self._val_version, self._best_total))
            if not improved:
                return None
            self.publishes += 1
            members = [self.members[c] for c in improved]
            weights = self.committee.get_weights()
        return Publish(
            members=members,
            weights=[weights[m] for m in members],
            step=self.step,
            n_train=self.n_train,
            n_val=len(v.labels),
            val_forces_mae=self.last_val_forces_mae,
        )

    def _validate(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-member validation loss and force MAE (eV/Å) of the current weights."""
        s, v = self.settings, self.val_set
        n = len(v.labels)
        loss_sum = np.zeros(len(self.members))
        mae_sum = np.zeros(len(self.members))
        energies = np.asarray(v.energies)
        # Forces need gradients, so validation runs with autograd on (no create_graph).
        for start in range(0, n, 32):
            idx = np.arange(start, min(n, start + 32))
            loss, _, f_mae = committee_loss(
                self.committee,
                [v.labels[i] for i in idx],
                energies[idx],
                [v.forces[i] for i in idx],
                self.members,
                weights=np.ones((len(self.members), len(idx))),
                training=False,
                energy_weight=s.energy_weight,
                forces_weight=s.forces_weight,
                with_mae=True,
            )
            loss_sum += loss.cpu().numpy() * len(idx)
            mae_sum += f_mae * len(idx)
        return loss_sum / n, mae_sum / n

    def plateaued(self) -> bool:
        """Whether the validation loss has stopped improving (see ``plateau_tolerance``).

        False until ``plateau_evals`` evaluations have run on an unchanged validation set
        of at least ``min_validation`` labels.
        """
        s, h = self.settings, self._best_history
        if len(h) < s.plateau_evals or len(self.val_set.labels) < s.min_validation:
            return False
        if any(version != self._val_version for version, _ in h):
            return False  # the validation set changed within the window
        first, last = h[0][1], h[-1][1]
        if not (np.isfinite(first) and np.isfinite(last)):
            return False
        return bool(first - last <= s.plateau_tolerance * first)

    def detach(self) -> None:
        """Train a private copy of the committee from now on.

        In one process the committee that serves predictions must only change when
        weights are published (as on the prediction ranks under MPI), not at every step.
        """
        self.committee = copy.deepcopy(self.committee)
        self._optimizer = None
        self._ema = None

    def state(self) -> dict[str, Any]:
        """Progress counters (for logs and metrics)."""
        return {
            "plateau": self.plateaued(),
            "publishes": self.publishes,
            "step": self.step,
            "lr": self.lr,
            "n_train": self.n_train,
            "n_val": len(self.val_set.labels),
            "val_forces_mae": self.last_val_forces_mae,
            "evaluations": self.evaluations,
        }
