"""Selection rules: which predictions are trusted and which geometries go to the oracle.

A selection rule is any callable ``rule(atoms, results) -> Verdict``. The default is a
trust window on the committee's ``max_force_std``; per-system windows are keyed by a
function of the structure (e.g. the cluster size or the formula). Relative criteria sit
next to it: :class:`RelativeForceWindow` judges the force uncertainty relative to the
force itself, :class:`RecentQuantile` labels what is unusually uncertain compared with
the recent predictions, and :class:`WorstOf` combines rules (the most severe verdict wins).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from pal_atoms.core.protocols import Verdict

__all__ = [
    "RecentQuantile",
    "RelativeForceWindow",
    "SelectionRule",
    "TrustWindow",
    "WorstOf",
    "score",
]


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
        return _window(float(results[self.key]), *self.bounds(atoms))


def score(rule: Any, results: Mapping[str, Any]) -> float:
    """The uncertainty a rule judges, for ranking the oracle queue.

    ``rule.value(results)`` for rules that derive it (relative criteria), else
    ``results[rule.key]`` (default key ``max_force_std``).
    """
    value = getattr(rule, "value", None)
    if callable(value):
        return float(value(results))
    return float(results[getattr(rule, "key", "max_force_std")])


def _window(value: float, lower: float, upper: float) -> Verdict:
    if value < lower:
        return Verdict.TRUSTED
    if value <= upper:
        return Verdict.UNCERTAIN
    return Verdict.UNTRUSTED


@dataclass(frozen=True, kw_only=True)
class RelativeForceWindow:
    """Trust window on the relative force uncertainty (dimensionless).

    ``relative = max_i forces_std_i / (|F_i| + floor_eV_A)`` over atoms ``i``, with
    ``forces_std`` the committee's per-atom force spread and ``F`` the mean force. Large
    forces (hot or strained geometries) may carry a larger absolute spread before they
    are labelled; near-equilibrium atoms, where a small force error matters most, are
    judged strictly. ``floor_eV_A`` keeps the ratio finite where the force vanishes.

    Args:
        lower: Below: trusted.
        upper: Above: untrusted (``>= lower``).
        floor_eV_A: Force added to ``|F_i|`` in the denominator, eV/Å (> 0).
    """

    lower: float = 0.2
    upper: float = 2.0
    floor_eV_A: float = 0.2
    key: str = "relative_force_std"

    def __post_init__(self) -> None:
        if not (0 <= self.lower <= self.upper):
            raise ValueError(f"need 0 <= lower <= upper, got {self.lower}, {self.upper}")
        if not self.floor_eV_A > 0:
            raise ValueError(f"floor_eV_A must be > 0, got {self.floor_eV_A}")

    def value(self, results: Mapping[str, Any]) -> float:
        """The relative uncertainty of one prediction (needs ``forces_std`` and ``forces``)."""
        std = np.asarray(results["forces_std"], dtype=float)
        force = np.linalg.norm(np.asarray(results["forces"], dtype=float), axis=-1)
        return float(np.max(std / (force + self.floor_eV_A))) if std.size else 0.0

    def __call__(self, atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        """Judge the relative uncertainty against the window."""
        return _window(self.value(results), self.lower, self.upper)


@dataclass(frozen=True, kw_only=True)
class RecentQuantile:
    """Label what is unusually uncertain compared with the recent predictions.

    A prediction is uncertain when ``results[key]`` exceeds the ``quantile`` of the last
    ``window`` values (so about ``1 - quantile`` of the predictions are labelled however
    good the committee gets, unless the value is also below ``floor``: then it is trusted
    anyway), and untrusted above ``upper``. Until ``min_history`` values are seen, every
    value above ``floor`` is uncertain. Holds state: use one instance per run.

    Args:
        key: Result key judged (default ``max_force_std``, eV/Å).
        quantile: In (0, 1).
        window: Recent predictions remembered (>= 1).
        min_history: Values needed before the quantile is used (>= 1, <= window).
        floor: Never label below this value (unit of ``key``).
        upper: Untrusted above this value (unit of ``key``; ``inf`` disables it).
    """

    key: str = "max_force_std"
    quantile: float = 0.9
    window: int = 500
    min_history: int = 50
    floor: float = 0.0
    upper: float = math.inf
    _history: deque[float] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if not 1 <= self.min_history <= self.window:
            raise ValueError(
                f"need 1 <= min_history <= window, got {self.min_history}, {self.window}"
            )
        if not 0 <= self.floor <= self.upper:
            raise ValueError(f"need 0 <= floor <= upper, got {self.floor}, {self.upper}")
        object.__setattr__(self, "_history", deque(maxlen=self.window))

    @property
    def lower(self) -> float:
        """Current threshold (for re-scoring the oracle queue)."""
        if len(self._history) < self.min_history:
            return self.floor
        return max(self.floor, float(np.quantile(self._history, self.quantile)))

    def __call__(self, atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        """Judge against the recent quantile, then remember the value."""
        value = float(results[self.key])
        threshold = self.lower
        self._history.append(value)
        if value > self.upper:
            return Verdict.UNTRUSTED
        if value > threshold:
            return Verdict.UNCERTAIN
        return Verdict.TRUSTED


class WorstOf:
    """Combine rules: the most severe verdict of any rule wins.

    The first rule's ``key`` and ``lower`` are used when the oracle queue is re-scored.

    Args:
        rules: Selection rules (at least one).
    """

    def __init__(self, *rules: SelectionRule) -> None:
        if not rules:
            raise ValueError("WorstOf needs at least one rule")
        self.rules = rules

    @property
    def key(self) -> str:
        """The first rule's key."""
        return str(getattr(self.rules[0], "key", "max_force_std"))

    @property
    def lower(self) -> float:
        """The first rule's lower bound."""
        return float(getattr(self.rules[0], "lower", 0.0))

    def value(self, results: Mapping[str, Any]) -> float:
        """The first rule's uncertainty of ``results``."""
        return score(self.rules[0], results)

    def __call__(self, atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        """Ask every rule; return the most severe verdict."""
        verdicts = [Verdict(rule(atoms, results)) for rule in self.rules]
        return max(verdicts, key=lambda v: v.severity)
