"""The SCF driver of the PySCF oracle: DIIS, a second-order fallback and strict checks.

Recipe (see :class:`~pal_atoms.oracles.pyscf_dft.PySCFSettings` for the knobs):

1. DIIS from the initial guess, with PySCF's closing check (one extra plain
   diagonalisation that must not move the energy or the orbital gradient).
2. When DIIS fails, a second-order (Newton, augmented-Hessian) solver continues from
   the last DIIS orbitals. Small-gap clusters such as Bi4(2-) typically end DIIS within
   1e-8 Eh of the answer, but the closing diagonalisation amplifies the residual (its
   response grows like 1/gap); Newton steps do not, and finish in a few iterations.
3. The result is accepted only when the solver says converged *and* the occupation is
   aufbau (no occupied orbital above a virtual one of the same spin). Newton keeps the
   occupation it starts from, so it can converge to an excited, non-aufbau stationary
   point; such a result is not a ground-state label and is refused.

With Fermi smearing the occupations are fractional by construction: there is no
second-order stage (PySCF does not support it), no aufbau check, and the energy is the
Mermin free energy ``E - sigma*S`` (the quantity whose gradient the forces are).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pal_atoms.core.errors import OracleError

__all__ = ["AUFBAU_TOL_EH", "SECOND_ORDER_MAX_CYCLE", "SCFReport", "homo_lumo_gap_Eh", "solve"]

logger = logging.getLogger(__name__)

#: A virtual orbital may lie this far (Hartree) below an occupied one of the same spin
#: before the occupation counts as non-aufbau: degenerate shells split by ~1e-6 Eh.
AUFBAU_TOL_EH = 1e-4
#: Cap on second-order macro iterations: Newton converges quadratically near a solution,
#: so one that needs more than a few tens of steps is not going to converge.
SECOND_ORDER_MAX_CYCLE = 50


@dataclass(frozen=True, kw_only=True)
class SCFReport:
    """What one SCF run did (kept on the oracle as ``last_scf`` for benchmarks and logs).

    Attributes:
        converged: Accepted as a ground-state solution (converged and aufbau).
        energy_Eh: Total energy in Hartree (the free energy ``E - sigma*S`` when smeared).
        diis_cycles: DIIS iterations run (-1 when the backend does not report them).
        second_order_cycles: Newton macro iterations run (0: the stage did not run).
        gap_Eh: Smallest LUMO - HOMO over the spin channels in Hartree (negative:
            non-aufbau; ``None`` when smeared or when there are no virtual orbitals).
        wall_s: Wall time of the SCF (gradient excluded) in seconds.
        reason: Why it was refused (empty when converged).
    """

    converged: bool
    energy_Eh: float
    diis_cycles: int
    second_order_cycles: int
    gap_Eh: float | None
    wall_s: float
    reason: str = ""


def _numpy(array: Any) -> np.ndarray:
    """A numpy array from numpy or cupy (GPU4PySCF) data."""
    return np.asarray(array.get() if hasattr(array, "get") else array, dtype=float)


def homo_lumo_gap_Eh(mo_energy: Any, mo_occ: Any) -> float | None:
    """Smallest (lowest virtual - highest occupied) orbital energy over spin channels.

    Args:
        mo_energy: Orbital energies, shape ``(n_mo,)`` (restricted) or ``(2, n_mo)``.
        mo_occ: Occupations of the same shape.

    Returns:
        The gap in Hartree (negative for a non-aufbau occupation), or ``None`` when no
        channel has both occupied and virtual orbitals.
    """
    energies, occupations = _numpy(mo_energy), _numpy(mo_occ)
    if energies.ndim == 1:
        energies, occupations = energies[None], occupations[None]
    gaps = [
        float(e[o == 0].min() - e[o > 0].max())
        for e, o in zip(energies, occupations, strict=True)
        if (o > 0).any() and (o == 0).any()
    ]
    return min(gaps) if gaps else None


class _CycleCounter:
    """SCF callback recording the highest iteration index PySCF reports."""

    def __init__(self, key: str):
        self.key = key
        self.cycles = 0

    def __call__(self, env: dict[str, Any]) -> None:
        index = env.get(self.key)
        if isinstance(index, (int, np.integer)):  # PySCF calls once more after the loop
            self.cycles = max(self.cycles, int(index) + 1)


def solve(
    mf: Any,
    *,
    second_order: Literal["fallback", "always", "never"],
    max_cycle: int,
    smeared: bool,
) -> tuple[Any, SCFReport]:
    """Run the SCF of a prepared PySCF mean-field object with the recipe above.

    Args:
        mf: RKS/UKS/RHF/UHF object (density fitting, grids, tolerances already set).
        second_order: ``"fallback"``: Newton after a failed DIIS; ``"always"``: Newton
            from the initial guess; ``"never"``: DIIS only. Ignored when ``smeared``.
        max_cycle: Most DIIS cycles; the Newton stage gets at most
            ``min(max_cycle, SECOND_ORDER_MAX_CYCLE)`` macro iterations.
        smeared: ``mf`` carries Fermi smearing (fractional occupations).

    Returns:
        The mean-field object that produced the result (for the gradient) and its
        :class:`SCFReport`.
    """
    t0 = time.perf_counter()
    diis_cycles = second_order_cycles = 0
    # A backend without SOSCF (some GPU4PySCF classes) runs DIIS only.
    use_newton = not smeared and second_order != "never" and hasattr(mf, "newton")
    final: Any = mf
    if not use_newton or second_order != "always":
        counter = _CycleCounter("cycle")
        mf.callback = counter
        mf.max_cycle = max_cycle
        mf.kernel()
        # GPU4PySCF may not call back; its ``cycles`` attribute is the fallback.
        diis_cycles = counter.cycles or int(getattr(mf, "cycles", -1))
        use_newton = use_newton and not mf.converged
        if use_newton:
            logger.info(
                "PySCF DIIS not converged in %d cycles (E = %.8f Eh); second-order SCF next",
                diis_cycles,
                float(mf.e_tot),
            )
    if use_newton:
        final = mf.newton()
        counter = _CycleCounter("imacro")
        final.callback = counter
        final.max_cycle = min(max_cycle, SECOND_ORDER_MAX_CYCLE)
        if diis_cycles:  # continue from the DIIS orbitals and occupations, not from scratch
            final.kernel(mf.mo_coeff, mf.mo_occ)
        else:
            final.kernel()
        second_order_cycles = counter.cycles
    free = getattr(final, "e_free", None) if smeared else None
    if smeared and free is None:  # E alone would not match the forces
        raise OracleError("smeared PySCF SCF reported no free energy (e_free)")
    energy_Eh = float(free if free is not None else final.e_tot)
    gap = None if smeared else homo_lumo_gap_Eh(final.mo_energy, final.mo_occ)
    reason = ""
    if not final.converged:
        reason = "not converged"
    elif gap is not None and gap < -AUFBAU_TOL_EH:
        reason = f"converged to a non-aufbau state (LUMO - HOMO = {gap:.2e} Eh)"
    report = SCFReport(
        converged=not reason,
        energy_Eh=energy_Eh,
        diis_cycles=diis_cycles,
        second_order_cycles=second_order_cycles,
        gap_Eh=gap,
        wall_s=time.perf_counter() - t0,
        reason=reason,
    )
    logger.debug("PySCF SCF: %s", report)
    return final, report
