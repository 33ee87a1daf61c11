"""The controller's buffer of structures waiting for the oracle (PAL's oracle list).

Most uncertain first, capped, with a diversity filter against near-duplicates (from one
trajectory or across generators), and re-scored with the new committee after training.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["Candidate", "OracleQueue", "distance_fingerprint"]

logger = logging.getLogger(__name__)


def distance_fingerprint(atoms: Atoms) -> np.ndarray:
    """Sorted interatomic distances in Å: invariant to rotation, translation, permutation.

    Shape: ``(n_atoms * (n_atoms - 1) / 2,)``.
    """
    pos = atoms.positions
    i, j = np.triu_indices(len(atoms), k=1)
    if atoms.pbc.any():
        d = atoms.get_all_distances(mic=True)[i, j]
    else:
        d = np.linalg.norm(pos[i] - pos[j], axis=1)
    return np.sort(d)


def _system_key(atoms: Atoms) -> tuple[str, int]:
    return atoms.get_chemical_formula(mode="hill"), int(atoms.info.get("charge", 0))


@dataclass(order=True)
class Candidate:
    """A structure selected for labelling.

    Attributes:
        priority: Sort key (negative uncertainty: most uncertain first).
        atoms: Geometry with ``charge``/``multiplicity`` in ``info``.
        uncertainty: The committee's ``max_force_std`` in eV/Å when selected.
        generator_id: Generator that proposed it.
        step: That generator's step.
    """

    priority: float
    order: int
    atoms: Atoms = field(compare=False)
    uncertainty: float = field(compare=False)
    generator_id: int = field(compare=False, default=-1)
    step: int = field(compare=False, default=-1)


class OracleQueue:
    """Priority queue of candidates with a cap and a diversity filter.

    Args:
        cap: Most candidates kept; beyond it the least uncertain one is dropped.
        diversity_A: RMS difference of :func:`distance_fingerprint` (Å) under which a new
            candidate counts as a duplicate of a queued or recently labelled one (0: off).
        memory: Recently labelled fingerprints remembered per system.
    """

    def __init__(self, *, cap: int = 64, diversity_A: float = 0.02, memory: int = 256):
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = cap
        self.diversity_A = diversity_A
        self._heap: list[Candidate] = []
        self._order = itertools.count()
        self._recent: dict[tuple[str, int], deque[np.ndarray]] = defaultdict(
            lambda: deque(maxlen=memory)
        )
        self.n_duplicates = 0
        self.n_dropped = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Candidate]:
        return iter(sorted(self._heap))

    def _is_duplicate(self, atoms: Atoms, fp: np.ndarray) -> bool:
        if self.diversity_A <= 0 or fp.size == 0:
            return False
        key = _system_key(atoms)
        pool = list(self._recent[key])
        pool += [distance_fingerprint(c.atoms) for c in self._heap if _system_key(c.atoms) == key]
        return any(
            np.sqrt(np.mean((other - fp) ** 2)) < self.diversity_A
            for other in pool
            if other.shape == fp.shape
        )

    def push(
        self, atoms: Atoms, uncertainty: float, *, generator_id: int = -1, step: int = -1
    ) -> bool:
        """Offer a candidate; return ``False`` if it was a duplicate or not kept."""
        fp = distance_fingerprint(atoms)
        if self._is_duplicate(atoms, fp):
            self.n_duplicates += 1
            return False
        cand = Candidate(
            -float(uncertainty),
            next(self._order),
            atoms.copy(),
            float(uncertainty),
            generator_id,
            step,
        )
        heapq.heappush(self._heap, cand)
        if len(self._heap) > self.cap:
            worst = max(self._heap)
            self._heap.remove(worst)
            heapq.heapify(self._heap)
            self.n_dropped += 1
            return worst is not cand
        return True

    def pop(self) -> Candidate:
        """Remove and return the most uncertain candidate; remember it as labelled."""
        cand = heapq.heappop(self._heap)
        self._recent[_system_key(cand.atoms)].append(distance_fingerprint(cand.atoms))
        return cand

    def drain(self) -> list[Candidate]:
        """Remove and return every candidate (e.g. to record them as cancelled)."""
        out = sorted(self._heap)
        self._heap.clear()
        return out

    def rescore(
        self, score: Callable[[list[Atoms]], list[float]], *, keep_below: float = 0.0
    ) -> int:
        """Re-rank with a new committee (PAL's dynamic oracle list).

        Args:
            score: Maps a list of structures to their new uncertainties (eV/Å).
            keep_below: Candidates whose new uncertainty is below this value are now
                trusted and leave the queue.

        Returns:
            Number of candidates removed.
        """
        if not self._heap:
            return 0
        cands = list(self._heap)
        new = score([c.atoms for c in cands])
        kept = []
        for c, u in zip(cands, new, strict=True):
            if u >= keep_below:
                kept.append(
                    Candidate(-float(u), c.order, c.atoms, float(u), c.generator_id, c.step)
                )
        self._heap = kept
        heapq.heapify(self._heap)
        removed = len(cands) - len(kept)
        if removed:
            logger.info("re-scored oracle queue: %d of %d now trusted", removed, len(cands))
        return removed

    def reprioritise(self, uncertainties: dict[int, float], *, keep_below: float = 0.0) -> int:
        """Apply new uncertainties by candidate ``order`` (the MPI form of :meth:`rescore`).

        Candidates not in ``uncertainties`` (queued after the re-scoring started) keep their
        priority; those now below ``keep_below`` leave the queue. Returns how many left.
        """
        kept, removed = [], 0
        for c in self._heap:
            u = uncertainties.get(c.order)
            if u is None:
                kept.append(c)
            elif u >= keep_below:
                kept.append(Candidate(-u, c.order, c.atoms, u, c.generator_id, c.step))
            else:
                removed += 1
        self._heap = kept
        heapq.heapify(self._heap)
        return removed

    def stats(self) -> dict[str, Any]:
        """Queue length and filter counters."""
        return {"queued": len(self), "duplicates": self.n_duplicates, "dropped": self.n_dropped}
