"""GFN2-xTB / GFN1-xTB oracles: through tblite (default) or through xtb-python.

Both read the same :class:`XTBSettings`; they differ only in the program that runs. The
numbers agree to about 1e-7 eV (tested to 1e-5 eV). Each call starts from a fresh
wavefunction (never the previous geometry's), so a label does not depend on history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree, kB
from pal_atoms.oracles.base import (
    Oracle,
    SCFNotConverged,
    as_int_or_none,
    check_finite_positive,
    numbers_up_to,
)

from pal_atoms.core.errors import ConfigError, OracleError, OracleSetupError

if TYPE_CHECKING:
    from pal_atoms.oracles.labelling import RetryPolicy

__all__ = ["XTB", "XTBPython", "XTBSettings"]

logger = logging.getLogger(__name__)

_METHODS = ("GFN2-xTB", "GFN1-xTB")
#: Both GFN methods are parametrised for H..Rn.
XTB_NUMBERS = numbers_up_to(86)


@dataclass(frozen=True, kw_only=True)
class XTBSettings:
    """Settings of the xTB oracles.

    Args:
        method: ``"GFN2-xTB"`` or ``"GFN1-xTB"``.
        charge: Total charge in e; ``None`` reads ``atoms.info['charge']`` (default 0).
        multiplicity: Spin multiplicity 2S+1; ``None`` reads ``atoms.info['multiplicity']``
            or takes the lowest one the electron count allows.
        unpaired_electrons: Alternative to ``multiplicity`` (``multiplicity - 1``).
        electronic_temperature_K: Fermi smearing temperature in K.
        accuracy: Numerical accuracy (smaller is tighter; xtb's ``--acc``).
        max_iterations: Most SCF iterations before the label is ``unconverged``.
        min_distance_A: Structures with atoms closer than this (Å) are refused.
    """

    method: str = "GFN2-xTB"
    charge: int | None = None
    multiplicity: int | None = None
    unpaired_electrons: int | None = None
    electronic_temperature_K: float = 300.0
    accuracy: float = 1.0
    max_iterations: int = 250
    min_distance_A: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"method must be one of {', '.join(_METHODS)}, got {self.method!r}")
        as_int_or_none("charge", self.charge)
        mult = as_int_or_none("multiplicity", self.multiplicity)
        unpaired = as_int_or_none("unpaired_electrons", self.unpaired_electrons)
        if mult is not None and mult < 1:
            raise ConfigError(f"multiplicity must be >= 1, got {mult}")
        if unpaired is not None:
            if unpaired < 0:
                raise ConfigError(f"unpaired_electrons must be >= 0, got {unpaired}")
            if mult is not None and mult != unpaired + 1:
                raise ConfigError(
                    f"multiplicity {mult} contradicts unpaired_electrons {unpaired}; give one"
                )
        check_finite_positive("electronic_temperature_K", self.electronic_temperature_K)
        check_finite_positive("accuracy", self.accuracy)
        check_finite_positive("min_distance_A", self.min_distance_A, allow_zero=True)
        if as_int_or_none("max_iterations", self.max_iterations) is None or self.max_iterations < 1:
            raise ConfigError(
                f"max_iterations must be a positive integer, got {self.max_iterations}"
            )

    @property
    def resolved_multiplicity(self) -> int | None:
        """Multiplicity from ``multiplicity`` or ``unpaired_electrons`` (``None``: auto)."""
        if self.multiplicity is not None:
            return self.multiplicity
        return None if self.unpaired_electrons is None else self.unpaired_electrons + 1


class _XTBBase(Oracle):
    """Shared part of the two xTB oracles (settings, checks, retries)."""

    implemented_properties = (  # type: ignore[assignment]  # ASE annotates a list
        "energy",
        "free_energy",
        "forces",
        "stress",
    )
    settings_type: ClassVar[type] = XTBSettings
    supports_pbc: ClassVar[bool] = True
    config: XTBSettings

    @property
    def method(self) -> str:
        """``"GFN2-xTB"`` or ``"GFN1-xTB"``."""
        return self.config.method

    @property
    def covered_numbers(self) -> frozenset[int]:
        """H..Rn (Z = 1..86)."""
        return XTB_NUMBERS

    def charge_and_multiplicity(self, atoms: Atoms) -> tuple[int, int]:
        """Charge and multiplicity from the settings or ``atoms.info`` (checked)."""
        from pal_atoms.core.checks import charge_and_multiplicity

        return charge_and_multiplicity(atoms, self.config.charge, self.config.resolved_multiplicity)

    def relaxed(self, policy: RetryPolicy, attempt: int) -> Oracle | None:
        """Higher electronic temperature and more iterations for a retry."""
        cfg = self.config
        return self.with_settings(
            electronic_temperature_K=cfg.electronic_temperature_K
            * policy.electronic_temperature_factor**attempt,
            max_iterations=round(cfg.max_iterations * policy.iterations_factor**attempt),
        )


class XTB(_XTBBase):
    """GFN-xTB through tblite, the default oracle of pal-atoms.

    Args:
        config: :class:`XTBSettings`, or leave it out and pass its fields as keywords
            (``XTB(method="GFN1-xTB", charge=-2)``).

    Raises:
        SCFNotConverged: tblite reported a non-converged SCF.
        OracleError: any other tblite runtime error.
    """

    name = "xtb"

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        try:
            from tblite.interface import Calculator as TBLiteCalculator
        except ImportError as exc:  # pragma: no cover - tblite is a core dependency
            raise OracleSetupError(f"tblite is not importable ({exc}); pip install tblite") from exc
        charge, multiplicity = self.charge_and_multiplicity(atoms)
        cfg = self.config
        try:
            api = TBLiteCalculator(
                cfg.method,
                atoms.numbers,
                atoms.positions / Bohr,
                charge,
                multiplicity - 1,
                atoms.cell.array / Bohr,
                atoms.pbc,
            )
            api.set("verbosity", 0)
            api.set("accuracy", cfg.accuracy)
            api.set("temperature", cfg.electronic_temperature_K * kB / Hartree)
            api.set("max-iter", cfg.max_iterations)
            res = api.singlepoint()
        except RuntimeError as exc:  # TBLiteRuntimeError and TBLiteValueError derive from it
            message = str(exc)
            if "not converged" in message.lower():
                raise SCFNotConverged(f"tblite: {message}") from exc
            raise OracleError(f"tblite: {message}") from exc
        out: dict[str, Any] = {
            "energy": float(res["energy"]) * Hartree,
            "forces": -np.asarray(res["gradient"]) * Hartree / Bohr,
        }
        if want_stress:
            virial = np.asarray(res["virial"]) * Hartree / atoms.get_volume()
            out["stress"] = virial.flat[[0, 4, 8, 5, 2, 1]]
        return out


class XTBPython(_XTBBase):
    """GFN-xTB through xtb-python (package ``xtb``), for users who have it.

    Same settings and numbers as :class:`XTB` (to ~1e-7 eV); xtb-python is unmaintained
    and ships wheels for CPython 3.11 only.

    Raises:
        OracleSetupError: ``xtb`` is not importable (from :meth:`check`).
        SCFNotConverged: xtb reported a non-converged SCF.
        OracleError: any other xtb error.
    """

    name = "xtb-python"

    def check(self, atoms: Atoms) -> None:
        """:meth:`Oracle.check`, plus a clear error when xtb-python is not installed."""
        _import_xtb()
        super().check(atoms)

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        xtb_interface, xtb_libxtb = _import_xtb()
        charge, multiplicity = self.charge_and_multiplicity(atoms)
        cfg = self.config
        param = {
            "GFN2-xTB": xtb_interface.Param.GFN2xTB,
            "GFN1-xTB": xtb_interface.Param.GFN1xTB,
        }[cfg.method]
        try:
            api = xtb_interface.Calculator(
                param,
                atoms.numbers,
                atoms.positions / Bohr,
                charge,
                multiplicity - 1,
                atoms.cell.array / Bohr if atoms.pbc.any() else None,
                atoms.pbc if atoms.pbc.any() else None,
            )
            api.set_verbosity(xtb_libxtb.VERBOSITY_MUTED)
            api.set_accuracy(cfg.accuracy)
            api.set_electronic_temperature(cfg.electronic_temperature_K)
            api.set_max_iterations(cfg.max_iterations)
            res = api.singlepoint()
            energy = float(res.get_energy()) * Hartree
            gradient = np.asarray(res.get_gradient())
            virial = np.asarray(res.get_virial()) if want_stress else None
        except xtb_interface.XTBException as exc:
            message = " ".join(str(exc).split())
            if "not converge" in message.lower():
                raise SCFNotConverged(f"xtb: {message}") from exc
            raise OracleError(f"xtb: {message}") from exc
        out: dict[str, Any] = {"energy": energy, "forces": -gradient * Hartree / Bohr}
        if virial is not None:
            out["stress"] = (virial * Hartree / atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
        return out


def _import_xtb() -> tuple[Any, Any]:
    try:
        import xtb.interface
        import xtb.libxtb
    except ImportError as exc:
        raise OracleSetupError(
            f"oracle 'xtb-python' needs the xtb package ({exc}); pip install xtb "
            "(CPython 3.11 wheels only), or use oracle 'xtb' (tblite)"
        ) from exc
    return xtb.interface, xtb.libxtb
