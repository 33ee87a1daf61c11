"""The generator interface shared by MD, saddle searches, NEB and user dynamics.

A generator proposes geometries, sends each one through a
:class:`~pal_atoms.core.protocols.PredictionClient`, and reacts to the verdict. ``irun`` is an
iterator with one :class:`GeneratorEvent` per step, like ASE's ``Dynamics.irun``, so a
controller can interleave several generators on one rank round-robin. ``state()`` /
``restore()`` make a generator resumable after a crash.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.protocols import PredictionClient, Verdict

from .forwarding import UnphysicalStateError

__all__ = [
    "Action",
    "Generator",
    "GeneratorEvent",
    "PatiencePolicy",
    "atoms_from_dict",
    "atoms_to_dict",
    "check_geometry",
    "n_fragments",
]

logger = logging.getLogger(__name__)


class Action(str, enum.Enum):
    """What a generator did after a step."""

    CONTINUE = "continue"  # carry on from the new geometry
    RESTART = "restart"  # jumped back (last trusted frame, initial structure, new guess)
    FINISHED = "finished"  # converged or out of budget; irun yields nothing more

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class GeneratorEvent:
    """One step of a generator.

    Attributes:
        generator_id: Id of the generator.
        step: The generator's step index (1 for its first step, counted across ``irun``
            calls and restarts).
        verdict: Verdict of the step's geometry (the most severe one if the step needed
            several predictions, e.g. NEB images); ``None`` if nothing was predicted
            because the geometry was rejected as unphysical first.
        action: What the generator did next.
        reason: Why it restarted or finished (empty for ``CONTINUE``).
        n_evaluations: Predictions requested during this step.
        energy: Potential energy of the step's geometry in eV (``None`` if unknown).
    """

    generator_id: int
    step: int
    verdict: Verdict | None
    action: Action
    reason: str = ""
    n_evaluations: int = 0
    energy: float | None = None


@dataclass(kw_only=True)
class PatiencePolicy:
    """PAL's patience: how long to carry on through uncertain predictions.

    ``patience`` consecutive uncertain steps are tolerated; the next uncertain step, or
    any untrusted one, asks for a restart. A trusted step resets the count.

    Args:
        patience: Number of consecutive uncertain steps tolerated (>= 0).
        n_uncertain: Current count of consecutive uncertain steps.
    """

    patience: int
    n_uncertain: int = 0

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def judge(self, verdict: Verdict) -> str:
        """Update the count with ``verdict``; return a restart reason, or ``""`` to go on."""
        if verdict is Verdict.TRUSTED:
            self.n_uncertain = 0
            return ""
        if verdict is Verdict.UNTRUSTED or verdict is Verdict.FAILED:
            self.n_uncertain = 0
            return f"{verdict} prediction"
        self.n_uncertain += 1
        if self.n_uncertain > self.patience:
            self.n_uncertain = 0
            return f"patience exhausted ({self.patience} uncertain steps)"
        return ""


class Generator(abc.ABC):
    """Base class of every generator.

    Subclasses implement :meth:`irun`, :meth:`state` and :meth:`restore`.

    Args:
        generator_id: Id of this generator (unique within a run; provenance).

    Attributes:
        step: Steps taken so far (across ``irun`` calls).
        n_restarts: Restarts so far.
        done: True once a ``FINISHED`` event was emitted.
    """

    def __init__(self, *, generator_id: int = 0) -> None:
        if int(generator_id) < 0:
            raise ValueError(f"generator_id must be >= 0, got {generator_id}")
        self.generator_id = int(generator_id)
        self.step = 0
        self.n_restarts = 0
        self.done = False

    @abc.abstractmethod
    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """Run as an iterator, one event per step.

        Args:
            client: Where predictions and verdicts come from.
            max_steps: Steps to take in this call at most (``None``: until finished).
                A later call continues where this one stopped.

        Yields:
            One :class:`GeneratorEvent` per step; the last one of a finished generator
            has ``action == FINISHED``.
        """

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Return everything needed to resume: JSON-serialisable (lists, numbers, str)."""

    @abc.abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Resume from a dictionary made by :meth:`state` of a generator of this kind."""

    def run(self, client: PredictionClient, max_steps: int | None = None) -> list[GeneratorEvent]:
        """Run ``irun`` to its end and return all events."""
        return list(self.irun(client, max_steps))

    def _base_state(self) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "generator_id": self.generator_id,
            "step": self.step,
            "n_restarts": self.n_restarts,
            "done": self.done,
        }

    def _restore_base(self, state: dict[str, Any]) -> None:
        kind = state.get("kind")
        if kind != type(self).__name__:
            raise ValueError(f"state of a {kind!r} cannot restore a {type(self).__name__}")
        self.generator_id = int(state["generator_id"])
        self.step = int(state["step"])
        self.n_restarts = int(state["n_restarts"])
        self.done = bool(state["done"])


def atoms_to_dict(atoms: Atoms, *, momenta: bool = True) -> dict[str, Any]:
    """JSON-serialisable dict of a structure (numbers, positions in Å, cell, pbc, info).

    Only JSON-friendly ``atoms.info`` entries (numbers, strings, booleans) are kept.
    Momenta (amu·Å/fs·ASE units, shape ``(n_atoms, 3)``) are kept when ``momenta``.
    """
    info = {k: v.item() if isinstance(v, np.generic) else v for k, v in atoms.info.items()}
    out: dict[str, Any] = {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
        "info": {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))},
    }
    if momenta and atoms.has("momenta"):
        out["momenta"] = atoms.get_momenta().tolist()
    return out


def atoms_from_dict(data: dict[str, Any]) -> Atoms:
    """Inverse of :func:`atoms_to_dict`."""
    atoms = Atoms(
        numbers=data["numbers"],
        positions=data["positions"],
        cell=data["cell"],
        pbc=data["pbc"],
        info=dict(data.get("info", {})),
    )
    if "momenta" in data:
        atoms.set_momenta(np.asarray(data["momenta"], dtype=float))
    return atoms


def _pair_graph(atoms: Atoms, cutoff_A: float) -> Any:
    """Sparse symmetric matrix of the pair distances below ``cutoff_A`` (Å), O(N log N)."""
    from scipy.sparse import coo_matrix

    n = len(atoms)
    if atoms.pbc.any():
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", atoms, cutoff_A)
    else:
        from scipy.spatial import cKDTree

        pos = atoms.positions
        pairs = cKDTree(pos).query_pairs(cutoff_A, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        d = np.linalg.norm(pos[i] - pos[j], axis=1)
    return coo_matrix((d + 1e-300, (i, j)), shape=(n, n)).tocsr()


def _dense_groups(adjacent: np.ndarray) -> int:
    """Connected groups of a small dense boolean adjacency matrix (frontier expansion)."""
    n = len(adjacent)
    a = adjacent.astype(np.float32)
    seen = np.zeros(n, dtype=bool)
    groups = 0
    while not seen.all():
        groups += 1
        reach = np.zeros(n, dtype=np.float32)
        reach[int(np.argmin(seen))] = 1.0
        count = 1.0
        while True:
            reach = np.minimum(reach + a @ reach, 1.0)
            grown = float(reach.sum())
            if grown == count:
                break
            count = grown
        seen |= reach > 0
    return groups


def _dense_distances(pos: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    d = cdist(pos, pos)
    d[np.diag_indices(len(pos))] = np.inf
    return d


#: Up to this many atoms (non-periodic), geometry checks use dense distance matrices.
_DENSE_MAX = 256


def n_fragments(atoms: Atoms, bond_A: float) -> int:
    """Number of connected groups of atoms, bonding atoms closer than ``bond_A`` (Å)."""
    n = len(atoms)
    if n < 2:
        return n
    if n <= _DENSE_MAX and not atoms.pbc.any():
        return _dense_groups(_dense_distances(atoms.positions) < bond_A)
    from scipy.sparse.csgraph import connected_components

    count, _ = connected_components(_pair_graph(atoms, bond_A), directed=False)
    return int(count)


def check_geometry(
    atoms: Atoms, *, min_distance_A: float | None, max_distance_A: float | None
) -> None:
    """Reject an unphysical geometry before it is predicted.

    Args:
        atoms: Geometry.
        min_distance_A: Atoms closer than this (Å) are unphysical; ``None`` skips the test.
        max_distance_A: Fragment criterion: atoms closer than this (Å) are connected, and a
            structure that falls into more than one connected group has fragments flying
            apart; ``None`` skips the test.

    Raises:
        UnphysicalStateError: Non-finite coordinates, atoms too close, or fragments.
    """
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        raise UnphysicalStateError("non-finite coordinates")
    if len(atoms) < 2 or (min_distance_A is None and max_distance_A is None):
        return
    n = len(atoms)
    if n <= _DENSE_MAX and not atoms.pbc.any():
        d = _dense_distances(pos)
        if min_distance_A is not None:
            k = int(np.argmin(d))
            if d.flat[k] < min_distance_A:
                raise UnphysicalStateError(
                    f"atoms {k // n} and {k % n} are {d.flat[k]:.3f} Å apart (< {min_distance_A} Å)"
                )
        if max_distance_A is not None:
            groups = _dense_groups(d < max_distance_A)
            if groups > 1:
                raise UnphysicalStateError(
                    f"structure split into {groups} fragments (no "
                    f"contact within {max_distance_A} Å)"
                )
        return
    cutoff = max(x for x in (min_distance_A, max_distance_A) if x is not None)
    graph = _pair_graph(atoms, cutoff)
    if min_distance_A is not None and graph.nnz:
        k = int(np.argmin(graph.data))
        if graph.data[k] < min_distance_A:
            i = int(np.searchsorted(graph.indptr, k, side="right") - 1)
            j = int(graph.indices[k])
            raise UnphysicalStateError(
                f"atoms {i} and {j} are {graph.data[k]:.3f} Å apart (< {min_distance_A} Å)"
            )
    if max_distance_A is not None:
        from scipy.sparse.csgraph import connected_components

        groups, _ = connected_components(graph, directed=False)
        if groups > 1:
            raise UnphysicalStateError(
                f"structure split into {groups} fragments (no contact within {max_distance_A} Å)"
            )
