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

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms

from pal_atoms.errors import ConfigError

from .committee import CommitteeCalculator
from .graph import build_graph

__all__ = ["CommitteeTrainer", "TrainerSettings", "fit_e0"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainerSettings:
    """Settings of :class:`CommitteeTrainer`.

    Attributes:
        max_epochs: Upper bound on passes over the training labels per :meth:`train` call.
        max_steps: Upper bound on optimizer steps per call (``None``: epochs only). Small
            label sets need many passes: a budget in steps, not epochs, is what makes a
            round on 16 labels train as long as one on 500.
        lr: Peak Adam learning rate.
        schedule: ``"cosine"``: the learning rate falls from ``lr`` to ``min_lr`` over the
            call's planned steps (``min(max_steps, max_epochs * batches per epoch)``);
            ``"plateau"``: halve it after ``lr_patience`` epochs without a better
            validation loss.
        batch_size: Structures per step.
        energy_weight: Weight of the energy term, mean squared error per atom (eV²).
        forces_weight: Weight of the force term, mean squared component error (eV²/Å²).
        validation_fraction: Fraction of labels held out for early stopping (0 disables it).
        min_validation_labels: Hold labels out only from this many labels on: with fewer,
            a validation set of one or two structures is noise, and every label is needed
            for training.
        patience: Stop after this many epochs without a better validation loss (per member).
        lr_patience: Halve the learning rate after this many epochs without improvement.
        min_lr: Learning rate floor.
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
    lr: float = 1e-2
    schedule: str = "cosine"
    batch_size: int = 4
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    validation_fraction: float = 0.1
    min_validation_labels: int = 20
    patience: int = 50
    lr_patience: int = 8
    min_lr: float = 1e-4
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
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.lr_patience >= 1, f"lr_patience must be >= 1, got {self.lr_patience}"),
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
                self.dtype in (None, "float32", "float64"),
                f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _labels(structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
    energies, forces = [], []
    for k, atoms in enumerate(structures):
        if atoms.calc is None:
            raise ValueError(f"label {k} has no calculator with energy and forces attached")
        e = float(atoms.get_potential_energy())
        f = np.asarray(atoms.get_forces(), dtype=float)
        if not (np.isfinite(e) and np.all(np.isfinite(f))):
            raise ValueError(f"label {k} has non-finite energy or forces")
        energies.append(e)
        forces.append(f)
    return np.asarray(energies), forces


def fit_e0(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Least-squares E0 per species: ``energies ≈ counts @ e0``.

    Args:
        counts: Atoms of each species per structure. Shape: ``[n_structures, n_species]``.
        energies: Total energies in eV. Shape: ``[n_structures]``.

    Returns:
        E0 in eV per species (0 for species absent from the data). Shape: ``[n_species]``.
    """
    e0 = np.zeros(counts.shape[1])
    present = counts.sum(axis=0) > 0
    if present.any():
        sol, *_ = np.linalg.lstsq(counts[:, present].astype(float), energies, rcond=None)
        e0[present] = sol
    return e0


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
        energies, forces = _labels(labels)
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

        boot = np.ones((len(sel), n))
        if s.bootstrap:
            for c, m in enumerate(sel):
                draw = np.random.default_rng([s.seed, m, n]).choice(train_idx, len(train_idx))
                boot[c] = np.bincount(draw, minlength=n)

        torch.manual_seed(s.seed + self._calls)
        self._calls += 1
        best = [np.inf] * len(sel)
        best_state: list[Any] = [None] * len(sel)
        stale = [0] * len(sel)
        lr_stale, best_total = 0, np.inf
        history: list[dict[str, Any]] = []
        step = 0
        model.train()
        for epoch in range(s.max_epochs):
            extra = list(more_labels()) if more_labels is not None else []
            if extra:
                new_e, new_f = _labels(extra)
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
                    planned = s.max_epochs * -(-len(train_idx) // s.batch_size)
                    if s.max_steps is not None:
                        planned = min(planned, s.max_steps)
                    frac = min(1.0, step / max(1, planned))
                    for group in opt.param_groups:
                        group["lr"] = s.min_lr + 0.5 * (s.lr - s.min_lr) * (
                            1 + math.cos(math.pi * frac)
                        )
                loss_m = self._loss(
                    labels, energies, forces, batch, sel, weights=boot[:, batch], training=True
                )
                opt.zero_grad(set_to_none=True)
                loss_m.sum().backward()
                opt.step()
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
                val = self.evaluate([labels[i] for i in val_idx], members=sel)
                record.update(val)
                total = float(np.sum(val["val_loss"]))
                # Shared mode: members share the backbone, so they stop and restore together.
                scores = [total] * len(sel) if model.mode == "shared" else val["val_loss"]
                for c, m in enumerate(sel):
                    if scores[c] < best[c]:
                        best[c], stale[c] = scores[c], 0
                        best_state[c] = self._member_state(m)
                    else:
                        stale[c] += 1
                if total < best_total:
                    best_total, lr_stale = total, 0
                elif s.schedule == "plateau":
                    lr_stale += 1
                    if lr_stale >= s.lr_patience:
                        lr_stale = 0
                        for group in opt.param_groups:
                            group["lr"] = max(group["lr"] * 0.5, s.min_lr)
            history.append(record)
            logger.debug("epoch %d: %s", epoch, record)
            if n_val and min(stale) >= s.patience:
                break
            if s.max_steps is not None and step >= s.max_steps:
                break
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
        energies, forces = _labels(labels)
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
        cm, s = self.committee, self.settings
        model = cm.model
        graph = build_graph(
            [labels[i] for i in batch], cm.species, cm.cutoff, device=cm.device, dtype=cm.dtype
        )
        dtype = cm.dtype
        target_e = torch.as_tensor(energies[batch], device=cm.device) - model.e0_sum(graph)
        target_f = torch.as_tensor(np.concatenate([forces[i] for i in batch]), device=cm.device)
        with torch.set_grad_enabled(True):
            out = model(graph, forces=True, members=sel, create_graph=training)
        n_atoms = graph.n_atoms.to(dtype)
        e_err = (out["energy"] - target_e.to(dtype)) / n_atoms
        f_sq = ((out["forces"] - target_f.to(dtype)) ** 2).sum(-1)
        f_per = torch.zeros_like(e_err).index_add(1, graph.batch, f_sq) / (3 * n_atoms)
        per_struct = s.energy_weight * e_err**2 + s.forces_weight * f_per
        w = torch.as_tensor(weights, dtype=dtype, device=cm.device)
        loss = (w * per_struct).sum(-1) / w.sum(-1).clamp(min=1.0)
        if not with_mae:
            return loss
        f_abs = (out["forces"] - target_f.to(dtype)).abs().mean(dim=(1, 2))
        return (
            loss.detach(),
            e_err.detach().abs().mean(-1).cpu().numpy(),
            f_abs.detach().cpu().numpy(),
        )

    def _member_state(self, m: int) -> Any:
        model = self.committee.model
        bb = model.backbones[0 if model.mode == "shared" else m]
        return (copy.deepcopy(bb.state_dict()), copy.deepcopy(model.heads[m].state_dict()))

    def _restore_member(self, m: int, state: Any) -> None:
        model = self.committee.model
        bb = model.backbones[0 if model.mode == "shared" else m]
        bb.load_state_dict(state[0])
        model.heads[m].load_state_dict(state[1])
