"""A persistent child process that labels structures, killed and restarted when needed.

:class:`OracleWorker` starts a fresh Python interpreter (never a fork of the caller,
which may hold MPI or torch threads) that imports neither torch nor mpi4py. Each label
is sent over a socket pair; the parent waits at most ``timeout_s``. A hang is killed
(the whole process group, so programs the oracle started die too) and recorded as
``timeout``; a crash (segfault, ``os._exit``, out of memory) is recorded as ``failed``
with the exit signal and the tail of the worker's log. The next label starts a new
worker transparently. Start-up (an interpreter plus numpy and ASE) costs about a second
once; after that the round trip adds well under a millisecond per label.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from types import TracebackType
from typing import Any

from ase import Atoms
from pal_atoms.oracles._child import BOOTSTRAP
from pal_atoms.oracles.attempt import Outcome
from pal_atoms.oracles.base import Oracle, check_finite_positive

from pal_atoms.core.errors import ConfigError, OracleError, OracleSetupError
from pal_atoms.core.label import LabelStatus

__all__ = ["OracleWorker", "shared_worker"]

logger = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_POLL_S = 0.25  # how often a waiting parent checks that the child still lives


#: Set in a worker's environment: a script re-run there (to define the user's classes)
#: must not start workers of its own.
WORKER_ENV = "PAL_ATOMS_ORACLE_WORKER"


def _main_path() -> str | None:
    """The file of the running main script, if there is one (not ``-c`` or a REPL)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if path is None or spec is not None:  # -m module: its classes are importable anyway
        return None
    return str(Path(path).resolve()) if Path(path).is_file() else None


