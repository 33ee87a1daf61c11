"""Pieces of committee training: label arrays, E0 fit, weight averaging."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from ase import Atoms

__all__ = ["EMA", "fit_e0", "label_arrays"]


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


def label_arrays(structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies (eV, shape ``[n]``) and forces (eV/Å, ``[n_atoms_k, 3]`` each) of labels.

    Raises:
        ValueError: a structure without a calculator, or with non-finite values.
    """
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
