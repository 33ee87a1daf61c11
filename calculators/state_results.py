"""Results of a committee of several electronic states, from its member predictions.

See :mod:`pal_atoms.calculators.committee` for the definitions of the keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["STATE_PROPERTIES", "state_results"]

#: Results of a committee of several states only.
STATE_PROPERTIES = (
    "state_energies",
    "state_forces",
    "gaps",
    "state_energies_std",
    "state_forces_std",
    "state_energies_comm",
    "state_forces_comm",
)


def state_results(
    energy: np.ndarray,
    forces: np.ndarray,
    n_atoms: np.ndarray,
    active: Sequence[int],
    scale: float,
) -> list[dict[str, Any]]:
    """Calculator results per structure from member energies and forces of every state.

    Args:
        energy: Member energies in eV, E0s included. Shape: ``[M, n_graphs, S]``.
        forces: Member forces in eV/Å. Shape: ``[M, n_nodes, S, 3]``.
        n_atoms: Atoms per structure. Shape: ``[n_graphs]``.
        active: Active state of each structure (its ``energy``/``forces``).
        scale: Calibration factor of the force spread.

    Returns:
        One results dict per structure.
    """
    bounds = np.concatenate([[0], np.cumsum(n_atoms)])
    results = []
    for g, state in enumerate(active):
        e_comm = energy[:, g]  # [M, S]
        f_comm = forces[:, bounds[g] : bounds[g + 1]].transpose(0, 2, 1, 3)  # [M, S, n, 3]
        f_std = np.linalg.norm(f_comm.std(axis=0), axis=-1)  # [S, n]
        e_mean = e_comm.mean(axis=0)
        f_mean = f_comm.mean(axis=0)
        worst = f_std.max(axis=0)  # a trajectory can hop to any state
        results.append(
            {
                "energy": float(e_mean[state]),
                "free_energy": float(e_mean[state]),
                "forces": f_mean[state].copy(),
                "energy_std": float(e_comm[:, state].std()),
                "forces_std": scale * worst,
                "max_force_std": scale * float(worst.max()),
                "forces_std_raw": worst,
                "max_force_std_raw": float(worst.max()),
                "energy_comm": e_comm[:, state].copy(),
                "forces_comm": f_comm[:, state].copy(),
                "state_energies": e_mean,
                "state_forces": f_mean,
                "gaps": np.diff(e_mean),
                "state_energies_std": e_comm.std(axis=0),
                "state_forces_std": scale * f_std,
                "state_energies_comm": e_comm.copy(),
                "state_forces_comm": f_comm.copy(),
            }
        )
    return results
