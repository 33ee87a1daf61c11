"""Kohn-Sham DFT through PySCF (GPU4PySCF when importable and a GPU is present).

Energies and analytic gradients; restricted (RKS) for singlets and unrestricted (UKS)
otherwise unless told; density fitting on by default. Heavy elements get effective core
potentials automatically: with a def2 basis, every element from Rb (Z = 37) on uses the
def2 ECP of the same name (PySCF would otherwise silently run all-electron). The ECP
rule is part of the settings (and so of the hash); the elements that used an ECP and the
electrons it replaced are stated in each label's ``atoms.info``.

The SCF runs DIIS and, when that fails, a second-order solver from where DIIS stopped;
only a converged aufbau solution becomes a label (:mod:`pal_atoms.oracles._pyscf_scf`).
Fermi smearing is opt-in (``smearing_sigma_Eh``): it turns the energy into the Mermin
free energy, so it is hashed, stated in ``atoms.info`` and never switched on by a retry.
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from pal_atoms.oracles._pyscf_scf import SCFReport, solve
from pal_atoms.oracles.base import (
    Oracle,
    SCFNotConverged,
    as_int_or_none,
    check_finite_positive,
    unique_symbols,
)

from pal_atoms.core.errors import ConfigError, OracleSetupError, StructureError

if TYPE_CHECKING:
    from pal_atoms.oracles.labelling import RetryPolicy

__all__ = ["PySCF", "PySCFSettings", "gpu_available"]

logger = logging.getLogger(__name__)

#: def2 ECPs start at Rb.
ECP_MIN_Z = 37
#: Initial guesses PySCF builds from the molecule alone (``chk`` needs a file).
INIT_GUESSES = frozenset({"minao", "atom", "huckel", "mod_huckel", "1e", "hcore", "vsap", "sap"})


@dataclass(frozen=True, kw_only=True)
class PySCFSettings:
    """Settings of the PySCF DFT oracle.

    Args:
        functional: Exchange-correlation functional in PySCF/libxc syntax (``"PBE"``,
            ``"B3LYP"``, ``"wB97X-V"``); ``"HF"`` runs Hartree-Fock.
        basis: Orbital basis set name (``"def2-SVP"``, ``"6-31G*"``).
        ecp: ``"auto"``: the def2 ECP for Z >= 37 with a def2 basis, none otherwise;
            a name: that ECP for Z >= 37; ``None``: all-electron.
        density_fit: Use density fitting (RI-J) for the Coulomb (and exchange) terms.
        auxbasis: Auxiliary basis for density fitting (``None``: PySCF's choice).
        reference: ``"auto"`` (RKS for singlets, UKS otherwise), ``"RKS"`` or ``"UKS"``.
        charge: Total charge in e; ``None`` reads ``atoms.info['charge']`` (default 0).
        multiplicity: Spin multiplicity 2S+1 (PySCF's ``spin`` + 1); ``None`` reads
            ``atoms.info`` or takes the lowest possible.
        max_cycle: Most DIIS cycles; the second-order stage gets at most
            ``min(max_cycle, 50)`` macro iterations before the label is ``unconverged``.
        conv_tol_Eh: SCF energy convergence threshold in Hartree.
        level_shift_Eh: Virtual-orbital level shift in Hartree (0: none) for DIIS.
        init_guess: PySCF initial guess (``"minao"``, ``"atom"``, ``"huckel"``, ...).
        diis_space: Fock matrices DIIS extrapolates from.
        damping: Fraction of the previous Fock matrix mixed in, in [0, 1) (0: none).
        second_order: ``"fallback"``: a second-order (Newton) SCF continues from the
            DIIS orbitals when DIIS fails; ``"always"``: Newton from the initial guess;
            ``"never"``: DIIS only.
        smearing_sigma_Eh: Fermi-Dirac smearing width in Hartree (0: integer
            occupations). When > 0 the energy is the Mermin free energy ``E - sigma*S``,
            consistent with the forces; there is no second-order stage (PySCF has none
            for fractional occupations).
        grid_level: DFT integration grid level (0-9).
        use_gpu: ``"auto"``: GPU4PySCF when importable and a GPU is present; ``True``:
            require it; ``False``: CPU.
        max_memory_MB: Memory PySCF may use in MiB.
        min_distance_A: Structures with atoms closer than this (Å) are refused.
    """

    functional: str = "PBE"
    basis: str = "def2-SVP"
    ecp: str | None = "auto"
    density_fit: bool = True
    auxbasis: str | None = None
    reference: Literal["auto", "RKS", "UKS"] = "auto"
    charge: int | None = None
    multiplicity: int | None = None
    max_cycle: int = 50
    conv_tol_Eh: float = 1e-9
    level_shift_Eh: float = 0.0
    init_guess: str = "minao"
    diis_space: int = 8
    damping: float = 0.0
    second_order: Literal["fallback", "always", "never"] = "fallback"
    smearing_sigma_Eh: float = 0.0
    grid_level: int = 3
    use_gpu: bool | Literal["auto"] = "auto"
    max_memory_MB: int = 4000
    min_distance_A: float = 0.5

    def __post_init__(self) -> None:
        for name in ("functional", "basis"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string")
        if self.reference not in ("auto", "RKS", "UKS"):
            raise ConfigError(f"reference must be 'auto', 'RKS' or 'UKS', got {self.reference!r}")
        as_int_or_none("charge", self.charge)
        mult = as_int_or_none("multiplicity", self.multiplicity)
        if mult is not None and mult < 1:
            raise ConfigError(f"multiplicity must be >= 1, got {mult}")
        if self.reference == "RKS" and mult is not None and mult != 1:
            raise ConfigError(f"reference 'RKS' needs multiplicity 1, got {mult}")
        for name in ("max_cycle", "max_memory_MB", "diis_space"):
            value = as_int_or_none(name, getattr(self, name))
            if value is None or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        grid = as_int_or_none("grid_level", self.grid_level)
        if grid is None or not 0 <= grid <= 9:
            raise ConfigError(f"grid_level must be an integer in 0..9, got {self.grid_level}")
        check_finite_positive("conv_tol_Eh", self.conv_tol_Eh)
        check_finite_positive("level_shift_Eh", self.level_shift_Eh, allow_zero=True)
        check_finite_positive("min_distance_A", self.min_distance_A, allow_zero=True)
        if self.use_gpu not in (True, False, "auto"):
            raise ConfigError(f"use_gpu must be True, False or 'auto', got {self.use_gpu!r}")
        self._check_scf_solver()

    def _check_scf_solver(self) -> None:
        check_finite_positive("smearing_sigma_Eh", self.smearing_sigma_Eh, allow_zero=True)
        check_finite_positive("damping", self.damping, allow_zero=True)
        if self.damping >= 1:
            raise ConfigError(f"damping must be in [0, 1), got {self.damping}")
        if self.init_guess not in INIT_GUESSES:
            raise ConfigError(
                f"init_guess must be one of {sorted(INIT_GUESSES)}, got {self.init_guess!r}"
            )
        if self.second_order not in ("fallback", "always", "never"):
            raise ConfigError(
                f"second_order must be 'fallback', 'always' or 'never', got {self.second_order!r}"
            )
        if self.smearing_sigma_Eh > 0 and self.second_order == "always":
            raise ConfigError("second_order='always' cannot run with smearing_sigma_Eh > 0")

    @property
    def ecp_name(self) -> str | None:
        """The ECP set used for Z >= 37 (``None``: all-electron)."""
        if self.ecp == "auto":
            return self.basis if self.basis.lower().startswith("def2") else None
        return self.ecp


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when GPU4PySCF imports and CUDA reports at least one device."""
    try:
        import cupy  # type: ignore[import-not-found]
        import gpu4pyscf  # noqa: F401
    except ImportError:
        return False
    try:
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # any CUDA runtime error means: no usable GPU
        return False


def _import_pyscf() -> Any:
    try:
        import pyscf
        from pyscf import dft, gto, scf  # noqa: F401
    except ImportError as exc:
        raise OracleSetupError(
            f"oracle 'pyscf' needs PySCF ({exc}); pip install 'pal-atoms[dft]'"
        ) from exc
    return pyscf


class PySCF(Oracle):
    """DFT oracle through PySCF (molecules and clusters; no periodic cells).

    Args:
        config: :class:`PySCFSettings`, or leave it out and pass its fields as keywords
            (``PySCF(functional="PBE", basis="def2-SVP", charge=-2)``).

    Raises:
        SCFNotConverged: neither DIIS nor the second-order stage converged, or the
            solution is not aufbau (an excited state).
        OracleSetupError: PySCF missing, or ``use_gpu=True`` without a usable GPU.
    """

    name = "pyscf"
    settings_type: ClassVar[type] = PySCFSettings
    #: Device and memory change the speed, not the numbers.
    unhashed_fields: ClassVar[frozenset[str]] = frozenset(
        {"min_distance_A", "use_gpu", "max_memory_MB"}
    )
    supports_pbc: ClassVar[bool] = False
    config: PySCFSettings
    #: What the most recent SCF of this instance did (``None`` before the first).
    last_scf: SCFReport | None = None

    @property
    def method(self) -> str:
        """``"functional/basis"``, e.g. ``"PBE/def2-SVP"``."""
        return f"{self.config.functional}/{self.config.basis}"

    @property
    def settings(self) -> dict[str, Any]:
        """Settings, with the ECP rule resolved (``ecp`` name and ``ecp_min_Z``)."""
        out = super().settings
        out["ecp"] = self.config.ecp_name
        out["ecp_min_Z"] = ECP_MIN_Z if self.config.ecp_name else None
        return out

    def _use_gpu_resolved(self) -> bool:
        if self.config.use_gpu == "auto":
            return gpu_available()
        return bool(self.config.use_gpu)

    def ecp_for(self, atoms: Atoms) -> dict[str, str]:
        """ECP per element symbol for ``atoms`` (empty when all-electron)."""
        name = self.config.ecp_name
        if name is None:
            return {}
        heavy = {
            s
            for s, z in zip(atoms.get_chemical_symbols(), atoms.numbers, strict=False)
            if z >= ECP_MIN_Z
        }
        return dict.fromkeys(sorted(heavy), name)

    def check(self, atoms: Atoms) -> None:
        """:meth:`Oracle.check`, plus basis (and ECP) coverage of every element present."""
        super().check(atoms)
        pyscf = _import_pyscf()
        if self.config.use_gpu is True and not gpu_available():
            raise OracleSetupError("use_gpu=True but GPU4PySCF or a CUDA device is missing")
        ecps = self.ecp_for(atoms)
        for symbol in unique_symbols(atoms):
            try:
                with warnings.catch_warnings():  # "try basis-set-exchange" hints
                    warnings.simplefilter("ignore")
                    pyscf.gto.basis.load(self.config.basis, symbol)
                    ecp_data = (
                        pyscf.gto.basis.load_ecp(ecps[symbol], symbol) if symbol in ecps else 1
                    )
                if not ecp_data:
                    raise StructureError(f"ECP {ecps[symbol]!r} has no data for {symbol}")
            except (KeyError, RuntimeError) as exc:  # BasisNotFoundError derives from both
                raise StructureError(
                    f"basis {self.config.basis!r} has no functions for {symbol} ({exc})"
                ) from None

    def describe(self, atoms: Atoms) -> dict[str, Any]:
        """Charge, multiplicity, the ECP per element, the backend and any smearing."""
        info = super().describe(atoms)
        ecps = self.ecp_for(atoms)
        if ecps:
            info["ecp"] = ";".join(f"{s}:{n}" for s, n in ecps.items())
            mol = self._molecule(atoms, info["charge"], info["multiplicity"])
            info["ecp_core_electrons"] = int(sum(mol.atom_nelec_core(i) for i in range(len(atoms))))
        info["backend"] = "gpu4pyscf" if self._use_gpu_resolved() else "pyscf"
        if self.config.smearing_sigma_Eh > 0:  # the label's energy is not E but E - TS
            info["smearing"] = f"fermi {self.config.smearing_sigma_Eh:g} Eh"
            info["energy_kind"] = "Mermin free energy E - sigma*S"
        return info

    def relaxed(self, policy: RetryPolicy, attempt: int) -> Oracle | None:
        """Settings for retry number ``attempt``, escalating from the original ones.

        Every retry adds ``policy.level_shift_Eh * attempt`` of level shift and
        multiplies the DIIS cycles by ``policy.iterations_factor**attempt`` (a level
        shift damps the charge sloshing of small-gap clusters); from the second retry on,
        DIIS is also damped by 0.5 and starts from the superposition of atomic densities
        (``"atom"``), a different start that can reach another basin. The second-order
        fallback stays as configured; smearing is never switched on, since it would
        change what the energy means.
        """
        cfg = self.config
        changes: dict[str, Any] = {
            "level_shift_Eh": cfg.level_shift_Eh + policy.level_shift_Eh * attempt,
            "max_cycle": round(cfg.max_cycle * policy.iterations_factor**attempt),
        }
        if attempt >= 2:
            changes["damping"] = max(cfg.damping, 0.5)
            changes["init_guess"] = "atom" if cfg.init_guess == "minao" else cfg.init_guess
        return self.with_settings(**changes)

    def _molecule(self, atoms: Atoms, charge: int, multiplicity: int) -> Any:
        pyscf = _import_pyscf()
        ecps = self.ecp_for(atoms)
        try:
            return pyscf.gto.M(
                atom=[
                    (s, tuple(p))
                    for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=False)
                ],
                unit="Angstrom",
                basis=self.config.basis,
                ecp=ecps or None,
                charge=charge,
                spin=multiplicity - 1,
                verbose=0,
                max_memory=self.config.max_memory_MB,
            )
        except RuntimeError as exc:  # e.g. spin and electron count do not match
            raise StructureError(f"PySCF cannot build the molecule: {exc}") from exc

    def _mean_field(self, mol: Any, multiplicity: int) -> Any:
        cfg = self.config
        unrestricted = cfg.reference == "UKS" or (cfg.reference == "auto" and multiplicity != 1)
        hf = cfg.functional.upper() == "HF"
        package = "gpu4pyscf" if self._use_gpu_resolved() else "pyscf"  # same API
        dft_mod = importlib.import_module(f"{package}.dft")
        scf_mod = importlib.import_module(f"{package}.scf")
        if hf:
            mf = (scf_mod.UHF if unrestricted else scf_mod.RHF)(mol)
        else:
            mf = (dft_mod.UKS if unrestricted else dft_mod.RKS)(mol, xc=cfg.functional)
            mf.grids.level = cfg.grid_level
        if cfg.density_fit:
            mf = mf.density_fit(auxbasis=cfg.auxbasis)
        if cfg.smearing_sigma_Eh > 0:
            if not hasattr(mf, "smearing"):
                raise OracleSetupError(f"{package} offers no Fermi smearing for this SCF")
            # fix_spin keeps the requested multiplicity (one Fermi level per spin).
            mf = mf.smearing(sigma=cfg.smearing_sigma_Eh, method="fermi", fix_spin=unrestricted)
        mf.conv_tol = cfg.conv_tol_Eh
        mf.level_shift = cfg.level_shift_Eh
        mf.init_guess = cfg.init_guess
        mf.diis_space = cfg.diis_space
        mf.damp = cfg.damping
        mf.verbose = 0
        return mf

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        return self._ground_state(atoms)[1]

    def _ground_state(self, atoms: Atoms) -> tuple[Any, dict[str, Any]]:
        """Converged SCF object and its energy and forces (eV, eV/Å)."""
        cfg = self.config
        charge, multiplicity = self.charge_and_multiplicity(atoms)
        mol = self._molecule(atoms, charge, multiplicity)
        mf, report = solve(
            self._mean_field(mol, multiplicity),
            second_order=cfg.second_order,
            max_cycle=cfg.max_cycle,
            smeared=cfg.smearing_sigma_Eh > 0,
        )
        self.last_scf = report
        if not report.converged:
            stages = f"{report.diis_cycles} DIIS"
            if report.second_order_cycles:
                stages += f" + {report.second_order_cycles} second-order"
            what = (
                f"not converged in {cfg.max_cycle} cycles"
                if report.reason == "not converged"
                else report.reason
            )
            raise SCFNotConverged(
                f"PySCF {self.method} SCF {what} ({stages} cycles run; "
                f"last energy {report.energy_Eh:.8f} Eh)"
            )
        logger.debug(
            "PySCF %s: %d DIIS + %d second-order cycles, %.1f s",
            self.method,
            report.diis_cycles,
            report.second_order_cycles,
            report.wall_s,
        )
        gradient = mf.nuc_grad_method().kernel()
        gradient = gradient.get() if hasattr(gradient, "get") else gradient  # cupy -> numpy
        energy_eV = report.energy_Eh * Hartree
        return mf, {
            "energy": energy_eV,  # the free energy when smeared: the forces are its gradient
            "free_energy": energy_eV,
            "forces": -np.asarray(gradient, dtype=float) * Hartree / Bohr,
        }
