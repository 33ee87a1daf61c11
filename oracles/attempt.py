"""One attempt of an oracle in this process, and the policy for retrying it.

:func:`run_attempt` runs an oracle once and turns whatever happens (numbers, an
exception, a non-converged SCF) into an :class:`Outcome`; :class:`RetryPolicy` says
whether and how to try again. Both the in-process path and the child process of an
:class:`~pal_atoms.oracles.worker.OracleWorker` use them.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import SCFError, all_changes
from pal_atoms.oracles.base import Oracle, check_finite_positive

from pal_atoms.core.errors import ConfigError
from pal_atoms.core.label import LabelStatus

__all__ = ["Outcome", "RetryPolicy", "run_attempt"]

logger = logging.getLogger(__name__)

#: Messages of foreign calculators (wrapped ones) that mean "the SCF did not converge".
_UNCONVERGED = re.compile(
    r"(not|n't|failed to|fail to|did not) converge|convergence (failure|failed|not reached)"
    r"|unconverged",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When to retry a label and how to relax the oracle's settings for each retry.

    Each oracle interprets the factors in :meth:`~pal_atoms.oracles.base.Oracle.relaxed`:
    xTB raises the electronic temperature and the iteration limit, PySCF adds a level
    shift and more cycles, Turbomole allows more SCF iterations. An oracle that has
    nothing to adjust is not retried on ``unconverged`` (the same settings would give the
    same result); on ``failed`` or ``timeout`` it is retried unchanged.

    Args:
        max_attempts: Attempts in all, the first one included (1: no retry).
        retry_on: Statuses that trigger a retry (default: ``unconverged`` only).
        electronic_temperature_factor: xTB: electronic temperature multiplied by this
            per retry (300 K -> 900 K -> 2700 K).
        iterations_factor: Iteration limit multiplied by this per retry.
        level_shift_Eh: PySCF: level shift in Hartree added per retry.
        adjust: Custom relaxation ``adjust(oracle, attempt) -> oracle | None`` used
            instead of the oracle's own (must be picklable to reach a worker: a
            module-level function).
    """

    max_attempts: int = 3
    retry_on: tuple[LabelStatus, ...] = (LabelStatus.UNCONVERGED,)
    electronic_temperature_factor: float = 3.0
    iterations_factor: float = 2.0
    level_shift_Eh: float = 0.25
    adjust: Callable[[Oracle, int], Oracle | None] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        try:
            statuses = tuple(LabelStatus(s) for s in self.retry_on)
        except ValueError as exc:
            raise ConfigError(f"retry_on: {exc}") from None
        if LabelStatus.OK in statuses:
            raise ConfigError("retry_on must not contain 'ok'")
        object.__setattr__(self, "retry_on", statuses)
        if self.electronic_temperature_factor < 1 or self.iterations_factor < 1:
            raise ConfigError("electronic_temperature_factor and iterations_factor must be >= 1")
        check_finite_positive("level_shift_Eh", self.level_shift_Eh, allow_zero=True)

    def next_oracle(self, oracle: Oracle, status: LabelStatus, attempt: int) -> Oracle | None:
        """The oracle for retry number ``attempt`` after ``status``, or ``None`` to stop.

        Args:
            oracle: The oracle of the first attempt (relaxation does not compound).
            status: Status of the attempt that just ended.
            attempt: Number of attempts made so far (1 after the first).
        """
        if attempt >= self.max_attempts or status not in self.retry_on:
            return None
        relax = self.adjust if self.adjust is not None else (lambda o, a: o.relaxed(self, a))
        relaxed = relax(oracle, attempt)
        if relaxed is None:  # nothing to adjust: an unconverged SCF would fail again
            return None if status is LabelStatus.UNCONVERGED else oracle
        return relaxed


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Result of one attempt (what a worker sends back).

    Attributes:
        status: Outcome of the attempt.
        energy: Energy in eV (``ok`` only).
        forces: Forces in eV/Å, shape ``(n_atoms, 3)`` (``ok`` only).
        stress: Stress in eV/Å³, shape ``(6,)`` (``ok``, periodic cells only).
        state_energies: Per-state energies in eV, ``(n_states,)`` (excited-state oracles).
        state_forces: Per-state forces in eV/Å, ``(n_states, n_atoms, 3)``.
        error: Error text when not ``ok``.
        wall_time_s: Wall time of the attempt in s.
    """

    status: LabelStatus
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    state_energies: np.ndarray | None = None
    state_forces: np.ndarray | None = None
    error: str = ""
    wall_time_s: float = 0.0


def _optional(results: dict[str, Any], key: str) -> np.ndarray | None:
    value = results.get(key)
    return None if value is None else np.array(value, dtype=float)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 4000 else text[:4000] + " ..."


def run_attempt(oracle: Oracle, atoms: Atoms) -> Outcome:
    """Run ``oracle`` once on ``atoms`` in this process; never raises for oracle failures.

    Args:
        oracle: The oracle (its results are reset first).
        atoms: Structure; not modified (a copy is computed).

    Returns:
        An :class:`Outcome`: ``ok`` with numbers, ``unconverged`` for an
        :class:`~ase.calculators.calculator.SCFError` (or an error message saying the
        SCF did not converge), ``failed`` for anything else raised (``SystemExit``
        included).
    """
    work = atoms.copy()
    work.calc = None
    t0 = time.perf_counter()
    try:
        oracle.reset()
        oracle.calculate(work, ["energy", "forces"], list(all_changes))
        res = oracle.results
        return Outcome(
            status=LabelStatus.OK,
            energy=float(res["energy"]),
            forces=np.array(res["forces"], dtype=float),
            stress=_optional(res, "stress"),
            state_energies=_optional(res, "state_energies"),
            state_forces=_optional(res, "state_forces"),
            wall_time_s=time.perf_counter() - t0,
        )
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # every failure of foreign code becomes data, SystemExit too
        elapsed = time.perf_counter() - t0
        unconverged = isinstance(exc, SCFError) or bool(_UNCONVERGED.search(str(exc)))
        status = LabelStatus.UNCONVERGED if unconverged else LabelStatus.FAILED
        logger.debug("oracle %s: %s\n%s", oracle.name, exc, traceback.format_exc())
        return Outcome(status=status, error=_error_text(exc), wall_time_s=elapsed)
