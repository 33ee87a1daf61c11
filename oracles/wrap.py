"""Any ASE calculator as an oracle: :class:`Wrapped`.

A wrapped calculator gets the oracle contract (name, method, hashed settings, checks,
failure semantics). Pass a ready calculator, or better a module-level factory that builds
one: a factory is what travels to a worker process (a calculator holding open files or
library handles often cannot be pickled).

Non-convergence is recognised when the calculator raises ASE's
:class:`~ase.calculators.calculator.SCFError` or an error whose message says the SCF did
not converge; anything else it raises is ``failed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from pal_atoms.oracles.base import Oracle, check_finite_positive, json_safe

from pal_atoms.core.errors import ConfigError, StructureError

__all__ = ["Wrapped", "WrappedSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class WrappedSettings:
    """Settings of a wrapped ASE calculator.

    Args:
        calculator: A ready ASE calculator (must be picklable to reach a worker).
        factory: Alternative to ``calculator``: a picklable callable (module-level
            function or class) returning a new calculator; called once per process.
        name: Oracle name recorded in labels.
        method: Method string recorded in labels.
        parameters: What determines the numbers (hashed into the provenance); by default
            the calculator's ``todict()`` where it is JSON-serialisable.
        covered_numbers: Atomic numbers the calculator handles (``None``: any).
        supports_pbc: Whether periodic cells are allowed (stress is asked for when the
            calculator implements it).
        min_distance_A: Structures with atoms closer than this (Å) are refused.

    Retries of a wrapped calculator need a custom
    :attr:`~pal_atoms.oracles.labelling.RetryPolicy.adjust` (the wrapper cannot know which
    parameter helps convergence).
    """

    calculator: Calculator | None = None
    factory: Callable[..., Calculator] | None = None
    name: str = "custom"
    method: str = ""
    parameters: dict[str, Any] | None = None
    covered_numbers: frozenset[int] | None = None
    supports_pbc: bool = True
    min_distance_A: float = 0.5

    def __post_init__(self) -> None:
        if (self.calculator is None) == (self.factory is None):
            raise ConfigError("give exactly one of calculator= or factory=")
        if self.factory is not None and not callable(self.factory):
            raise ConfigError(f"factory must be callable, got {type(self.factory).__name__}")
        if self.calculator is not None and not hasattr(self.calculator, "calculate"):
            raise ConfigError(f"calculator must be an ASE calculator, got {self.calculator!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name must be a non-empty string")
        if self.covered_numbers is not None:
            object.__setattr__(
                self, "covered_numbers", frozenset(int(z) for z in self.covered_numbers)
            )
        if self.parameters is not None:
            try:
                json.dumps(self.parameters)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"parameters must be JSON-serialisable: {exc}") from None
        check_finite_positive("min_distance_A", self.min_distance_A, allow_zero=True)


class Wrapped(Oracle):
    """An arbitrary ASE calculator with the oracle contract.

    Args:
        calculator: A ready ASE calculator; or leave it out and pass ``factory=``.
        **settings: Fields of :class:`WrappedSettings` (``name``, ``method``,
            ``parameters``, ``covered_numbers``, ...).

    Example:
        >>> from ase.calculators.emt import EMT
        >>> oracle = Wrapped(factory=EMT, name="emt", method="EMT")
    """

    implemented_properties = (  # type: ignore[assignment]  # ASE annotates a list
        "energy",
        "free_energy",
        "forces",
        "stress",
    )
    settings_type: ClassVar[type] = WrappedSettings
    supports_pbc: ClassVar[bool] = True
    config: WrappedSettings

    def __init__(self, calculator: Any = None, /, **settings: Any):
        if isinstance(calculator, WrappedSettings):
            super().__init__(calculator, **settings)
        elif calculator is not None:
            super().__init__(calculator=calculator, **settings)
        else:
            super().__init__(**settings)
        self.name = self.config.name
        self._calc: Calculator | None = self.config.calculator

    @property
    def method(self) -> str:
        """The method string given (or the calculator's class name)."""
        return self.config.method or self._calc_type().__name__

    @property
    def settings(self) -> dict[str, Any]:
        """The given ``parameters``, else the calculator's JSON-able ``todict()``."""
        if self.config.parameters is not None:
            return dict(self.config.parameters)
        params: dict[str, Any] = {}
        calc = self._calc
        if calc is not None and hasattr(calc, "todict"):
            for key, value in json_safe(dict(calc.todict())).items():
                try:
                    json.dumps(value)
                except (TypeError, ValueError):
                    continue
                params[key] = value
        return params

    @property
    def covered_numbers(self) -> frozenset[int] | None:
        """As given (``None``: any element)."""
        return self.config.covered_numbers

    def check(self, atoms: Atoms) -> None:
        """:meth:`Oracle.check` with this wrapper's periodicity rule."""
        if atoms.pbc.any() and not self.config.supports_pbc:
            raise StructureError(
                f"oracle {self.name!r} handles molecules and clusters only, got pbc={atoms.pbc}"
            )
        super().check(atoms)

    def _calc_type(self) -> type:
        if self._calc is not None:
            return type(self._calc)
        factory = self.config.factory
        return factory if isinstance(factory, type) else Calculator

    def _calculator(self) -> Calculator:
        if self._calc is None:
            factory = self.config.factory
            if factory is None:  # excluded by WrappedSettings
                raise ConfigError("no calculator and no factory")
            self._calc = factory()
        return self._calc

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        calc = self._calculator()
        props = ["energy", "forces"]
        if want_stress and "stress" in getattr(calc, "implemented_properties", ()):
            props.append("stress")
        work = atoms.copy()
        work.calc = calc
        calc.reset()
        calc.calculate(work, props, list(all_changes))
        return {key: calc.results.get(key) for key in ("energy", "free_energy", "forces", "stress")}
