"""Failure semantics: in-process and in a worker process (hang, crash, exit, memory).

The stand-ins in oracle_standins misbehave on purpose; everything else uses tblite.
"""

from __future__ import annotations

import numpy as np
import oracle_standins as s
import pytest
from ase.build import molecule
from pal_atoms.oracles import XTB, OracleWorker, RetryPolicy, Wrapped, label

from pal_atoms.core.label import LabelStatus


@pytest.fixture(scope="module")
def worker():
    with OracleWorker(threads=1, max_memory_MB=2048) as w:
        yield w


@pytest.fixture
def water():
    atoms = molecule("H2O")
    atoms.info["charge"] = 0
    return atoms


# -- in process --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "status", "text"),
    [
        (s.Raise, LabelStatus.FAILED, "RuntimeError: integral screening blew up"),
        (s.SysExit, LabelStatus.FAILED, "SystemExit: 4"),
        (s.NaN, LabelStatus.FAILED, "non-finite"),
        (s.SCFFail, LabelStatus.UNCONVERGED, "SCFError"),
        (s.SaysUnconverged, LabelStatus.UNCONVERGED, "not converged in 5 cycles"),
    ],
)
def test_in_process_failures_become_labels(water, cls, status, text):
    lab = label(water, s.oracle(cls))
    assert lab.status is status
    assert text in lab.error
    assert lab.energy is None
    assert lab.forces is None
    assert lab.oracle == cls.__name__.lower()
    assert lab.attempts == 1
    assert lab.atoms.info["charge"] == 0
    assert lab.wall_time_s >= 0


def test_wrapped_calculator_ok_and_provenance(water):
    lab = label(water, Wrapped(s.Fine(), name="fine", method="constant", parameters={"e": -1.0}))
    assert lab.ok
    assert lab.energy == -1.0
    assert lab.forces.shape == (3, 3)
    assert lab.settings == {"e": -1.0}
    assert lab.method == "constant"


def test_custom_retry_adjustment(water):
    oracle = Wrapped(s.ConvergesWithShift(), name="shifted", method="stand-in")
    assert label(water, oracle).status is LabelStatus.UNCONVERGED
    # No adjustment known: an unconverged wrapped oracle is not retried unchanged.
    assert label(water, oracle, retry=RetryPolicy()).attempts == 1
    lab = label(water, oracle, retry=RetryPolicy(max_attempts=3, adjust=s.adjust_shift))
    assert lab.ok
    assert lab.attempts == 3
    assert lab.settings == {"shift": 1.0}


# -- in a worker process -----------------------------------------------------------------
def test_worker_matches_in_process_and_imports_no_torch(worker, water):
    ref = label(water, XTB())
    lab = label(water, XTB(), timeout_s=60, worker=worker)
    assert lab.ok
    assert lab.energy == pytest.approx(ref.energy, abs=1e-10)
    np.testing.assert_allclose(lab.forces, ref.forces, atol=1e-10)
    modules = {m.split(".")[0] for m in worker.loaded_modules()}
    assert "tblite" in modules
    assert not modules & {"torch", "mpi4py", "pyscf"}


def test_hanging_oracle_is_killed_at_timeout(worker, water):
    pid = worker.pid
    lab = label(water, s.oracle(s.Hang), timeout_s=1.0, worker=worker)
    assert lab.status is LabelStatus.TIMEOUT
    assert "killed after 1 s" in lab.error
    assert lab.energy is None
    assert not worker.alive  # killed; the next label restarts it transparently
    after = label(water, XTB(), timeout_s=60, worker=worker)
    assert after.ok
    assert worker.pid != pid


@pytest.mark.parametrize(
    ("cls", "text"),
    [
        (s.Raise, "RuntimeError: integral screening blew up"),
        (s.Exit, "exited with code 3"),
        (s.Segfault, "died with signal SIGSEGV"),
        (s.EatMemory, "MemoryError"),
    ],
)
def test_crashing_oracle_is_failed_and_worker_recovers(worker, water, cls, text):
    lab = label(water, s.oracle(cls), timeout_s=60, worker=worker)
    assert lab.status is LabelStatus.FAILED
    assert text in lab.error
    assert label(water, XTB(), timeout_s=60, worker=worker).ok


def test_segfault_leaves_a_traceback_in_the_error(worker, water):
    lab = label(water, s.oracle(s.Segfault), timeout_s=60, worker=worker)
    assert "Fatal Python error: Segmentation fault" in lab.error
    assert "oracle_standins.py" in lab.error


def test_isolate_uses_shared_worker(water):
    lab = label(water, s.oracle(s.Exit), isolate=True, timeout_s=60)
    assert lab.status is LabelStatus.FAILED
    assert "exited with code 3" in lab.error
    assert label(water, XTB(), isolate=True).ok


def test_retry_in_worker_after_unconverged(worker):
    atoms = molecule("CH3CH2OH")
    lab = label(
        atoms,
        XTB(max_iterations=3),
        timeout_s=60,
        retry=RetryPolicy(max_attempts=4, iterations_factor=4.0),
        worker=worker,
    )
    assert lab.ok
    assert lab.attempts > 1


def test_unpicklable_oracle_is_a_clear_error(worker, water):
    calc = s.Fine()
    calc.handle = lambda: None  # lambdas do not pickle
    with pytest.raises(ValueError, match="cannot be sent to a worker"):
        label(water, Wrapped(calc), timeout_s=10, worker=worker)
