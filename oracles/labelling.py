"""Labelling with failure semantics: every oracle outcome becomes a :class:`Label`.

:func:`label` checks the structure (invalid input raises), then runs the oracle in this
process or in a child process (:class:`~pal_atoms.oracles.worker.OracleWorker`), retries
with relaxed settings when the policy says so, and returns a
:class:`~pal_atoms.core.label.Label` whose status is ``ok``, ``failed``, ``unconverged`` or
``timeout``. Oracle failures never raise: an exception, a non-converged SCF, non-finite
numbers, a hang or a crash of the program are all recorded with their error text.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ase import Atoms
from pal_atoms.oracles.attempt import Outcome, RetryPolicy, run_attempt
from pal_atoms.oracles.base import Oracle, check_finite_positive
from pal_atoms.oracles.worker import WORKER_ENV, OracleWorker, shared_worker
from pal_atoms.oracles.wrap import Wrapped

from pal_atoms.core.errors import ConfigError
from pal_atoms.core.label import Label, LabelStatus

__all__ = ["Outcome", "RetryPolicy", "as_oracle", "label", "run_attempt"]

logger = logging.getLogger(__name__)


def as_oracle(calculator: Any) -> Oracle:
    """``calculator`` as an oracle (an ASE calculator is wrapped, named after its class).

    An :class:`Oracle` is returned as it is; a plain ASE calculator is wrapped with
    :class:`~pal_atoms.oracles.Wrapped`.

    Raises:
        ConfigError: neither.
    """
    if isinstance(calculator, Oracle):
        return calculator
    if callable(getattr(calculator, "calculate", None)):
        name = type(calculator).__name__.lower()
        return Wrapped(calculator, name=name, method=type(calculator).__name__)
    raise ConfigError(
        f"oracle must be a pal_atoms.oracles Oracle or an ASE calculator, got "
        f"{type(calculator).__name__}"
    )


def label(
    atoms: Atoms,
    oracle: Oracle,
    *,
    timeout_s: float | None = None,
    isolate: bool = False,
    retry: RetryPolicy | None = None,
    worker: OracleWorker | None = None,
) -> Label:
    """Label one structure with an oracle, recording every failure as a status.

    Args:
        atoms: Structure (positions in Å); charge and multiplicity may come from
            ``atoms.info``. Not modified.
        oracle: Any :class:`~pal_atoms.oracles.base.Oracle`, or a plain ASE calculator
            (wrapped with :class:`~pal_atoms.oracles.Wrapped`, named after its class).
        timeout_s: Kill an attempt after this many seconds and record ``timeout``; the
            attempt then runs in a worker process (a hung in-process call cannot be
            interrupted). A calculator class defined in the running script works there
            too: the worker runs the script as ``__mp_main__`` (as ``multiprocessing``
            does), so keep its main code under ``if __name__ == "__main__":``.
        isolate: Run in a child process (the shared
            :func:`~pal_atoms.oracles.worker.shared_worker`), so a hang, crash or memory
            blow-up of the program cannot take the caller down.
        retry: Retry policy; ``None`` makes one attempt.
        worker: Run in this worker (implies isolation).

    Returns:
        A :class:`~pal_atoms.core.label.Label`: energy and forces only for ``ok``; the error
        text otherwise; ``wall_time_s`` summed over attempts; ``attempts``; ``settings``
        of the oracle that produced the last attempt; ``atoms.info`` holds ``charge``
        and ``multiplicity`` (plus oracle metadata such as ``ecp``).

    Raises:
        StructureError: the structure fails ``oracle.check`` (before any calculation).
        OracleSetupError: the oracle cannot run here (missing program).
        ValueError: bad arguments (not a calculator, non-positive timeout, a worker asked
            for from inside a worker).
    """
    oracle = as_oracle(oracle)
    if timeout_s is not None:
        check_finite_positive("timeout_s", timeout_s)
        isolate = True
    if (isolate or worker is not None) and os.environ.get(WORKER_ENV):
        raise ConfigError(
            "label() with isolation was called inside an oracle worker: the worker ran "
            "your script to find its calculator class, and the script labels at top "
            'level; put its main code under `if __name__ == "__main__":`'
        )
    oracle.check(atoms)
    policy = retry if retry is not None else RetryPolicy(max_attempts=1)
    if worker is None and isolate:
        worker = shared_worker()

    current = oracle
    total_s = 0.0
    attempt = 0
    while True:
        attempt += 1
        if worker is not None:
            outcome = worker.run_attempt(current, atoms, timeout_s=timeout_s)
        else:
            outcome = run_attempt(current, atoms)
        total_s += outcome.wall_time_s
        if outcome.status is LabelStatus.OK:
            break
        # Relax from the original settings (attempt k gets factor**k, not compounded).
        nxt = policy.next_oracle(oracle, outcome.status, attempt)
        if nxt is None:
            break
        logger.info(
            "oracle %s attempt %d: %s (%s); retrying",
            current.name,
            attempt,
            outcome.status,
            outcome.error.splitlines()[0] if outcome.error else "",
        )
        nxt.check(atoms)
        current = nxt
    return _to_label(atoms, current, outcome, wall_time_s=total_s, attempts=attempt)


def _to_label(
    atoms: Atoms, oracle: Oracle, outcome: Outcome, *, wall_time_s: float, attempts: int
) -> Label:
    geometry = atoms.copy()
    geometry.calc = None
    info: dict[str, Any] = oracle.describe(atoms)
    geometry.info.update(info)
    ok = outcome.status is LabelStatus.OK
    return Label(
        atoms=geometry,
        status=outcome.status,
        energy=outcome.energy if ok else None,
        forces=outcome.forces if ok else None,
        stress=outcome.stress if ok else None,
        state_energies=outcome.state_energies if ok else None,
        state_forces=outcome.state_forces if ok else None,
        error="" if ok else outcome.error,
        wall_time_s=wall_time_s,
        oracle=oracle.name,
        method=oracle.method,
        settings=oracle.settings,
        attempts=attempts,
    )
