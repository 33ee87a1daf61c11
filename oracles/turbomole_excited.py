"""Excited states through Turbomole: ``escf``/``egrad`` (TDA or TDDFT) on an RKS ground state.

:class:`TurbomoleExcited` labels the singlet states S0..S(n-1) of a closed-shell molecule
as :class:`~pal_atoms.oracles.PySCFExcited` does, with the same result keys
(``state_energies`` (n_states,), ``state_forces`` (n_states, n_atoms, 3),
``excitation_energies`` (n_states - 1,)), so ``pal-atoms sh --oracle turbomole-excited``
runs the same job. PAL's photodynamics application labelled with Turbomole.

One label runs in its own scratch directory: ``define``, then ``ridft``/``rdgrad`` (or
``dscf``/``grad``) for S0 through ASE's calculator with the tight convergence the
Turbomole manual asks of a response calculation, then ``egrad`` once per excited state
(``$exopt k``; ``$scfinstab ciss`` for TDA, ``rpas`` for TDDFT, ``$soes`` with n - 1
roots in C1). ``egrad`` writes the total energy of the state it differentiates and its
gradient as a new cycle of the ``gradient`` file, which is where both are read.
Oscillator strengths are not read (Turbomole's spectrum file differs between versions).

A run that ends abnormally is a failed label (``unconverged`` when Turbomole says it did
not converge); the directory is kept and named in the error, as for the ground state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from pal_atoms.oracles.base import Oracle, SCFNotConverged
from pal_atoms.oracles.excited import ExcitedStates, check_states
from pal_atoms.oracles.turbomole import Turbomole, TurbomoleSettings

from pal_atoms.core.errors import ConfigError, OracleError

__all__ = [
    "TurbomoleExcited",
    "TurbomoleExcitedSettings",
    "last_gradient",
    "set_data_group",
]

logger = logging.getLogger(__name__)

#: Ground-state convergence for response calculations (Turbomole manual: $scfconv 7,
#: $denconv 1d-7): errors of the ground state enter the excited states linearly.
_SCF_CONV_EH = 1e-7
_DENSITY_CONV = 1e-7


@dataclass(frozen=True, kw_only=True)
class TurbomoleExcitedSettings(TurbomoleSettings):
    """Settings of the Turbomole excited-state oracle: :class:`TurbomoleSettings` plus states.

    Args:
        n_states: Electronic states labelled, the ground state included (2: S0 and S1).
        excitation: ``"tda"`` (Tamm-Dancoff, ``$scfinstab ciss``) or ``"tddft"``
            (``rpas``).

    The inherited fields keep their meaning, with the defaults of the PySCF
    excited-state oracle (B3LYP/6-31G*, in Turbomole's spelling ``b3-lyp``).
    """

    functional: str = "b3-lyp"
    basis: str = "6-31G*"
    n_states: int = 3
    excitation: Literal["tda", "tddft"] = "tda"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_states(self)
        if self.multiplicity not in (None, 1):
            raise ConfigError(
                f"excited states need a closed-shell singlet (multiplicity 1), "
                f"got {self.multiplicity}"
            )

    @property
    def executables(self) -> tuple[str, ...]:
        """Turbomole programs this setting needs: the ground state's and ``egrad``."""
        return (*super().executables, "egrad")


class TurbomoleExcited(ExcitedStates, Turbomole):
    """Singlet excited states S0..S(n-1) by TDA/TDDFT in Turbomole (module docstring).

    Args:
        config: :class:`TurbomoleExcitedSettings`, or its fields as keywords.

    Raises:
        OracleSetupError: Turbomole executables missing, ``egrad`` included.
        SCFNotConverged: the ground state or an excited-state solver did not converge.
        StructureError: an open-shell structure (odd electron count or multiplicity > 1).
        OracleError: any other Turbomole failure (scratch directory kept, path in text).
    """

    name = "turbomole-excited"
    ground_type: ClassVar[type[Oracle]] = Turbomole
    settings_type: ClassVar[type] = TurbomoleExcitedSettings
    implemented_properties = (  # type: ignore[assignment]
        "energy",
        "free_energy",
        "forces",
        "state_energies",
        "state_forces",
        "excitation_energies",
    )
    config: TurbomoleExcitedSettings

    @property
    def method(self) -> str:
        """``"TDA-b3-lyp/6-31G* (RI)"`` or ``"TDDFT-..."``."""
        return f"{self.config.excitation.upper()}-{super().method}"

    def ase_parameters(self, atoms: Atoms) -> dict[str, Any]:
        """:meth:`Turbomole.ase_parameters` with the tight ground-state convergence."""
        return {
            **super().ase_parameters(atoms),
            "scf energy convergence": _SCF_CONV_EH * Hartree,
            "density convergence": _DENSITY_CONV,
        }

    def _after_ground_state(self, atoms: Atoms, ground: dict[str, Any]) -> dict[str, Any]:
        from ase.calculators.turbomole.executor import execute

        control = Path("control")
        instab = "ciss" if self.config.excitation == "tda" else "rpas"
        set_data_group(control, "scfinstab", instab)
        set_data_group(control, "soes", f"\n a  {self.n_states - 1}")
        energies = [float(ground["energy"])]
        forces = [np.asarray(ground["forces"], dtype=float)]
        for state in range(1, self.n_states):
            set_data_group(control, "exopt", str(state))
            try:
                execute(["egrad"])
            except OSError as exc:
                text = " ".join(str(exc).split())[:2000]
                kind = SCFNotConverged if "converge" in text.lower() else OracleError
                raise kind(f"Turbomole egrad, state S{state}: {text}") from exc
            energy, state_forces = last_gradient(Path("gradient"), len(atoms))
            if not energy > energies[0]:
                raise OracleError(
                    f"Turbomole egrad, state S{state}: energy {energy:.6f} eV is not above "
                    f"the ground state's {energies[0]:.6f} eV (unstable ground state, or an "
                    "egrad that writes no excited-state energy)"
                )
            energies.append(energy)
            forces.append(state_forces)
        state_energies = np.asarray(energies)
        logger.debug("Turbomole %s: states %s eV", self.method, state_energies.round(4))
        return {
            "state_energies": state_energies,
            "state_forces": np.stack(forces),
            "excitation_energies": state_energies[1:] - state_energies[0],
        }


def set_data_group(control: Path, name: str, body: str) -> None:
    """Replace (or add) the data group ``$name`` of a Turbomole ``control`` file.

    Args:
        control: The ``control`` file; it must end with ``$end``.
        name: Data group name without ``$`` (``"exopt"``).
        body: Text after ``$name``: on the same line, or starting with a newline for a
            group of several lines.

    Raises:
        OracleError: no ``$end`` in the file.
    """
    lines = control.read_text().splitlines()
    out: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("$"):
            skipping = line.split()[0] == f"${name}"
        if not skipping:
            out.append(line)
    try:
        end = next(i for i, line in enumerate(out) if line.split()[:1] == ["$end"])
    except StopIteration:
        raise OracleError(f"Turbomole control file {control} has no $end") from None
    text = f"${name}" + (body if body.startswith("\n") else f" {body}")
    out[end:end] = text.splitlines()
    control.write_text("\n".join(out) + "\n")


def last_gradient(path: Path, n_atoms: int) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å, shape ``(n_atoms, 3)``) of the last cycle of ``path``.

    Raises:
        OracleError: no ``$grad`` cycle with ``n_atoms`` gradient lines.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise OracleError(f"Turbomole gradient file {path} cannot be read: {exc}") from None
    starts = [i for i, line in enumerate(lines) if line.strip().startswith("cycle =")]
    if not starts:
        raise OracleError(f"Turbomole gradient file {path} holds no cycle")
    start = starts[-1]
    try:
        energy_Eh = float(lines[start].split("=")[2].split()[0].replace("D", "E"))
        rows = lines[start + 1 + n_atoms : start + 1 + 2 * n_atoms]
        gradient = np.array([[float(v.replace("D", "E")) for v in row.split()[:3]] for row in rows])
    except (IndexError, ValueError) as exc:
        raise OracleError(f"Turbomole gradient file {path}: unreadable last cycle") from exc
    if gradient.shape != (n_atoms, 3) or not np.all(np.isfinite(gradient)):
        raise OracleError(f"Turbomole gradient file {path}: no gradient of {n_atoms} atoms")
    return energy_Eh * Hartree, -gradient * Hartree / Bohr
