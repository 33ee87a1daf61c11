"""Selection rules: which predictions are trusted and which geometries go to the oracle.

A selection rule is any callable ``rule(atoms, results) -> Verdict``. The default is a
trust window on the committee's ``max_force_std``; per-system windows are keyed by a
function of the structure (e.g. the cluster size or the formula).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ase import Atoms

from pal_atoms.protocols import Verdict

__all__ = ["SelectionRule", "TrustWindow"]


class SelectionRule(Protocol):
    """A callable judging one committee prediction."""

    def __call__(self, atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        """Return the verdict for ``results`` predicted on ``atoms``."""
        ...


@dataclass(frozen=True, kw_only=True)
class TrustWindow:
    """Trust window on an uncertainty key (default ``max_force_std``, eV/Å).

    Below ``lower``: trusted. From ``lower`` up to ``upper``: uncertain (label it).
    Above ``upper``: untrusted (label it; the generator should back off).

    Args:
        lower: Lower bound of the window, in the unit of ``key``.
        upper: Upper bound, ``>= lower``.
        key: Result key judged.
        per_system: Optional bounds per system: ``{system_key: (lower, upper)}``.
        system_key: Maps a structure to the key of ``per_system`` (default: its formula).
    """

    lower: float = 0.05
    upper: float = 0.5
    key: str = "max_force_std"
    per_system: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    system_key: Callable[[Atoms], str] = field(
        default=lambda atoms: atoms.get_chemical_formula(mode="hill")
    )

    def __post_init__(self) -> None:
        for name, (lo, hi) in {"default": (self.lower, self.upper), **self.per_system}.items():
            if not (lo >= 0 and hi >= lo):
                raise ValueError(f"trust window {name!r} needs 0 <= lower <= upper, got {lo}, {hi}")

    def bounds(self, atoms: Atoms) -> tuple[float, float]:
        """Return ``(lower, upper)`` for ``atoms``."""
        if self.per_system:
            hit = self.per_system.get(self.system_key(atoms))
            if hit is not None:
                return hit
        return self.lower, self.upper

    def __call__(self, atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        """Judge ``results[self.key]`` against the window for ``atoms``."""
        value = float(results[self.key])
        lower, upper = self.bounds(atoms)
        if value < lower:
            return Verdict.TRUSTED
        if value <= upper:
            return Verdict.UNCERTAIN
        return Verdict.UNTRUSTED
