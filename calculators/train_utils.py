"""Pieces of committee training: label arrays, E0 fit, weight averaging."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from .graph import build_graph

__all__ = [
    "EMA",
    "committee_loss",
    "fit_e0",
    "label_arrays",
    "member_state",
    "restore_member",
]


class EMA:
    """Exponential moving average of parameters, swapped in for evaluation.

    Args:
        params: The live parameters (updated in place by the optimizer).
        decay: Averaging factor per step (the warm-up lowers it for early steps).
    """

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]
        self.n = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameters into the average (after an optimizer step)."""
        # Warm-up (as torch_ema/MACE): early on the average must not drag in the start.
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for e, p in zip(self.shadow, self.params, strict=True):
            e.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Overwrite the live parameters with the average."""
        for e, p in zip(self.shadow, self.params, strict=True):
            p.copy_(e)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Use the averaged weights inside the block, the live ones after it."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
            self.copy_to_params()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live, strict=True):
                    p.copy_(v)


def label_arrays(
    structures: Sequence[Atoms], n_states: int = 1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies and forces of labels, as the committee's loss takes them.

    Args:
        structures: Labelled structures (a calculator holding the results).
        n_states: States the committee predicts. With 1, the label's energy and forces;
            with more, its first ``n_states`` of ``state_energies``/``state_forces``.

    Returns:
        Energies in eV, shape ``[n]`` (``[n, n_states]`` with several states), and forces
        in eV/Å, ``[n_atoms_k, 3]`` each (``[n_atoms_k, n_states, 3]``).

    Raises:
        ValueError: a structure without a calculator, with non-finite values, or with
            fewer labelled states than ``n_states``.
    """
    energies, forces = [], []
    for k, atoms in enumerate(structures):
        if atoms.calc is None:
            raise ValueError(f"label {k} has no calculator with energy and forces attached")
        if n_states > 1:
            results = atoms.calc.results
            have = len(results.get("state_energies", ()))
            if have < n_states:
                raise ValueError(
                    f"label {k} has {have or 1} electronic state(s); the committee predicts "
                    f"{n_states}"
                )
            e: Any = np.asarray(results["state_energies"][:n_states], dtype=float)
            f = np.asarray(results["state_forces"][:n_states], dtype=float).transpose(1, 0, 2)
        else:
            e = float(atoms.get_potential_energy())
            f = np.asarray(atoms.get_forces(), dtype=float)
        if not (np.all(np.isfinite(e)) and np.all(np.isfinite(f))):
            raise ValueError(f"label {k} has non-finite energy or forces")
        energies.append(e)
        forces.append(f)
    return np.asarray(energies), forces


def fit_e0(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Least-squares E0 per species: ``energies ≈ counts @ e0``.

    Args:
        counts: Atoms of each species per structure. Shape: ``[n_structures, n_species]``.
        energies: Total energies in eV. Shape: ``[n_structures]``, or
            ``[n_structures, n_states]``, of which the ground state (column 0) is fitted.

    Returns:
        E0 in eV per species (0 for species absent from the data). Shape: ``[n_species]``.
    """
    energies = np.asarray(energies, dtype=float)
    if energies.ndim == 2:
        energies = energies[:, 0]
    e0 = np.zeros(counts.shape[1])
    present = counts.sum(axis=0) > 0
    if present.any():
        sol, *_ = np.linalg.lstsq(counts[:, present].astype(float), energies, rcond=None)
        e0[present] = sol
    return e0


def committee_loss(
    cm: Any,
    structures: Sequence[Atoms],
    energies: np.ndarray,
    forces: Sequence[np.ndarray],
    sel: list[int],
    *,
    weights: np.ndarray,
    training: bool,
    energy_weight: float,
    forces_weight: float,
    with_mae: bool = False,
) -> Any:
    """Weighted E+F loss of members ``sel`` on one batch of labelled structures.

    Args:
        cm: The committee calculator (its model, species, cutoff, device, dtype).
        structures: The batch's structures.
        energies: Their reference energies in eV. Shape: ``[batch]`` (``[batch, S]`` for a
            committee of S states: the loss then averages over states).
        forces: Their reference forces in eV/Å, ``[n_atoms_k, 3]`` each
            (``[n_atoms_k, S, 3]``).
        sel: Member indices evaluated.
        weights: Per-member, per-structure loss weights (bootstrap counts).
            Shape: ``[len(sel), batch]``.
        training: Build the graph of the force derivatives for a backward pass.
        energy_weight: Weight of the per-atom energy MSE (eV²).
        forces_weight: Weight of the force-component MSE (eV²/Å²).
        with_mae: Also return per-member energy MAE (eV/atom) and force MAE (eV/Å).

    Returns:
        The loss per member (a tensor, shape ``[len(sel)]``); with ``with_mae`` a tuple
        ``(loss, energy_mae, forces_mae)`` of detached values.
    """
    model = cm.model
    graph = build_graph(list(structures), cm.species, cm.cutoff, device=cm.device, dtype=cm.dtype)
    dtype = cm.dtype
    energies = np.asarray(energies)
    e0 = model.e0_sum(graph)
    target_e = torch.as_tensor(energies, device=cm.device) - (
        e0 if energies.ndim == 1 else e0[:, None]
    )
    target_f = torch.as_tensor(np.concatenate(list(forces)), device=cm.device)
    with torch.set_grad_enabled(True):
        out = model(graph, forces=True, members=sel, create_graph=training)
    n_atoms = graph.n_atoms.to(dtype)
    e_err = (out["energy"] - target_e.to(dtype)) / (
        n_atoms if energies.ndim == 1 else n_atoms[:, None]
    )
    f_sq = ((out["forces"] - target_f.to(dtype)) ** 2).sum(-1)
    if energies.ndim == 2:  # several states: mean over states of each structure's error
        e_err_sq, f_sq = (e_err**2).mean(-1), f_sq.mean(-1)
    else:
        e_err_sq = e_err**2
    f_per = torch.zeros_like(e_err_sq).index_add(1, graph.batch, f_sq) / (3 * n_atoms)
    per_struct = energy_weight * e_err_sq + forces_weight * f_per
    w = torch.as_tensor(weights, dtype=dtype, device=cm.device)
    loss = (w * per_struct).sum(-1) / w.sum(-1).clamp(min=1.0)
    if not with_mae:
        return loss
    f_abs = (out["forces"] - target_f.to(dtype)).abs().flatten(1).mean(-1)
    return (
        loss.detach(),
        e_err.detach().abs().flatten(1).mean(-1).cpu().numpy(),
        f_abs.detach().cpu().numpy(),
    )


def member_state(cm: Any, m: int) -> Any:
    """Copy of member ``m``'s backbone and head state dicts."""
    model = cm.model
    bb = model.backbones[0 if model.mode == "shared" else m]
    return (copy.deepcopy(bb.state_dict()), copy.deepcopy(model.heads[m].state_dict()))


def restore_member(cm: Any, m: int, state: Any) -> None:
    """Load a state from :func:`member_state` back into member ``m``."""
    model = cm.model
    bb = model.backbones[0 if model.mode == "shared" else m]
    bb.load_state_dict(state[0])
    model.heads[m].load_state_dict(state[1])
