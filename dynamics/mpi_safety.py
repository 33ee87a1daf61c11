"""Rank-local ASE objects, so that a generator on an MPI rank never talks to other ranks.

Once ``mpi4py`` is imported anywhere in the process, ``ase.parallel.world`` is
``COMM_WORLD``. ASE then broadcasts Langevin/Bussi random numbers and Maxwell-Boltzmann
velocities over it, writes trajectories and ``ase.io.write`` files on rank 0 only, and
makes ``len(trajectory)`` a collective call. A rank that runs its own dynamics would hang
in a broadcast the other ranks never enter (or silently use rank 0's random numbers).

Every ASE object built by :mod:`pal_atoms.dynamics` therefore gets a serial communicator
(:func:`local_comm`) and writes files itself (``parallel=False``, ``master=True``). ASE
3.29 names the argument ``comm`` (older releases: ``communicator``); passing ``None``
does not work there (``Log`` and ``Langevin`` call methods on it), so we pass a
:class:`ase.parallel.DummyMPI` instead. Nothing here imports ``mpi4py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.io import write as ase_write
from ase.io.trajectory import Trajectory
from ase.parallel import DummyMPI

__all__ = ["local_comm", "open_trajectory", "write_frames"]

logger = logging.getLogger(__name__)


def local_comm() -> Any:
    """Serial communicator for ASE objects (rank 0 of a world of size 1).

    Returns:
        A fresh :class:`ase.parallel.DummyMPI`: ``rank == 0``, ``size == 1``, collective
        calls are no-ops. Pass it as ``comm=`` to dynamics, optimizers, loggers,
        trajectories, velocity distributions, and as ``world=`` to NEB.
    """
    return DummyMPI()


def open_trajectory(path: str | Path, mode: str = "w") -> Any:
    """Open an ASE ``.traj`` file that this rank writes itself.

    Args:
        path: File name.
        mode: ``"w"`` (truncate) or ``"a"`` (append).

    Returns:
        A :class:`ase.io.trajectory.TrajectoryWriter` with ``master=True`` and a serial
        communicator; close it (or use it as a context manager) when done.
    """
    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
    return Trajectory(str(path), mode=mode, master=True, comm=local_comm())


def write_frames(
    path: str | Path,
    images: Atoms | Sequence[Atoms],
    *,
    fmt: str | None = None,
    append: bool = False,
) -> None:
    """Write structures from this rank, whatever the MPI world looks like.

    Args:
        path: Output file; the format is guessed from the suffix unless ``fmt`` is given
            (``.xyz`` is written as extended XYZ, so ``atoms.info`` such as ``charge`` and
            ``multiplicity`` is kept).
        images: One structure or a sequence of them.
        fmt: ASE format name (e.g. ``"extxyz"``, ``"traj"``).
        append: Append to an existing file instead of overwriting it.
    """
    path = Path(path)
    if fmt is None and path.suffix in (".xyz", ".extxyz"):
        fmt = "extxyz"
    frames = [images] if isinstance(images, Atoms) else list(images)
    ase_write(str(path), frames, format=fmt, parallel=False, append=append)
    logger.debug("wrote %d frame(s) to %s", len(frames), path)
