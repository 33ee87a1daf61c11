"""Helpers for tests that start real MPI jobs with mpiexec inside pytest."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("al_job.py")


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec not found (install the 'mpi' extra: the mpich wheel)")
    return exe


def job_command(n_ranks: int, run_dir: Path, *args: str) -> list[str]:
    """mpiexec command running al_job.py; ``-m mpi4py`` aborts the job on an uncaught error."""
    return [
        mpiexec(),
        "-n",
        str(n_ranks),
        sys.executable,
        "-m",
        "mpi4py",
        str(JOB),
        str(run_dir),
        *args,
    ]


def job_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def kill_job(run_dir: Path) -> None:
    """SIGKILL every process of a job (mpiexec and the ranks, which hydra starts in their own
    process groups), found by the run directory on their command line, as ``scancel`` would."""
    import signal

    needle = str(run_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def run_job(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run with a hard timeout: a hanging rank fails the test instead of the suite."""
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=job_env(),
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"job hung past {timeout_s} s: {exc.stdout!s:.2000}")
