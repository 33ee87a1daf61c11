"""Raw MPI round-trip floor (started by ``bench/messaging.py``).

Run as ``mpiexec -n 3 python -m mpi4py bench/_mpi_pingpong.py OUT.json [--atoms 9]``.
Payloads are those of one generator step: a structure record out (17 + 4n float64) and a
prediction record back (5 + 4n float64). Rank 0 plays the generator, rank 1 the
predictor (direct) or the relay (controller), rank 2 the predictor behind the relay.
Each pattern is timed with MPICH's blocking ``Recv`` (it spins), with pal-atoms'
non-spinning receive (``Iprobe`` + backing-off sleep, :func:`pal_atoms.workflow.mpi.comm.recv`)
with the default :class:`~pal_atoms.workflow.mpi.comm.Backoff`, and with the plain doubling backoff
pal-atoms used before (20 us doubling to 2 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from pal_atoms.workflow.mpi.comm import Backoff, recv


def quiet_barrier(comm: MPI.Comm) -> None:
    """Barrier without spinning (a spinning idle rank would steal a core from the others)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(1e-3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--atoms", type=int, default=9)
    p.add_argument("--repeats", type=int, default=2000)
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    n = args.atoms
    up = np.random.default_rng(0).random(17 + 4 * n)
    down = np.random.default_rng(1).random(5 + 4 * n)
    results: dict[str, dict[str, float]] = {}

    def get(source: int, size: int, spin: bool, backoff: Backoff) -> np.ndarray:
        if spin:
            buf = np.empty(size)
            comm.Recv([buf, MPI.DOUBLE], source=source, tag=1)
            return buf
        msg = recv(comm, source=source, tag=1, backoff=backoff)
        backoff.reset()
        assert msg is not None
        return msg.payload

    # None: MPICH's blocking Recv; else pal-atoms' recv with these Backoff arguments.
    modes: dict[str, dict[str, float] | None] = {
        "blocking Recv (spins)": None,
        "pal recv, Backoff()": {},
        "pal recv, plain doubling to 2 ms (before)": {"factor": 2.0, "active_s": 0.0},
    }
    for pattern in ("direct", "relay"):
        for mode, kwargs in modes.items():
            name = f"{pattern} / {mode}"
            spin = kwargs is None
            quiet_barrier(comm)
            backoff = Backoff(**(kwargs or {}))
            times = []
            for _ in range(args.repeats):
                if rank == 0:
                    t0 = time.perf_counter()
                    comm.Send([up, MPI.DOUBLE], dest=1, tag=1)
                    get(1, down.size, spin, backoff)
                    times.append(time.perf_counter() - t0)
                elif pattern == "direct" and rank == 1:
                    get(0, up.size, spin, backoff)
                    comm.Send([down, MPI.DOUBLE], dest=0, tag=1)
                elif pattern == "relay" and rank == 1:
                    x = get(0, up.size, spin, backoff)
                    comm.Send([x, MPI.DOUBLE], dest=2, tag=1)
                    y = get(2, down.size, spin, backoff)
                    comm.Send([y, MPI.DOUBLE], dest=0, tag=1)
                elif pattern == "relay" and rank == 2:
                    get(1, up.size, spin, backoff)
                    comm.Send([down, MPI.DOUBLE], dest=1, tag=1)
            if rank == 0:
                t = np.asarray(times[len(times) // 10 :]) * 1e3  # drop the warm-up
                results[name] = {
                    "median_ms": float(np.median(t)),
                    "mean_ms": float(t.mean()),
                    "p90_ms": float(np.percentile(t, 90)),
                }
    quiet_barrier(comm)
    if rank == 0:
        payload = {
            "atoms": n,
            "bytes_out": up.nbytes,
            "bytes_back": down.nbytes,
            "ranks": comm.Get_size(),
            "results": results,
            "loadavg": os.getloadavg(),
        }
        args.out.write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