class OracleWorker:
    """A child process that runs oracle attempts one at a time.

    Args:
        threads: OpenMP/BLAS threads in the child (``None``: inherit the environment).
        max_memory_MB: Address-space limit of the child in MiB; beyond it allocations
            fail and the label is ``failed`` instead of the machine swapping.
        startup_timeout_s: Longest wait in s for a new child to report ready.
        env: Extra environment variables for the child.

    Use as a context manager, or call :meth:`close`. Thread-safe (one label at a time).
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        max_memory_MB: int | None = None,
        startup_timeout_s: float = 120.0,
        env: dict[str, str] | None = None,
    ):
        if threads is not None and (isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        if max_memory_MB is not None and max_memory_MB < 64:
            raise ConfigError(f"max_memory_MB must be >= 64, got {max_memory_MB}")
        check_finite_positive("startup_timeout_s", startup_timeout_s)
        self.threads = threads
        self.max_memory_MB = max_memory_MB
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(env or {})
        #: Number of child processes started so far (1 + restarts after kills/crashes).
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._log: Any = None
        self._lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id of the running child, or ``None``."""
        return self._proc.pid if self.alive and self._proc is not None else None

    @property
    def alive(self) -> bool:
        """Whether a child process is running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the child now (otherwise the first label starts it)."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self.alive:
            return
        self._terminate()
        env = {**os.environ, **self.env, WORKER_ENV: "1"}
        if self.threads is not None:
            env.update(dict.fromkeys(_THREAD_VARS, str(self.threads)))
        parent_conn, child_conn = Pipe(duplex=True)
        fd = child_conn.fileno()
        if self._log is None:
            self._log = _append_only_log()
        self._log.truncate(0)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, str(fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                env=env,
                start_new_session=True,  # own process group: a kill reaches its children
            )
        finally:
            child_conn.close()
        self._proc, self._conn = proc, parent_conn
        self.starts += 1
        try:
            parent_conn.send([p for p in sys.path if p])
            parent_conn.send({"max_memory_MB": self.max_memory_MB, "main_path": _main_path()})
            reply = self._receive(self.startup_timeout_s)
        except (OSError, EOFError) as exc:
            reply = ("died", str(exc))
        if reply[0] != "ready":
            text = self._death_text() if reply[0] in ("died", "timeout") else str(reply[1])
            self._terminate()
            raise OracleSetupError(f"oracle worker did not start: {text}")
        logger.debug("oracle worker started (pid %d)", proc.pid)

    def close(self) -> None:
        """Stop the child (politely, then by force) and release the log file."""
        with self._lock:
            if self.alive and self._conn is not None:
                try:
                    self._conn.send(("stop",))
                    assert self._proc is not None
                    self._proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._terminate()
            if self._log is not None:
                self._log.close()
                self._log = None

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> OracleWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown there is nobody left to report a failure to.
        with contextlib.suppress(Exception):
            self._terminate()

    # -- work ----------------------------------------------------------------------------
    def run_attempt(
        self, oracle: Oracle, atoms: Atoms, *, timeout_s: float | None = None
    ) -> Outcome:
        """One attempt in the child; a hang past ``timeout_s`` or a crash is recorded.

        Args:
            oracle: Oracle (pickled by its settings).
            atoms: Structure.
            timeout_s: Seconds to wait for the result (``None``: forever).

        Returns:
            The child's :class:`~pal_atoms.oracles.labelling.Outcome`, or a ``timeout``
            or ``failed`` outcome made here when the child was killed or died.

        Raises:
            OracleSetupError: the oracle cannot be pickled, or no worker starts.
        """
        try:
            payload = pickle.dumps(oracle)
        except Exception as exc:
            raise OracleSetupError(
                f"oracle {oracle.name!r} cannot be sent to a worker process ({exc}); wrap "
                "calculators through a module-level factory (Wrapped(factory=...))"
            ) from exc
        with self._lock:
            self._ensure_started()
            assert self._conn is not None
            if self._log is not None:
                self._log.truncate(0)
            t0 = time.perf_counter()
            try:
                self._conn.send(("label", payload, atoms))
                reply = self._receive(timeout_s)
            except (OSError, EOFError):
                reply = ("died", "")
            elapsed = time.perf_counter() - t0
            if reply[0] == "outcome":
                outcome: Outcome = reply[1]
                return outcome
            if reply[0] == "timeout":
                self._terminate()
                return Outcome(
                    status=LabelStatus.TIMEOUT,
                    error=f"killed after {timeout_s:g} s (oracle {oracle.name!r})",
                    wall_time_s=elapsed,
                )
            if reply[0] == "died":
                text = self._death_text()
                self._terminate()
                return Outcome(status=LabelStatus.FAILED, error=text, wall_time_s=elapsed)
            return Outcome(status=LabelStatus.FAILED, error=str(reply[1]), wall_time_s=elapsed)

    def loaded_modules(self) -> list[str]:
        """Names in the child's ``sys.modules`` (to verify what the child imported)."""
        with self._lock:
            self._ensure_started()
            assert self._conn is not None
            self._conn.send(("modules",))
            reply = self._receive(30.0)
        if reply[0] != "modules":
            raise OracleError(f"oracle worker did not answer: {reply}")
        return list(reply[1])

    def _receive(self, timeout_s: float | None) -> tuple[str, Any]:
        """Wait for one reply; ``("timeout", None)`` or ``("died", None)`` otherwise."""
        assert self._conn is not None
        assert self._proc is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if wait <= 0:
                return ("timeout", None)
            try:
                if self._conn.poll(wait):
                    reply: tuple[str, Any] = self._conn.recv()
                    return reply
            except (EOFError, OSError):
                return ("died", None)
            if self._proc.poll() is not None and not self._conn.poll(0):
                return ("died", None)

    def _death_text(self) -> str:
        """Why the child is gone: exit code or signal, plus the tail of its log."""
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        if code is None:
            what = "oracle worker stopped answering"
        elif code < 0:
            what = f"oracle worker died with signal {signal.Signals(-code).name}"
        else:
            what = f"oracle worker exited with code {code}"
        tail = _tail(self._log)
        return f"{what}; last output:\n{tail}" if tail else what


def _append_only_log() -> Any:
    """An anonymous log file opened with O_APPEND.

    The child's writes always go to the end, whatever the parent does with its own file
    position (reading the tail, truncating before each label).
    """
    fd, name = tempfile.mkstemp(prefix="pal-oracle-worker-", suffix=".log")
    os.close(fd)
    path = Path(name)
    log = path.open("a+b")
    path.unlink()
    return log


def _tail(log: Any, n_chars: int = 2000) -> str:
    if log is None:
        return ""
    try:
        log.flush()
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - n_chars))
        return str(log.read().decode(errors="replace").strip())
    except (OSError, ValueError):
        return ""


_shared: OracleWorker | None = None
_shared_lock = threading.Lock()


def shared_worker() -> OracleWorker:
    """The process-wide worker used by ``label(..., isolate=True)`` (closed at exit)."""
    global _shared  # noqa: PLW0603 - one lazily started worker per process
    with _shared_lock:
        if _shared is None:
            _shared = OracleWorker()
            atexit.register(_shared.close)
        return _shared
