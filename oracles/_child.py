"""The loop that runs inside an oracle worker process (see :mod:`pal_atoms.oracles.worker`).

The parent starts a fresh interpreter (never a fork of itself) with a tiny bootstrap
that only uses the standard library: it receives the parent's ``sys.path`` over the
connection, then imports this module and calls :func:`serve`. Nothing here imports
torch or mpi4py; the oracle's own program is imported when its first label runs.

Protocol (pickled tuples over a ``multiprocessing`` connection)::

    parent -> child   ("label", oracle_pickle: bytes, atoms)   -> ("outcome", Outcome)
                      ("modules",)                             -> ("modules", [names])
                      ("stop",)                                -> (child exits)
    child -> parent   ("ready", pid) once at start-up; ("error", text) for a bad request
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import resource
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

#: Source of the bootstrap passed to ``python -c`` (stdlib only; argv[1] is the fd).
BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = conn.recv()\n"
    "from pal_atoms.oracles._child import serve\n"
    "serve(conn)\n"
)


def _limit_memory(max_memory_MB: int | None) -> None:
    if max_memory_MB is not None:
        limit = int(max_memory_MB) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _load_main(main_path: str) -> None:
    """Run the parent's main script as ``__mp_main__`` and make it ``__main__`` here.

    What :mod:`multiprocessing`'s spawn does, so that classes and functions defined in the
    user's script (an ASE calculator, a factory) can be unpickled in this process. The
    script's top-level code runs here too: guard the main part with
    ``if __name__ == "__main__":`` (a label with isolation from that code is refused,
    see :func:`pal_atoms.oracles.label`).
    """
    import runpy
    import types

    namespace = runpy.run_path(main_path, run_name="__mp_main__")
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = module


def _load_oracle(payload: bytes, main_path: str | None) -> Any:
    """Unpickle the oracle; load the parent's main script first if the oracle needs it."""
    try:
        return pickle.loads(payload)  # noqa: S301 - from our parent
    except AttributeError as exc:
        if main_path is None or "__main__" not in str(exc):
            raise RuntimeError(f"cannot rebuild the oracle in the worker ({exc})") from exc
    try:
        _load_main(main_path)
    except BaseException as exc:
        raise RuntimeError(
            f"cannot rebuild the oracle in the worker: its class lives in {main_path}, and "
            f"running that script there failed ({type(exc).__name__}: {exc}); put the "
            'script\'s main code under `if __name__ == "__main__":`, or define the '
            "calculator in an importable module"
        ) from exc
    return pickle.loads(payload)  # noqa: S301 - from our parent


def serve(conn: Connection) -> None:
    """Answer requests until ``("stop",)`` or the parent goes away."""
    options: dict[str, Any] = conn.recv()
    _limit_memory(options.get("max_memory_MB"))
    faulthandler.enable()  # a segfault leaves a Python traceback in the worker log
    from pal_atoms.oracles.attempt import run_attempt

    conn.send(("ready", os.getpid()))
    cached_bytes: bytes | None = None
    cached_oracle: Any = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # parent closed the connection or died
        kind = request[0]
        try:
            if kind == "stop":
                return
            if kind == "modules":
                conn.send(("modules", sorted(sys.modules)))
            elif kind == "label":
                _, oracle_bytes, atoms = request
                if oracle_bytes != cached_bytes:
                    cached_oracle = _load_oracle(oracle_bytes, options.get("main_path"))
                    cached_bytes = oracle_bytes
                # A generic oracle (pal_atoms.generic) makes its own attempt on a sample.
                attempt = getattr(cached_oracle, "attempt", None)
                outcome = attempt(atoms) if callable(attempt) else run_attempt(cached_oracle, atoms)
                conn.send(("outcome", outcome))
                sys.stdout.flush()
                sys.stderr.flush()
            else:
                conn.send(("error", f"unknown request {kind!r}"))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a bad request must not kill the loop silently
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
