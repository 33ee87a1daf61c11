"""One writer per run directory: an advisory lock held for the whole run.

HDF5 locks ``labels.h5`` only while it is open, and a run writes ``config.json``, the
held-out test set and the committee before and beside the store. A second ``pal-atoms md``
(a duplicate job, copies from ``srun --mpi=none``) on the same ``--out`` would overwrite
them; the lock refuses it first. The kernel drops the lock when the holder dies (SIGKILL,
``scancel``), so a killed run can be resumed at once.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO

from pal_atoms.core.errors import InputError

__all__ = ["LOCK_NAME", "RunLock"]

#: File in the run directory that carries the lock (and who holds it).
LOCK_NAME = ".pal-atoms.lock"


class RunLock:
    """Exclusive, non-blocking lock on a run directory.

    Args:
        run_dir: The run directory (created if missing).

    Raises:
        InputError: On :meth:`acquire`, when another process holds the lock.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self, *, record: bool = True) -> RunLock:
        """Take the lock or raise :class:`InputError` naming the holder.

        Args:
            record: Write this process's pid and host into the lock file.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InputError(
                f"{self.path.parent} is in use by a running pal-atoms ({holder}); "
                "wait for it, stop it, or choose another --out"
            ) from None
        if record:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
        self._file = handle
        return self

    def ensure_free(self) -> None:
        """Raise :class:`InputError` if another process holds the lock; take nothing.

        Creates nothing either: a run directory that does not exist is free.
        """
        if self.path.is_file():
            self.acquire(record=False)
            self.release()

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
