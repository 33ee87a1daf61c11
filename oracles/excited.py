"""What the excited-state oracles share: states, the singlet check, their ground state.

:class:`ExcitedStates` is mixed into :class:`~pal_atoms.oracles.PySCFExcited` and
:class:`~pal_atoms.oracles.TurbomoleExcited` ahead of their ground-state oracle class;
their settings carry ``n_states`` and ``excitation`` (checked by :func:`check_states`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ase import Atoms
from pal_atoms.oracles.base import Oracle, as_int_or_none

from pal_atoms.core.errors import ConfigError, StructureError

__all__ = ["ExcitedStates", "check_states"]


def check_states(settings: Any) -> None:
    """Check ``n_states`` (>= 2: S0 and S1) and ``excitation`` (``tda``/``tddft``).

    Raises:
        ConfigError: either is out of range.
    """
    n = as_int_or_none("n_states", settings.n_states)
    if n is None or n < 2:
        raise ConfigError(f"n_states must be an integer >= 2 (S0 and S1), got {settings.n_states}")
    if settings.excitation not in ("tda", "tddft"):
        raise ConfigError(f"excitation must be 'tda' or 'tddft', got {settings.excitation!r}")


class ExcitedStates:
    """Mixin of the singlet excited-state oracles (module docstring)."""

    #: The ground-state oracle of the same program (its settings are a base class).
    ground_type: ClassVar[type[Oracle]]
    config: Any
    name: str

    @property
    def n_states(self) -> int:
        """States labelled, S0 included."""
        return int(self.config.n_states)

    def ground_state(self) -> Oracle:
        """The ground-state oracle of the same functional, basis, grid and SCF settings."""
        settings_type = self.ground_type.settings_type
        base = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(settings_type)}
        return self.ground_type(settings_type(**base))

    def check(self, atoms: Atoms) -> None:
        """The ground-state oracle's checks, plus: closed-shell singlets only."""
        super().check(atoms)  # type: ignore[misc]
        _, multiplicity = self.charge_and_multiplicity(atoms)  # type: ignore[attr-defined]
        if multiplicity != 1:
            raise StructureError(
                f"oracle {self.name!r} labels closed-shell singlets (RKS reference), "
                f"got multiplicity {multiplicity}"
            )

    def describe(self, atoms: Atoms) -> dict[str, Any]:
        """The ground-state oracle's description, plus the states and the method."""
        info: dict[str, Any] = super().describe(atoms)  # type: ignore[misc]
        info["n_states"] = self.n_states
        info["excitation"] = self.config.excitation
        return info
