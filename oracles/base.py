"""The oracle contract: an ASE calculator with a name, a method, hashed settings and checks.

Every oracle of pal-atoms subclasses :class:`Oracle`, which is an ordinary ASE
:class:`~ase.calculators.calculator.Calculator` (``atoms.calc = XTB()`` works). On top of
the ASE contract an oracle

* carries one frozen settings dataclass (:attr:`Oracle.config`) and exposes it as a
  JSON-serialisable dict (:attr:`Oracle.settings`, hashed into the label provenance);
* checks a structure before any expensive call (:meth:`Oracle.check`);
* raises :class:`SCFNotConverged` when the SCF did not converge, so that
  :func:`~pal_atoms.oracles.label` records ``unconverged`` instead of numbers;
* pickles as its settings only (never a live tblite/PySCF object), so it can be sent to
  a child process or an MPI rank;
* offers a relaxed copy of itself for retries (:meth:`Oracle.relaxed`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, SCFError, all_changes

from pal_atoms.core.checks import charge_and_multiplicity, validate_structure
from pal_atoms.core.errors import ConfigError, OracleError, StructureError

if TYPE_CHECKING:
    from pal_atoms.oracles.attempt import RetryPolicy

__all__ = ["Oracle", "SCFNotConverged", "check_finite_positive", "json_safe"]

logger = logging.getLogger(__name__)


class SCFNotConverged(SCFError, OracleError):
    """Raised by an oracle whose SCF did not converge (recorded as ``unconverged``).

    Derives from ASE's :class:`~ase.calculators.calculator.SCFError` (what ASE code
    expects) and from :class:`~pal_atoms.core.errors.OracleError` (what pal-atoms code expects).
    """


def check_finite_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise :class:`~pal_atoms.core.errors.ConfigError` unless ``value`` is finite and > 0.

    Args:
        name: Setting name used in the message.
        value: Value to check.
        allow_zero: Accept 0 as well.
    """
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


