"""Randomised sampling along an atom-transfer coordinate (e.g. hydrogen-atom transfer).

Plain MD at room temperature almost never visits the region between a donor and an
acceptor, yet that is where a reaction barrier is. :class:`TransferSampler` proposes
geometries there directly: the transferred atom is placed on the donor-acceptor axis at a
random fraction of the way (plus a random offset off the axis), every other atom is
displaced by a small Gaussian deviate, and each proposal goes through the prediction
client like an MD step, so the committee's uncertainty decides what is labelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.protocols import PredictionClient

from .base import Action, Generator, GeneratorEvent, atoms_from_dict, atoms_to_dict
from .forwarding import UnphysicalStateError

__all__ = ["TransferSampler", "TransferSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TransferSettings:
    """Settings of a :class:`TransferSampler`.

    Args:
        donor: Index of the donor atom.
        hydrogen: Index of the transferred atom.
        acceptor: Index of the acceptor atom.
        n_samples: Proposals before the sampler finishes (>= 1).
        fraction_range: ``(low, high)``: where on the donor-acceptor axis the atom is
            placed, as a fraction of the way from donor (0) to acceptor (1).
        offset_std_A: Standard deviation of the atom's offset off the axis, Å (>= 0).
        rattle_std_A: Standard deviation of the displacement of every other atom, Å.
        min_distance_A: Proposals with two atoms closer than this (Å) are drawn again.
        seed: Seed of the proposals.
    """

    donor: int
    hydrogen: int
    acceptor: int
    n_samples: int = 64
    fraction_range: tuple[float, float] = (0.3, 0.7)
    offset_std_A: float = 0.1
    rattle_std_A: float = 0.03
    min_distance_A: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        idx = (self.donor, self.hydrogen, self.acceptor)
        if len(set(idx)) != 3 or min(idx) < 0:
            raise ValueError(f"donor, H and acceptor must be three different atoms, got {idx}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        low, high = self.fraction_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"fraction_range must satisfy 0 <= low <= high <= 1, got {low}, {high}"
            )
        for name in ("offset_std_A", "rattle_std_A", "min_distance_A"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class TransferSampler(Generator):
    """Proposals with the transferred atom between donor and acceptor (see module).

    Args:
        structures: Starting structures (reactant, product, ...), used in turn; their
            ``info`` (charge, multiplicity) is kept.
        settings: Indices and distributions.
        generator_id: Id of this generator.

    Raises:
        ValueError: no structure, or an index outside a structure.
    """

    def __init__(
        self,
        structures: Atoms | Sequence[Atoms],
        *,
        settings: TransferSettings,
        generator_id: int = 0,
    ) -> None:
        super().__init__(generator_id=generator_id)
        items = [structures] if isinstance(structures, Atoms) else list(structures)
        if not items:
            raise ValueError("a transfer sampler needs at least one structure")
        top = max(settings.donor, settings.hydrogen, settings.acceptor)
        for a in items:
            if top >= len(a):
                raise ValueError(f"atom index {top} is outside a structure of {len(a)} atoms")
        self.structures = [a.copy() for a in items]
        for a in self.structures:
            a.calc = None
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)
        #: Transfer fraction of every proposal so far (for analysis).
        self.fractions: list[float] = []

    def propose(self) -> Atoms:
        """One proposal (drawn again while two atoms are too close).

        Raises:
            UnphysicalStateError: no acceptable proposal in 100 draws.
        """
        s = self.settings
        base = self.structures[self.step % len(self.structures)]
        for _ in range(100):
            atoms = base.copy()
            atoms.info = dict(base.info)
            pos = atoms.positions + self.rng.normal(0.0, s.rattle_std_A, atoms.positions.shape)
            d, a = pos[s.donor], pos[s.acceptor]
            axis = a - d
            frac = float(self.rng.uniform(*s.fraction_range))
            offset = self.rng.normal(0.0, s.offset_std_A, 3)
            unit = axis / max(float(np.linalg.norm(axis)), 1e-12)
            offset -= unit * float(offset @ unit)  # off the axis only
            pos[s.hydrogen] = d + frac * axis + offset
            atoms.positions = pos
            dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            np.fill_diagonal(dist, np.inf)
            if dist.min() >= s.min_distance_A:
                atoms.info["transfer_fraction"] = frac
                self.fractions.append(frac)
                return atoms
        raise UnphysicalStateError("no transfer proposal without a close contact in 100 draws")

    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """One event per proposal (see :meth:`Generator.irun`)."""
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            atoms = self.propose()
            self.step += 1
            taken += 1
            results, verdict = client.evaluate(
                atoms, generator_id=self.generator_id, step=self.step
            )
            finished = self.step >= self.settings.n_samples
            self.done = finished
            yield GeneratorEvent(
                generator_id=self.generator_id,
                step=self.step,
                verdict=verdict,
                action=Action.FINISHED if finished else Action.CONTINUE,
                reason="n_samples reached" if finished else "",
                n_evaluations=1,
                energy=float(results["energy"])
                if np.isfinite(results.get("energy", np.nan))
                else None,
            )

    def state(self) -> dict[str, Any]:
        """Resumable state (JSON-serialisable)."""
        return {
            **self._base_state(),
            "settings": {
                **asdict(self.settings),
                "fraction_range": list(self.settings.fraction_range),
            },
            "structures": [atoms_to_dict(a, momenta=False) for a in self.structures],
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`."""
        self._restore_base(state)
        settings = dict(state["settings"])
        settings["fraction_range"] = tuple(settings["fraction_range"])
        self.settings = TransferSettings(**settings)
        self.structures = [atoms_from_dict(d) for d in state["structures"]]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
