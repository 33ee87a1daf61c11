"""Batched neighbour graphs for committee backends.

A committee sees a structure as a graph: nodes are atoms, each with a *species* index
(element, total charge and multiplicity of the structure: see
:mod:`~pal_atoms.calculators.species`), edges join atoms closer than the cutoff (both
directions, periodic images included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from .species import SpeciesTable, total_charge

__all__ = ["Graph", "SpeciesTable", "build_graph", "total_charge"]


@dataclass
class Graph:
    """A batch of structures as one disjoint graph (tensors on one device).

    Attributes:
        positions: Cartesian positions in Å. Shape: ``[n_nodes, 3]``.
        species: Species index of each node. Shape: ``[n_nodes]``.
        batch: Structure index of each node. Shape: ``[n_nodes]``.
        edge_index: ``(sender, receiver)`` node indices. Shape: ``[2, n_edges]``.
        unit_shifts: Integer cell translations of the receiver image. Shape: ``[n_edges, 3]``.
        cell: Cell vectors in Å (zeros for molecules). Shape: ``[n_graphs, 3, 3]``.
        n_atoms: Atoms per structure. Shape: ``[n_graphs]``.
        periodic: Whether each structure has a periodic direction. Shape: ``[n_graphs]``.
    """

    positions: torch.Tensor
    species: torch.Tensor
    batch: torch.Tensor
    edge_index: torch.Tensor
    unit_shifts: torch.Tensor
    cell: torch.Tensor
    n_atoms: torch.Tensor
    periodic: torch.Tensor

    @property
    def n_graphs(self) -> int:
        """Number of structures."""
        return int(self.n_atoms.shape[0])


def _edges(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if atoms.pbc.any():
        i, j, shifts = neighbor_list("ijS", atoms, cutoff)
        return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.float64)
    pos = atoms.positions
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    i, j = np.nonzero(d < cutoff)
    return i.astype(np.int64), j.astype(np.int64), np.zeros((len(i), 3))


def build_graph(
    structures: Sequence[Atoms],
    species: SpeciesTable,
    cutoff: float,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> Graph:
    """Validate ``structures`` and build their batched neighbour graph.

    Args:
        structures: Structures to batch (not modified).
        species: Node types of the committee.
        cutoff: Neighbour cutoff in Å.
        device: Device of the returned tensors.
        dtype: Floating dtype of positions and cells.

    Raises:
        StructureError: a structure is empty, has NaN/inf coordinates, or an element or
            total charge the committee does not cover.
    """
    if len(structures) == 0:
        raise ValueError("no structures to evaluate")
    pos, spec, batch, send, recv, shifts, cells, n_atoms, periodic = ([] for _ in range(9))
    offset = 0
    for g, atoms in enumerate(structures):
        what = "structure" if len(structures) == 1 else f"structure {g}"
        spec.append(species.indices(atoms, what=what))
        i, j, s = _edges(atoms, cutoff)
        pos.append(atoms.positions)
        batch.append(np.full(len(atoms), g, dtype=np.int64))
        send.append(i + offset)
        recv.append(j + offset)
        shifts.append(s)
        cells.append(atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3)))
        n_atoms.append(len(atoms))
        periodic.append(bool(atoms.pbc.any()))
        offset += len(atoms)

    def t(x: list[np.ndarray], kind: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.concatenate(x), dtype=kind, device=device)

    return Graph(
        positions=t(pos, dtype),
        species=t(spec, torch.int64),
        batch=t(batch, torch.int64),
        edge_index=torch.stack([t(send, torch.int64), t(recv, torch.int64)]),
        unit_shifts=t(shifts, dtype),
        cell=torch.as_tensor(np.stack(cells), dtype=dtype, device=device),
        n_atoms=torch.as_tensor(n_atoms, dtype=torch.int64, device=device),
        periodic=torch.as_tensor(periodic, dtype=torch.bool, device=device),
    )
