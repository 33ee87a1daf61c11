"""Excited states through PySCF: TDA or TDDFT on a restricted Kohn-Sham ground state.

:class:`PySCFExcited` labels the singlet states S0..S(n-1) of a closed-shell molecule:
their energies and the analytic forces of every state (one TDA/TDDFT gradient per
excited state, ``td.nuc_grad_method()``; the ground state's from the SCF). It is an
ordinary oracle as well: ``energy`` and ``forces`` are those of S0, so it labels ground
states where a run asks for nothing else, and the per-state results sit next to them:

* ``state_energies``: state energies in eV, shape ``(n_states,)``, S0 first;
* ``state_forces``: forces of each state in eV/Å, shape ``(n_states, n_atoms, 3)``;
* ``excitation_energies``: S(k) - S0 in eV, shape ``(n_states - 1,)``;
* ``oscillator_strengths``: length-gauge oscillator strengths of S0 -> S(k), shape
  ``(n_states - 1,)``.

Defaults: B3LYP/6-31G*, the functional and basis of PAL's photodynamics application
(there with Turbomole), TDA with 3 states (S0, S1, S2). PySCF has no density-fitted
TDDFT gradients, so the SCF here is always exact-integral (``density_fit=False``): a
formaldehyde label with two excited-state gradients takes about 10 s on one core.
Nonadiabatic couplings are not computed (CPU PySCF has none for TDDFT); the surface
hopping that uses these labels needs energies and forces only. The keys are
``state_*`` rather than ASE's ``energies``, which ASE reserves for per-atom energies
(shape ``(n_atoms,)``) and writes as such into extxyz files.

A ground state that does not converge, or excited states whose Davidson solver does not
converge, raise :class:`~pal_atoms.oracles.base.SCFNotConverged`, so the label is
recorded ``unconverged``, never stored as data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from pal_atoms.oracles.base import Oracle, SCFNotConverged, as_int_or_none
from pal_atoms.oracles.excited import ExcitedStates, check_states
from pal_atoms.oracles.pyscf_dft import PySCF, PySCFSettings

from pal_atoms.core.errors import ConfigError, OracleError

__all__ = ["EXCITED_PROPERTIES", "PySCFExcited", "PySCFExcitedSettings"]

logger = logging.getLogger(__name__)

#: Result keys of :class:`PySCFExcited` besides energy, free_energy and forces.
EXCITED_PROPERTIES = (
    "state_energies",
    "state_forces",
    "excitation_energies",
    "oscillator_strengths",
)


@dataclass(frozen=True, kw_only=True)
class PySCFExcitedSettings(PySCFSettings):
    """Settings of the excited-state oracle: :class:`PySCFSettings` plus the states.

    Args:
        n_states: Electronic states labelled, the ground state included (2: S0 and S1).
        excitation: ``"tda"`` (Tamm-Dancoff, the robust default) or ``"tddft"`` (full
            linear response; can fail on near-instabilities of the ground state).
        max_cycle_excited: Most Davidson iterations of the excited-state solver.
        conv_tol_excited_Eh: Convergence threshold of the excitation energies, Hartree.

    The inherited fields keep their meaning, with other defaults: ``functional``
    B3LYP, ``basis`` 6-31G*, ``reference`` RKS (closed-shell singlets only) and
    ``density_fit`` False (PySCF has no density-fitted TDDFT gradients).
    """

    functional: str = "B3LYP"
    basis: str = "6-31G*"
    density_fit: bool = False
    reference: Literal["auto", "RKS", "UKS"] = "RKS"
    n_states: int = 3
    excitation: Literal["tda", "tddft"] = "tda"
    max_cycle_excited: int = 100
    conv_tol_excited_Eh: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        check_states(self)
        if self.density_fit:
            raise ConfigError(
                "density_fit must be False for excited states: PySCF has no density-fitted "
                "TDDFT gradients"
            )
        if self.reference != "RKS":
            raise ConfigError(
                f"excited states need reference 'RKS' (closed-shell singlets), "
                f"got {self.reference!r}"
            )
        if self.smearing_sigma_Eh > 0:
            raise ConfigError("excited states need integer occupations (smearing_sigma_Eh = 0)")
        cycles = as_int_or_none("max_cycle_excited", self.max_cycle_excited)
        if cycles is None or cycles < 1:
            raise ConfigError(
                f"max_cycle_excited must be a positive integer, got {self.max_cycle_excited}"
            )
        if not (0 < float(self.conv_tol_excited_Eh) < 1):
            raise ConfigError(
                f"conv_tol_excited_Eh must be in (0, 1), got {self.conv_tol_excited_Eh}"
            )


class PySCFExcited(ExcitedStates, PySCF):
    """Singlet excited states S0..S(n-1) by TDA/TDDFT in PySCF (module docstring).

    Args:
        config: :class:`PySCFExcitedSettings`, or its fields as keywords
            (``PySCFExcited(n_states=3, excitation="tda")``).

    Raises:
        SCFNotConverged: the ground state or the excited-state solver did not converge.
        StructureError: an open-shell structure (odd electron count or multiplicity > 1).
    """

    name = "pyscf-excited"
    ground_type: ClassVar[type[Oracle]] = PySCF
    settings_type: ClassVar[type] = PySCFExcitedSettings
    implemented_properties = ("energy", "free_energy", "forces", *EXCITED_PROPERTIES)  # type: ignore[assignment]
    config: PySCFExcitedSettings

    @property
    def method(self) -> str:
        """``"TDA-B3LYP/6-31G*"`` or ``"TDDFT-..."``."""
        return f"{self.config.excitation.upper()}-{self.config.functional}/{self.config.basis}"

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        mf, ground = self._ground_state(atoms)
        cfg = self.config
        td = mf.TDA() if cfg.excitation == "tda" else mf.TDDFT()
        td.nstates = self.n_states - 1
        td.max_cycle = int(cfg.max_cycle_excited)
        td.conv_tol = float(cfg.conv_tol_excited_Eh)
        td.verbose = 0
        td.kernel()
        converged = np.atleast_1d(np.asarray(td.converged, dtype=bool))
        excitations = np.atleast_1d(np.asarray(td.e, dtype=float))
        if converged.size < self.n_states - 1 or not converged.all():
            raise SCFNotConverged(
                f"PySCF {self.method}: the excited-state solver did not converge "
                f"({int(converged.sum())} of {self.n_states - 1} roots in "
                f"{cfg.max_cycle_excited} iterations)"
            )
        if np.any(excitations <= 0):
            raise OracleError(
                f"PySCF {self.method}: non-positive excitation energy "
                f"({excitations.min() * Hartree:.3f} eV); the ground state is unstable"
            )
        gradients = td.nuc_grad_method()
        gradients.verbose = 0
        forces = [np.asarray(ground["forces"], dtype=float)]
        for state in range(1, self.n_states):
            g = gradients.kernel(state=state)
            forces.append(-np.asarray(g, dtype=float) * Hartree / Bohr)
        state_forces = np.stack(forces)
        exc_eV = excitations[: self.n_states - 1] * Hartree
        energies = ground["energy"] + np.concatenate([[0.0], exc_eV])
        if not (np.all(np.isfinite(energies)) and np.all(np.isfinite(state_forces))):
            raise OracleError(f"PySCF {self.method} returned non-finite excited-state results")
        strengths = np.asarray(td.oscillator_strength(gauge="length"), dtype=float)
        logger.debug("PySCF %s: excitation energies %s eV", self.method, exc_eV.round(4))
        return {
            **ground,
            "state_energies": energies,
            "state_forces": state_forces,
            "excitation_energies": exc_eV,
            "oscillator_strengths": strengths[: self.n_states - 1],
        }
