"""Kohn-Sham DFT through PySCF (GPU4PySCF when importable and a GPU is present).

Energies and analytic gradients; restricted (RKS) for singlets and unrestricted (UKS)
otherwise unless told; density fitting on by default. Heavy elements get effective core
potentials automatically: with a def2 basis, every element from Rb (Z = 37) on uses the
def2 ECP of the same name (PySCF would otherwise silently run all-electron). The ECP
rule is part of the settings (and so of the hash); the elements that used an ECP and the
electrons it replaced are stated in each label's ``atoms.info``.
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
from pal_atoms.oracles.base import (
    Oracle,
    SCFNotConverged,
    as_int_or_none,
    check_finite_positive,
    unique_symbols,
)

from pal_atoms.errors import ConfigError, OracleSetupError, StructureError

if TYPE_CHECKING:
    from pal_atoms.oracles.labelling import RetryPolicy

__all__ = ["PySCF", "PySCFSettings", "gpu_available"]

logger = logging.getLogger(__name__)

#: def2 ECPs start at Rb.
ECP_MIN_Z = 37


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
        max_cycle: Most SCF cycles before the label is ``unconverged``.
        conv_tol_Eh: SCF energy convergence threshold in Hartree.
        level_shift_Eh: Virtual-orbital level shift in Hartree (0: none).
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
    max_cycle: int = 100
    conv_tol_Eh: float = 1e-9
    level_shift_Eh: float = 0.0
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
        for name in ("max_cycle", "max_memory_MB"):
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
        SCFNotConverged: ``mf.converged`` is False after ``max_cycle`` cycles.
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
        """Charge, multiplicity, the ECP per element and the backend (CPU or GPU)."""
        info = super().describe(atoms)
        ecps = self.ecp_for(atoms)
        if ecps:
            info["ecp"] = ";".join(f"{s}:{n}" for s, n in ecps.items())
            mol = self._molecule(atoms, info["charge"], info["multiplicity"])
            info["ecp_core_electrons"] = int(sum(mol.atom_nelec_core(i) for i in range(len(atoms))))
        info["backend"] = "gpu4pyscf" if self._use_gpu_resolved() else "pyscf"
        return info

    def relaxed(self, policy: RetryPolicy, attempt: int) -> Oracle | None:
        """Level shift plus ``policy.level_shift_Eh`` and more SCF cycles for a retry."""
        cfg = self.config
        return self.with_settings(
            level_shift_Eh=cfg.level_shift_Eh + policy.level_shift_Eh * attempt,
            max_cycle=round(cfg.max_cycle * policy.iterations_factor**attempt),
        )

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
        mf.max_cycle = cfg.max_cycle
        mf.conv_tol = cfg.conv_tol_Eh
        mf.level_shift = cfg.level_shift_Eh
        mf.verbose = 0
        return mf

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        charge, multiplicity = self.charge_and_multiplicity(atoms)
        mol = self._molecule(atoms, charge, multiplicity)
        mf = self._mean_field(mol, multiplicity)
        energy_Eh = float(mf.kernel())
        if not mf.converged:
            raise SCFNotConverged(
                f"PySCF {self.method} SCF not converged in {self.config.max_cycle} cycles "
                f"(last energy {energy_Eh:.8f} Eh)"
            )
        gradient = mf.nuc_grad_method().kernel()
        gradient = gradient.get() if hasattr(gradient, "get") else gradient  # cupy -> numpy
        return {
            "energy": energy_Eh * Hartree,
            "forces": -np.asarray(gradient, dtype=float) * Hartree / Bohr,
        }
