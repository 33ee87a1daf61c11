"""Oracles by name: :func:`make_oracle` (what the command line's ``--oracle`` uses)."""

from __future__ import annotations

from typing import Any

from pal_atoms.oracles.base import Oracle
from pal_atoms.oracles.pyscf_dft import PySCF
from pal_atoms.oracles.pyscf_excited import PySCFExcited
from pal_atoms.oracles.turbomole import Turbomole
from pal_atoms.oracles.turbomole_excited import TurbomoleExcited
from pal_atoms.oracles.xtb import XTB, XTBPython

from pal_atoms.core.errors import ConfigError

__all__ = ["EXCITED", "ORACLES", "make_oracle"]

#: Oracle classes by name.
ORACLES: dict[str, type[Oracle]] = {
    XTB.name: XTB,
    XTBPython.name: XTBPython,
    PySCF.name: PySCF,
    PySCFExcited.name: PySCFExcited,
    Turbomole.name: Turbomole,
    TurbomoleExcited.name: TurbomoleExcited,
}

#: Oracles that label several electronic states (``state_energies``, ``state_forces``).
EXCITED = (PySCFExcited.name, TurbomoleExcited.name)


def make_oracle(name: str, **settings: Any) -> Oracle:
    """Build an oracle by name.

    Args:
        name: ``"xtb"`` (tblite), ``"xtb-python"``, ``"pyscf"``, ``"pyscf-excited"``
            (TDA/TDDFT states), ``"turbomole"`` or ``"turbomole-excited"``.
        **settings: Fields of that oracle's settings dataclass; ``oracle.settings`` of an
            existing oracle (or ``label.settings``) rebuilds an equivalent one.

    Returns:
        The oracle (nothing heavy is imported or started yet).

    Raises:
        ConfigError: unknown name, unknown or invalid setting (a ``ValueError``).
    """
    try:
        cls = ORACLES[name]
    except KeyError:
        raise ConfigError(
            f"unknown oracle {name!r}; known: {', '.join(sorted(ORACLES))} "
            "(wrap any other ASE calculator with pal_atoms.oracles.Wrapped)"
        ) from None
    derived = {"ecp_min_Z"}  # reported in settings, not a setting itself
    return cls(**{k: v for k, v in settings.items() if k not in derived})
