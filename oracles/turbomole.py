"""DFT through Turbomole, driven by ASE's :mod:`ase.calculators.turbomole`.

ASE's Turbomole calculator works in the current directory, so each label runs in its
own scratch directory (the process changes into it for the call: run Turbomole labels
in a worker process, or at least not from several threads). The directory is removed on
success and kept on failure, its path in the error text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from ase import Atoms
from pal_atoms.oracles.base import Oracle, SCFNotConverged, as_int_or_none, check_finite_positive

from pal_atoms.core.errors import ConfigError, OracleError, OracleSetupError

if TYPE_CHECKING:
    from pal_atoms.oracles.labelling import RetryPolicy

__all__ = ["Turbomole", "TurbomoleSettings", "missing_executables"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TurbomoleSettings:
    """Settings of the Turbomole oracle.

    Args:
        functional: Functional in Turbomole's spelling (``"pbe"``, ``"b3-lyp"``, ``"tpss"``).
        basis: Basis set name from Turbomole's library (``"def2-SVP"``); def2 ECPs come
            with it automatically.
        ri: Resolution of identity (``ridft``/``rdgrad`` instead of ``dscf``/``grad``).
        charge: Total charge in e; ``None`` reads ``atoms.info['charge']`` (default 0).
        multiplicity: Spin multiplicity; ``None`` reads ``atoms.info`` or takes the lowest.
        scf_iterations: Most SCF iterations before the label is ``unconverged``.
        scratch_dir: Folder under which each label gets its own directory (``None``: the
            system's temporary folder).
        min_distance_A: Structures with atoms closer than this (Å) are refused.
    """

    functional: str = "pbe"
    basis: str = "def2-SVP"
    ri: bool = True
    charge: int | None = None
    multiplicity: int | None = None
    scf_iterations: int = 60
    scratch_dir: str | None = None
    min_distance_A: float = 0.5

    def __post_init__(self) -> None:
        for name in ("functional", "basis"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string")
        as_int_or_none("charge", self.charge)
        mult = as_int_or_none("multiplicity", self.multiplicity)
        if mult is not None and mult < 1:
            raise ConfigError(f"multiplicity must be >= 1, got {mult}")
        iterations = as_int_or_none("scf_iterations", self.scf_iterations)
        if iterations is None or iterations < 1:
            raise ConfigError(f"scf_iterations must be a positive integer, got {iterations}")
        check_finite_positive("min_distance_A", self.min_distance_A, allow_zero=True)
        if self.scratch_dir is not None and not isinstance(self.scratch_dir, (str, os.PathLike)):
            raise ConfigError(f"scratch_dir must be a path or None, got {self.scratch_dir!r}")
        if self.scratch_dir is not None:
            object.__setattr__(self, "scratch_dir", str(self.scratch_dir))

    @property
    def executables(self) -> tuple[str, ...]:
        """Turbomole programs this setting needs."""
        return ("define", "ridft", "rdgrad") if self.ri else ("define", "dscf", "grad")


def missing_executables(names: tuple[str, ...]) -> list[str]:
    """Names among ``names`` that are not on ``PATH``."""
    return [n for n in names if shutil.which(n) is None]


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class Turbomole(Oracle):
    """DFT oracle through Turbomole (molecules and clusters).

    Args:
        config: :class:`TurbomoleSettings`, or leave it out and pass its fields.

    Raises:
        OracleSetupError: Turbomole executables missing (from :meth:`check`, naming them).
        SCFNotConverged: Turbomole reports a non-converged SCF.
        OracleError: any other Turbomole failure (scratch directory kept, path in text).
    """

    name = "turbomole"
    settings_type: ClassVar[type] = TurbomoleSettings
    unhashed_fields: ClassVar[frozenset[str]] = frozenset({"min_distance_A", "scratch_dir"})
    supports_pbc: ClassVar[bool] = False
    config: TurbomoleSettings

    @property
    def method(self) -> str:
        """``"functional/basis"`` (``"pbe/def2-SVP"``), ``" (RI)"`` appended with RI."""
        return f"{self.config.functional}/{self.config.basis}" + (" (RI)" if self.config.ri else "")

    def check(self, atoms: Atoms) -> None:
        """:meth:`Oracle.check`, after making sure the Turbomole programs are on ``PATH``."""
        missing = missing_executables(self.config.executables)
        if missing:
            raise OracleSetupError(
                f"Turbomole executables not found on PATH: {', '.join(missing)}; install "
                "Turbomole and load its environment (TURBODIR, then "
                "'source $TURBODIR/Config_turbo_env')"
            )
        super().check(atoms)

    def relaxed(self, policy: RetryPolicy, attempt: int) -> Oracle | None:
        """More SCF iterations for a retry."""
        iterations = round(self.config.scf_iterations * policy.iterations_factor**attempt)
        return self.with_settings(scf_iterations=iterations)

    def ase_parameters(self, atoms: Atoms) -> dict[str, Any]:
        """Keyword arguments for :class:`ase.calculators.turbomole.Turbomole`."""
        charge, multiplicity = self.charge_and_multiplicity(atoms)
        return {
            "use dft": self.config.functional.lower() != "hf",
            "density functional": self.config.functional,
            "basis set name": self.config.basis,
            "use resolution of identity": self.config.ri,
            "total charge": charge,
            "multiplicity": multiplicity,
            "uhf": multiplicity != 1,
            "scf iterations": self.config.scf_iterations,
            "task": "gradient",
        }

    def _compute(self, atoms: Atoms, *, want_stress: bool) -> dict[str, Any]:
        from ase.calculators.turbomole import Turbomole as ASETurbomole  # type: ignore[attr-defined]

        params = self.ase_parameters(atoms)
        root = self.config.scratch_dir
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="pal-turbomole-", dir=root))
        try:
            with _working_directory(workdir):
                work = atoms.copy()
                calc = ASETurbomole(**params)
                work.calc = calc
                energy = calc.get_potential_energy(work)
                if energy is None or not calc.converged:
                    raise SCFNotConverged(
                        f"Turbomole SCF not converged in {self.config.scf_iterations} iterations"
                    )
                forces = np.array(calc.get_forces(work), dtype=float)
                results = {"energy": float(energy), "forces": forces}
                results.update(self._after_ground_state(work, results))
        except SCFNotConverged as exc:
            raise SCFNotConverged(f"{exc} (files kept in {workdir})") from exc
        except Exception as exc:  # ASE raises RuntimeError/OSError, parsers anything
            text = " ".join(str(exc).split())[:2000]
            kind = SCFNotConverged if "converge" in text.lower() else OracleError
            raise kind(f"Turbomole: {text} (files kept in {workdir})") from exc
        shutil.rmtree(workdir, ignore_errors=True)
        return results

    def _after_ground_state(self, atoms: Atoms, ground: dict[str, Any]) -> dict[str, Any]:
        """Further results computed in the label's directory after the ground state.

        Args:
            atoms: The structure, its calculator the finished ASE Turbomole run.
            ground: ``energy`` (eV) and ``forces`` (eV/Å) of the ground state.

        Returns:
            Extra result keys (none for the ground-state oracle).
        """
        return {}