def json_safe(value: Any) -> Any:
    """Convert tuples, frozensets and numpy scalars to JSON types (recursively)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json_safe(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _rebuild(cls: type[Oracle], config: Any) -> Oracle:
    """Unpickling helper: a fresh oracle from its settings."""
    return cls(config)


class Oracle(Calculator):
    """Base class of every oracle (an ASE calculator with provenance and checks).

    Subclasses set :attr:`name`, :attr:`settings_type` (a frozen keyword-only dataclass)
    and implement :meth:`_compute` and :attr:`method`. They may extend :meth:`check`,
    :meth:`describe` and :meth:`relaxed`.

    Args:
        config: Settings object of the subclass's :attr:`settings_type`; or leave it out
            and pass the settings as keyword arguments.
        **settings: Keyword arguments of :attr:`settings_type` (when ``config`` is omitted).

    Raises:
        ConfigError: unknown or invalid settings (a ``ValueError``).
    """

    #: Properties an oracle delivers; ``stress`` only for periodic cells where supported.
    # ASE annotates a list; a class-level tuple cannot be mutated by accident.
    implemented_properties = ("energy", "free_energy", "forces")  # type: ignore[assignment]
    #: Short name recorded in every label (``"xtb"``, ``"pyscf"``, ...).
    name: str = "oracle"
    #: The frozen settings dataclass of this oracle.
    settings_type: ClassVar[type] = object
    #: Settings fields that do not change the numbers (left out of :attr:`settings`).
    unhashed_fields: ClassVar[frozenset[str]] = frozenset({"min_distance_A"})
    #: Whether periodic cells are supported (``False``: molecules and clusters only).
    supports_pbc: ClassVar[bool] = False

    def __init__(self, config: Any = None, /, **settings: Any):
        if config is None:
            config = make_settings(self.settings_type, self.name, settings)
        elif settings:
            raise ConfigError("pass either a settings object or keyword settings, not both")
        elif not isinstance(config, self.settings_type):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.settings_type.__name__}, "
                f"got {type(config).__name__}"
            )
        Calculator.__init__(self)
        self.config = config

    # -- provenance ----------------------------------------------------------------------
    @property
    def method(self) -> str:
        """Method string, e.g. ``"GFN2-xTB"`` or ``"PBE/def2-SVP"``."""
        raise NotImplementedError

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that determines the numbers, as a JSON-serialisable dict.

        ``make_oracle(oracle.name, **oracle.settings)`` rebuilds an equivalent oracle.
        """
        return {
            f.name: json_safe(getattr(self.config, f.name))
            for f in dataclasses.fields(self.config)
            if f.name not in self.unhashed_fields
        }

    @property
    def covered_numbers(self) -> frozenset[int] | None:
        """Atomic numbers the method covers (``None``: no restriction known)."""
        return None

    def todict(self, skip_default: bool = True) -> dict[str, Any]:
        """ASE's parameter dict (used when ASE writes a calculator into a file)."""
        return self.settings

    def set(self, **changes: Any) -> dict[str, Any]:
        """Change settings ASE-style; the results are reset when anything changed.

        Returns:
            The changed settings.
        """
        changed = {k: v for k, v in changes.items() if getattr(self.config, k, object()) != v}
        if changed:
            self.config = replace_settings(self.config, self.name, changed)
            self.reset()
        return changed

    def with_settings(self, **changes: Any) -> Oracle:
        """A new oracle of the same kind with some settings changed."""
        return type(self)(replace_settings(self.config, self.name, changes))

    def __reduce__(self) -> tuple[Any, ...]:
        # Only the settings travel; live library objects are rebuilt on the other side.
        return (_rebuild, (type(self), self.config))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- checks --------------------------------------------------------------------------
    def charge_and_multiplicity(self, atoms: Atoms) -> tuple[int, int]:
        """Total charge and spin multiplicity used for ``atoms`` (settings, then info).

        Raises:
            StructureError: the multiplicity cannot hold for the electron count.
        """
        return charge_and_multiplicity(
            atoms, getattr(self.config, "charge", None), getattr(self.config, "multiplicity", None)
        )

    def check(self, atoms: Atoms) -> None:
        """Validate ``atoms`` for this oracle before any expensive call.

        Raises:
            StructureError: empty or non-finite structure, elements the method does not
                cover, atoms closer than ``min_distance_A``, an impossible charge and
                multiplicity, or a periodic cell for a molecular code.
            OracleSetupError: the oracle cannot run here (missing program or GPU).
        """
        validate_structure(
            atoms,
            min_distance_A=getattr(self.config, "min_distance_A", 0.5),
            allowed_numbers=self.covered_numbers,
            what=f"structure for oracle {self.name!r}",
        )
        if atoms.pbc.any() and not self.supports_pbc:
            raise StructureError(
                f"oracle {self.name!r} handles molecules and clusters only, got pbc={atoms.pbc}"
            )
        self.charge_and_multiplicity(atoms)

    def describe(self, atoms: Atoms) -> dict[str, Any]:
        """Per-structure metadata recorded in ``label.atoms.info`` (charge, multiplicity, ...)."""
        charge, multiplicity = self.charge_and_multiplicity(atoms)
        return {"charge": charge, "multiplicity": multiplicity}

    def relaxed(self, policy: RetryPolicy, attempt: int) -> Oracle | None:
        """A copy with settings that converge more easily, for retry number ``attempt``.

        Args:
            policy: The retry policy (its factors say how much to relax).
            attempt: 1 for the first retry, 2 for the second, ...

        Returns:
            The adjusted oracle, or ``None`` when nothing can be adjusted.
        """
        return None

    # -- ASE contract --------------------------------------------------------------------
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] | None = None,
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Compute energy and forces (and stress for periodic cells where supported).

        Results: ``energy``/``free_energy`` in eV, ``forces`` in eV/Å (shape
        ``(n_atoms, 3)``), ``stress`` in eV/Å³ (Voigt, shape ``(6,)``).

        Raises:
            StructureError: the structure fails :meth:`check`.
            SCFNotConverged: the SCF did not converge.
            OracleError: the program failed or returned non-finite numbers.
        """
        Calculator.calculate(self, atoms, properties, system_changes)
        work = self.atoms
        if work is None:
            raise ValueError("no atoms given to calculate")
        self.check(work)
        want_stress = bool(work.pbc.any()) and "stress" in self.implemented_properties
        results = self._compute(work, want_stress=want_stress)
        self.results = _validated(results, len(work), self.name)
        # Further declared results (e.g. per-state energies and forces) pass through,
        # checked for finiteness like energy and forces.
        for key in self.implemented_properties:
            if key in self.results or results.get(key) is None:
                continue
            value = np.asarray(results[key], dtype=float)
            if not np.all(np.isfinite(value)):
                raise OracleError(f"oracle {self.name!r} returned a non-finite {key}")
            self.results[key] = value

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        """Run the program on a checked structure; return energy, forces (and stress)."""
        raise NotImplementedError


def _validated(results: dict[str, Any], n_atoms: int, name: str) -> dict[str, Any]:
    """Check shapes and finiteness of a result dict; raise :class:`OracleError` if bad."""
    try:
        energy = float(results["energy"])
        forces = np.asarray(results["forces"], dtype=float).reshape(n_atoms, 3)
    except (KeyError, TypeError, ValueError) as exc:
        raise OracleError(f"oracle {name!r} returned unusable results: {exc}") from exc
    if not (math.isfinite(energy) and np.all(np.isfinite(forces))):
        raise OracleError(f"oracle {name!r} returned non-finite energy or forces")
    out: dict[str, Any] = {"energy": energy, "free_energy": energy, "forces": forces}
    if results.get("free_energy") is not None:
        out["free_energy"] = float(results["free_energy"])
    if results.get("stress") is not None:
        stress = np.asarray(results["stress"], dtype=float).reshape(6)
        if not np.all(np.isfinite(stress)):
            raise OracleError(f"oracle {name!r} returned a non-finite stress")
        out["stress"] = stress
    return out


def make_settings(cls: type, oracle: str, values: dict[str, Any]) -> Any:
    """Build a settings dataclass, turning unknown keys into a clear :class:`ConfigError`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown settings for oracle {oracle!r}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    return cls(**values)


def replace_settings(config: Any, oracle: str, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` with the unknown-key check of :func:`make_settings`."""
    merged = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    make_settings(type(config), oracle, changes)  # validates the keys
    merged.update(changes)
    return type(config)(**merged)


def numbers_up_to(z_max: int) -> frozenset[int]:
    """Atomic numbers 1..``z_max``."""
    return frozenset(range(1, z_max + 1))


def as_int_or_none(name: str, value: Any) -> int | None:
    """Validate an optional integer setting (``bool`` is rejected)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer or None, got {value!r}")
    return int(value)


def unique_symbols(atoms: Atoms) -> list[str]:
    """Chemical symbols present in ``atoms``, in order of first appearance."""
    seen: dict[str, None] = {}
    for s in atoms.get_chemical_symbols():
        seen.setdefault(s, None)
    return list(seen)
