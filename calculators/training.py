"""Training a committee on labelled structures: bootstrap members, E+F loss, early stopping.

Each member sees its own bootstrap resample of the training labels (a multinomial draw of
per-label weights, seeded per member), so members disagree where data are scarce. One
batch feeds all members at once: the loss of member m weights each label by m's
bootstrap count, and one backward pass trains every member (their parameters are
disjoint, so the summed loss does not couple them). Training continues from the current
weights and the trainer's optimizer state by default, so calling :meth:`train` again
when new labels arrive picks up where the last call stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from ase import Atoms

from .committee import CommitteeCalculator
from .train_settings import TrainerSettings
from .train_utils import EMA, committee_loss, fit_e0, label_arrays, member_state, restore_member

__all__ = ["CommitteeTrainer", "TrainerSettings", "fit_e0"]

logger = logging.getLogger(__name__)


class CommitteeTrainer:
    """Trains some or all members of a committee on labelled structures.

    Args:
        committee: The committee to train (modified in place).
        settings: Training settings.
    """

    def __init__(self, committee: CommitteeCalculator, settings: TrainerSettings | None = None):
        self.committee = committee
        self.settings = settings or TrainerSettings()
        self._optimizer: torch.optim.Optimizer | None = None
        self._opt_members: tuple[int, ...] = ()
        self._calls = 0

    def train(  # noqa: PLR0912, PLR0915  (one readable loop: split, fit, epochs, stop)
        self,
        labels: Sequence[Atoms],
        *,
        members: Sequence[int] | None = None,
        more_labels: Callable[[], Sequence[Atoms]] | None = None,
    ) -> list[dict[str, Any]]:
        """Train ``members`` (default all) on ``labels``.

        Args:
            labels: Structures with a calculator holding the label (energy in eV, forces in
                eV/Å), total charge in ``info["charge"]``, as ``LabelStore.read`` returns.
            members: Member indices to train; in shared mode only all members together.
            more_labels: Called before every epoch; labels it returns join the training
                set at once (PAL's training kernel picks up new data while it trains).
                They get their own bootstrap weights (Poisson(1) counts, the large-sample
                bootstrap); the validation set stays fixed for the call so that early
                stopping compares like with like.

        Returns:
            This call's history: one dict per epoch with ``epoch``, ``step``, ``lr``,
            ``train_loss``, and (with a validation set) ``val_loss``, ``val_energy_mae``
            (eV/atom), ``val_forces_mae`` (eV/Å), each a list over the trained members.

        Raises:
            ValueError: no labels, a label without energy/forces, an uncovered element or
                charge, bad member indices.
        """
        s = self.settings
        cm = self.committee
        model = cm.model
        sel = list(range(cm.n_members)) if members is None else [int(m) for m in members]
        if not sel or any(not 0 <= m < cm.n_members for m in sel) or len(set(sel)) != len(sel):
            raise ValueError(f"members must be distinct indices in 0..{cm.n_members - 1}")
        if model.mode == "shared" and sorted(sel) != list(range(cm.n_members)):
            raise ValueError("a shared-backbone committee trains all members together")
        if len(labels) == 0:
            raise ValueError("no labels to train on")
        if s.dtype is not None:
            cm.to(dtype=s.dtype)
        labels = list(labels)
        energies, forces = label_arrays(labels, cm.n_states)
        species = [cm.species.indices(a, what=f"label {k}") for k, a in enumerate(labels)]
        n = len(labels)
        rng = np.random.default_rng([s.seed, n, self._calls])
        order = rng.permutation(n)
        n_val = round(s.validation_fraction * n) if n >= s.min_validation_labels else 0
        val_idx, train_idx = order[:n_val], order[n_val:]

        if s.refit_e0 or not cm.metadata.get("e0_fitted"):
            counts = np.stack([np.bincount(sp, minlength=len(cm.species)) for sp in species])
            e0 = fit_e0(counts[train_idx], energies[train_idx])
            rms_f = float(np.sqrt(np.mean(np.concatenate([forces[i] for i in train_idx]) ** 2)))
            model.e0.data = torch.as_tensor(e0, dtype=torch.float64, device=cm.device)
            model.scale.data.fill_(rms_f if rms_f > 1e-6 else 1.0)
            cm.metadata["e0_fitted"] = True
            logger.info("fitted E0s %s eV, energy scale %.4g eV", e0.round(4).tolist(), rms_f)
        if s.reinitialise:
            model.reinitialise(sel, seed=s.seed + 1000 * (self._calls + 1))
            self._optimizer = None
        if self._optimizer is None or not s.warm_start or self._opt_members != tuple(sel):
            self._optimizer = torch.optim.Adam(model.member_parameters(sel), lr=s.lr)
            self._opt_members = tuple(sel)
        opt = self._optimizer
        for group in opt.param_groups:
            group["lr"] = s.lr
        params = model.member_parameters(sel)
        ema = EMA(params, s.ema_decay) if s.ema_decay is not None else None

        boot = np.ones((len(sel), n))
        if s.bootstrap:
            for c, m in enumerate(sel):
                draw = np.random.default_rng([s.seed, m, n]).choice(train_idx, len(train_idx))
                boot[c] = np.bincount(draw, minlength=n)

        torch.manual_seed(s.seed + self._calls)
        self._calls += 1
        best = [np.inf] * len(sel)
        best_state: list[Any] = [None] * len(sel)
        best_step = [0] * len(sel)  # step of each member's best validation loss
        lr_mark, best_total = 0, np.inf  # step of the last improvement or halving
        history: list[dict[str, Any]] = []
        step = 0
        model.train()
        for epoch in range(s.max_epochs):
            extra = list(more_labels()) if more_labels is not None else []
            if extra:
                new_e, new_f = label_arrays(extra, cm.n_states)
                for k, a in enumerate(extra):
                    cm.species.indices(a, what=f"new label {k}")
                new_idx = np.arange(len(labels), len(labels) + len(extra))
                labels += extra
                energies = np.concatenate([energies, new_e])
                forces += new_f
                train_idx = np.concatenate([train_idx, new_idx])
                new_w = np.ones((len(sel), len(extra)))
                if s.bootstrap:
                    new_w = rng.poisson(1.0, new_w.shape).astype(float)
                boot = np.concatenate([boot, new_w], axis=1)
                logger.info("training picked up %d new labels (%d now)", len(extra), len(labels))
            perm = rng.permutation(train_idx)
            losses = []
            for start in range(0, len(perm), s.batch_size):
                batch = perm[start : start + s.batch_size]
                if s.schedule == "cosine":
                    for group in opt.param_groups:
                        group["lr"] = self._cosine_lr(step, len(train_idx))
                loss_m = self._loss(
                    labels, energies, forces, batch, sel, weights=boot[:, batch], training=True
                )
                opt.zero_grad(set_to_none=True)
                loss_m.sum().backward()
                opt.step()
                if ema is not None:
                    ema.update()
                losses.append(loss_m.detach().cpu().numpy())
                step += 1
                if s.max_steps is not None and step >= s.max_steps:
                    break
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "n_labels": len(labels),
                "lr": opt.param_groups[0]["lr"],
                "train_loss": np.mean(losses, axis=0).tolist(),
                "members": sel,
            }
            if n_val:
                with ema.applied() if ema is not None else contextlib.nullcontext():
                    val = self.evaluate([labels[i] for i in val_idx], members=sel)
                    total = float(np.sum(val["val_loss"]))
                    # Shared mode: members share the backbone: they stop and restore together.
                    scores = [total] * len(sel) if model.mode == "shared" else val["val_loss"]
                    for c, m in enumerate(sel):
                        if scores[c] < best[c]:
                            # Copy the (averaged) weights only when they are a new best:
                            # epochs of few labels are a step or two long.
                            best[c], best_step[c] = scores[c], step
                            best_state[c] = self._member_state(m)
                record.update(val)
                if total < best_total:
                    best_total, lr_mark = total, step
                elif s.schedule == "plateau" and step - lr_mark >= s.lr_patience_steps:
                    lr_mark = step
                    for group in opt.param_groups:
                        group["lr"] = max(group["lr"] * 0.5, s.min_lr)
            history.append(record)
            logger.debug("epoch %d: %s", epoch, record)
            if n_val and step - max(best_step) >= s.patience_steps:
                break
            if s.max_steps is not None and step >= s.max_steps:
                break
        if ema is not None:
            ema.copy_to_params()  # the average is the result (unless a best state wins)
        for c, m in enumerate(sel):
            if best_state[c] is not None:
                self._restore_member(m, best_state[c])
        model.eval()
        cm.reset()
        cm.metadata.setdefault("history", []).append(
            {
                "n_labels": len(labels),
                "n_val": int(n_val),
                "epochs": len(history),
                "steps": step,
                "members": sel,
                "final": history[-1] if history else {},
                "settings": asdict(s),
            }
        )
        return history

    def _cosine_lr(self, step: int, n_train: int) -> float:
        """Learning rate at ``step`` of a call planned for its step budget (cosine decay)."""
        s = self.settings
        planned = s.max_epochs * -(-n_train // s.batch_size)
        if s.max_steps is not None:
            planned = min(planned, s.max_steps)
        frac = min(1.0, step / max(1, planned))
        return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1.0 + math.cos(math.pi * frac))

    def evaluate(
        self, labels: Sequence[Atoms], *, members: Sequence[int] | None = None
    ) -> dict[str, list[float]]:
        """Per-member validation loss and MAEs (energy eV/atom, forces eV/Å) on ``labels``."""
        cm = self.committee
        sel = list(range(cm.n_members)) if members is None else list(members)
        energies, forces = label_arrays(labels, cm.n_states)
        idx = np.arange(len(labels))
        out: dict[str, list[list[float]]] = {
            "val_loss": [],
            "val_energy_mae": [],
            "val_forces_mae": [],
        }
        for start in range(0, len(idx), 32):
            batch = idx[start : start + 32]
            w = np.ones((len(sel), len(batch)))
            loss, e_mae, f_mae = self._loss(
                labels, energies, forces, batch, sel, weights=w, training=False, with_mae=True
            )
            out["val_loss"].append((loss.detach().cpu().numpy() * len(batch)).tolist())
            out["val_energy_mae"].append((e_mae * len(batch)).tolist())
            out["val_forces_mae"].append((f_mae * len(batch)).tolist())
        return {k: (np.sum(v, axis=0) / len(idx)).tolist() for k, v in out.items()}

    def _loss(
        self,
        labels: Sequence[Atoms],
        energies: np.ndarray,
        forces: list[np.ndarray],
        batch: np.ndarray,
        sel: list[int],
        *,
        weights: np.ndarray,
        training: bool,
        with_mae: bool = False,
    ) -> Any:
        s = self.settings
        return committee_loss(
            self.committee,
            [labels[i] for i in batch],
            energies[batch],
            [forces[i] for i in batch],
            sel,
            weights=weights,
            training=training,
            energy_weight=s.energy_weight,
            forces_weight=s.forces_weight,
            with_mae=with_mae,
        )

    def _member_state(self, m: int) -> Any:
        return member_state(self.committee, m)

    def _restore_member(self, m: int, state: Any) -> None:
        restore_member(self.committee, m, state)
