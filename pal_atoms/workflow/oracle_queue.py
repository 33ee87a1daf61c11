"""The controller's buffer of structures waiting for the oracle (PAL's oracle list).

Capped, with a filter against near-duplicates (from one trajectory or across
generators), and re-scored with the new committee after training. Which candidate goes
next is the ``policy``: ``"uncertainty"`` takes the most uncertain; ``"diverse"`` weighs
uncertainty by novelty, ``u * (1 - exp(-(d / novelty_A)²))`` with ``d`` the distance
(RMS of sorted interatomic distances, Å) to the nearest structure of the same system
already labelled or sent to an oracle. Taken greedily, one after another, that is
farthest-point selection weighted by uncertainty: a batch is uncertain *and* spread out,
not the same uncertain region labelled again and again.
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

__all__ = ["POLICIES", "Candidate", "OracleQueue", "distance_fingerprint"]

#: Ways to pick the next candidate (module docstring).
POLICIES = ("uncertainty", "diverse")

logger = logging.getLogger(__name__)


def distance_fingerprint(atoms: Atoms) -> np.ndarray:
    """Sorted interatomic distances in Å: invariant to rotation, translation, permutation.

    Shape: ``(n_atoms * (n_atoms - 1) / 2,)``. A generic sample
    (:class:`~pal_atoms.core.samples.Sample`) gives its own (its input values).
    """
    own = getattr(atoms, "fingerprint", None)
    if callable(own):
        return np.asarray(own(), dtype=float)
    pos = atoms.positions
    i, j = np.triu_indices(len(atoms), k=1)
    if atoms.pbc.any():
        d = atoms.get_all_distances(mic=True)[i, j]
    else:
        d = np.linalg.norm(pos[i] - pos[j], axis=1)
    return np.sort(d)


def _system_key(atoms: Atoms) -> tuple[str, int]:
    own = getattr(atoms, "system_key", None)
    if callable(own):
        return own()
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
        policy: ``"uncertainty"`` or ``"diverse"`` (module docstring).
        novelty_A: Length scale of the novelty weight of ``"diverse"``, Å.
    """

    def __init__(
        self,
        *,
        cap: int = 64,
        diversity_A: float = 0.02,
        memory: int = 256,
        policy: str = "uncertainty",
        novelty_A: float = 0.1,
    ):
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if not novelty_A > 0:
            raise ValueError(f"novelty_A must be > 0, got {novelty_A}")
        self.policy, self.novelty_A = policy, float(novelty_A)
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

    def remember(self, atoms: Atoms) -> None:
        """Count ``atoms`` as labelled (e.g. the store's labels at the start of a run)."""
        self._recent[_system_key(atoms)].append(distance_fingerprint(atoms))

    def novelty(self, atoms: Atoms) -> float:
        """Distance (Å, RMS of sorted distances) to the nearest labelled structure (inf: none)."""
        fp = distance_fingerprint(atoms)
        d = [
            float(np.sqrt(np.mean((other - fp) ** 2)))
            for other in self._recent[_system_key(atoms)]
            if other.shape == fp.shape
        ]
        return min(d, default=float("inf"))

    def pop(self) -> Candidate:
        """Remove and return the next candidate (see ``policy``); remember it as labelled."""
        if self.policy == "diverse" and len(self._heap) > 1:
            weights = [
                1.0 - np.exp(-((self.novelty(c.atoms) / self.novelty_A) ** 2)) for c in self._heap
            ]
            best = max(range(len(self._heap)), key=lambda i: self._heap[i].uncertainty * weights[i])
            cand = self._heap.pop(best)
            heapq.heapify(self._heap)
        else:
            cand = heapq.heappop(self._heap)
        self.remember(cand.atoms)
        return cand

    def drain(self) -> list[Candidate]:
        """Remove and return every candidate (e.g. to record them as cancelled)."""
        out = sorted(self._heap)
        self._heap.clear()
        return out

    def rescore(
        self, score: Callable[[list[Atoms]], list[float | None]], *, keep_below: float = 0.0
    ) -> int:
        """Re-rank with a new committee (PAL's dynamic oracle list).

        Args:
            score: Maps a list of structures to their new uncertainties (eV/Å); ``None``
                for one the committee failed on (it keeps its priority).
            keep_below: Candidates whose new uncertainty is below this value are now
                trusted and leave the queue.

        Returns:
            Number of candidates removed.
        """
        if not self._heap:
            return 0
        cands = list(self._heap)
        new = score([c.atoms for c in cands])
        return self.reprioritise(
            {c.order: float(u) for c, u in zip(cands, new, strict=True) if u is not None},
            keep_below=keep_below,
        )

    def reprioritise(self, uncertainties: dict[int, float], *, keep_below: float = 0.0) -> int:
        """Apply new uncertainties by candidate ``order`` (what :meth:`rescore` computes).

        The MPI controller gets them from a prediction rank.

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
        if removed:
            n = removed + len(kept)
            logger.info("re-scored oracle queue: %d of %d now trusted", removed, n)
        return removed

    def stats(self) -> dict[str, Any]:
        """Queue length and filter counters."""
        return {"queued": len(self), "duplicates": self.n_duplicates, "dropped": self.n_dropped}
