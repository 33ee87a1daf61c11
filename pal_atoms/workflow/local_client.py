"""The single-process prediction client: any ASE calculator judged by a selection rule.

:class:`LocalClient` predicts with a calculator (a committee, or any ASE calculator) and
judges each prediction with a selection rule; what the rule does not trust is recorded
(:class:`SelectedGeometry`) or handed to a callback. It is a small controller, so it lives
in the workflow layer; ``pal_atoms.dynamics.LocalClient`` still names it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.selection import SelectionRule, TrustWindow

__all__ = ["LocalClient", "SelectedGeometry"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SelectedGeometry:
    """A geometry the selection rule did not trust (uncertain or untrusted).

    Attributes:
        atoms: Copy of the geometry (with ``atoms.info`` kept, e.g. ``charge``).
        results: The committee's results on it.
        verdict: ``UNCERTAIN`` or ``UNTRUSTED``.
        generator_id: Id of the generator that proposed it.
        step: That generator's round-trip counter.
    """

    atoms: Atoms
    results: dict[str, Any]
    verdict: Verdict
    generator_id: int
    step: int


@dataclass
class LocalClient:
    """Single-process :class:`~pal_atoms.core.protocols.PredictionClient`.

    Predicts with any ASE calculator (the committee, or a reference method in tests) and
    judges the prediction with ``rule``.

    Args:
        calculator: ASE calculator; for the default rule it must return ``max_force_std``.
        rule: Selection rule ``rule(atoms, results) -> Verdict`` (default
            :class:`~pal_atoms.workflow.selection.TrustWindow`).
        record: Keep every non-trusted geometry in :attr:`selected`.
        on_selected: Called with each non-trusted geometry (the controller's
            single-process mode sends them to the oracle this way).

    Attributes:
        selected: Recorded non-trusted geometries (only with ``record=True``).
        n_evaluations: Number of predictions made.
        model_time_s: Wall time spent inside the calculator, in s.
    """

    calculator: Calculator
    rule: SelectionRule = field(default_factory=TrustWindow)
    _: KW_ONLY
    record: bool = False
    on_selected: Callable[[SelectedGeometry], None] | None = None
    selected: list[SelectedGeometry] = field(default_factory=list)
    n_evaluations: int = 0
    model_time_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.calculator, Calculator) and not hasattr(
            self.calculator, "get_property"
        ):
            raise ValueError(f"calculator must be an ASE calculator, got {self.calculator!r}")
        if not callable(self.rule):
            raise ValueError(f"rule must be callable, got {self.rule!r}")

    def evaluate(
        self, atoms: Atoms, *, generator_id: int = 0, step: int = 0
    ) -> tuple[dict[str, Any], Verdict]:
        """Predict ``atoms`` (not modified) and judge the prediction.

        Returns:
            ``(results, verdict)``; ``results`` is a copy of the calculator's results
            (``energy`` in eV, ``forces`` in eV/Å with shape ``(n_atoms, 3)``, plus
            whatever uncertainty keys the calculator returns).
        """
        calc = self.calculator
        t0 = time.perf_counter()
        if isinstance(calc, Calculator):
            # ASE's get_property, once for both properties. The real system changes matter:
            # with "numbers" among them, tblite rebuilds its model and LJ its neighbour list.
            changes = calc.check_state(atoms)
            if changes:
                calc.atoms, calc.results = None, {}
            if "energy" not in calc.results or "forces" not in calc.results:
                if calc.use_cache:
                    calc.atoms = atoms.copy()
                calc.calculate(atoms, ["energy", "forces"], changes)
        else:
            calc.get_property("energy", atoms)
            calc.get_property("forces", atoms)
        self.model_time_s += time.perf_counter() - t0
        self.n_evaluations += 1
        results = {
            k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in calc.results.items()
        }
        verdict = Verdict(self.rule(atoms, results))
        if verdict is not Verdict.TRUSTED and (self.record or self.on_selected is not None):
            item = SelectedGeometry(
                atoms=atoms.copy(),
                results=results,
                verdict=verdict,
                generator_id=generator_id,
                step=step,
            )
            if self.record:
                self.selected.append(item)
            if self.on_selected is not None:
                self.on_selected(item)
        return results, verdict
