"""How a run gets its processes: one process, ranks it starts itself, or a launcher's ranks.

The decision is made once, from what the process really has, not from what a batch
allocation says: a launcher that connected the ranks (``mpiexec``, ``srun --mpi=pmi2``)
leaves a PMI connection in the environment (``PMI_FD``/``PMI_RANK``, ``PMIX_RANK``,
``OMPI_COMM_WORLD_RANK``), and then ``COMM_WORLD``'s size is the truth. ``SLURM_NTASKS``
alone only means "inside an allocation": an ``sbatch -n 5`` script's shell has it too,
and there pal-atoms starts its own ranks with ``srun --mpi=pmi2``. Processes that are
siblings of one launch but were given no connection (``srun --mpi=none -n 3``) would run
independent copies of the whole job, so they are refused before anything is written.

:func:`decide_launch` is a pure function of the environment (tested for each case);
:func:`start_ranks` runs the command that starts the ranks.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pal_atoms.core.errors import ConfigError, LaunchError

logger = logging.getLogger(__name__)

__all__ = ["STARTED_BY", "Launch", "LaunchKind", "decide_launch", "find_mpiexec", "start_ranks"]

#: Set on the ranks that pal-atoms starts (its value: the launcher), so that they know.
STARTED_BY = "PAL_ATOMS_STARTED_BY"

#: Variables a launcher sets on a rank it connected (MPICH/hydra and Slurm PMI1/PMI2, PMIx,
#: Open MPI).
_PMI_VARS = ("PMI_FD", "PMI_RANK", "PMI_PORT", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
#: Variables that say how many sibling processes one launch started.
_SIBLING_VARS = ("SLURM_STEP_NUM_TASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


class LaunchKind(enum.Enum):
    """Where a run's processes come from."""

    ONE_PROCESS = "one process"
    STARTED = "ranks started by pal-atoms"
    LAUNCHER = "ranks from the launcher"


@dataclass(frozen=True, kw_only=True)
class Launch:
    """The decision: how many ranks, and who starts them.

    Args:
        kind: One process, ranks to start, or ranks that a launcher started.
        n_ranks: Processes of the run (1 for ``ONE_PROCESS``).
        launcher: ``"mpiexec"`` or ``"srun"`` (``None`` for one process).
    """

    kind: LaunchKind
    n_ranks: int
    launcher: str | None = None

    def __post_init__(self) -> None:
        if self.n_ranks < 1:
            raise ConfigError(f"n_ranks must be >= 1, got {self.n_ranks}")
        if (self.kind is LaunchKind.ONE_PROCESS) != (self.n_ranks == 1 and not self.launcher):
            raise ConfigError(f"inconsistent launch: {self}")

    def describe(self, kernels: Mapping[str, int] | None = None) -> str:
        """One line for the log: how the run runs and, on ranks, the ranks per kernel."""
        if self.kind is LaunchKind.ONE_PROCESS:
            return "running in one process (every kernel in turn)"
        how = "started by pal-atoms with" if self.kind is LaunchKind.STARTED else "from"
        line = f"running on {self.n_ranks} MPI ranks {how} {self.launcher}"
        if kernels:
            line += ": " + ", ".join(f"{n} {name}" for name, n in kernels.items())
        return line


def _count(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    return int(value) if value.isdigit() else 0


def decide_launch(
    env: Mapping[str, str],
    *,
    requested_np: int | None,
    auto_np: Callable[[], int],
    comm_size: Callable[[], int],
    have_srun: bool,
) -> Launch:
    """Decide how this run gets its processes.

    Args:
        env: The process environment (``os.environ``).
        requested_np: ``--np`` (``None``: not given).
        auto_np: The default number of ranks on this machine (called only when needed).
        comm_size: ``COMM_WORLD``'s size (called only when a launcher connected us:
            it initialises MPI).
        have_srun: Whether ``srun`` is on ``PATH``.

    Returns:
        The decision.

    Raises:
        LaunchError: Sibling processes of one launch without an MPI connection.
    """
    siblings = max(_count(env, name) for name in _SIBLING_VARS)
    connected = any(name in env for name in _PMI_VARS)
    size = comm_size() if connected else 1
    if size > 1:
        launcher = env.get(STARTED_BY) or ("srun" if "SLURM_STEP_ID" in env else "mpiexec")
        return Launch(kind=LaunchKind.LAUNCHER, n_ranks=size, launcher=launcher)
    if siblings > 1:
        how = "srun" if "SLURM_STEP_NUM_TASKS" in env else "the launcher"
        raise LaunchError(
            f"{how} started {siblings} copies of pal-atoms that share no MPI communicator "
            "(each would run the whole job): use 'srun --mpi=pmi2' (or the cluster's "
            "mpiexec with an mpi4py built for its MPI), or call pal-atoms once and let it "
            "start its ranks"
        )
    if connected:  # mpiexec -n 1 / srun -n 1: the user asked for one process
        return Launch(kind=LaunchKind.ONE_PROCESS, n_ranks=1)
    # Inside a batch script (an allocation, no step yet) with tasks to share out, srun
    # places the ranks on the allocation's tasks (on every node of it).
    tasks = _count(env, "SLURM_NTASKS") if "SLURM_JOB_ID" in env else 0
    allocation = tasks > 1 and "SLURM_STEP_ID" not in env and have_srun
    if requested_np is not None:
        n = requested_np
    elif allocation:
        n = tasks
    else:
        n = auto_np()  # a laptop, or one task of its own: ranks within its cores
    if n == 1:
        return Launch(kind=LaunchKind.ONE_PROCESS, n_ranks=1)
    launcher = "srun" if allocation and n <= tasks else "mpiexec"
    return Launch(kind=LaunchKind.STARTED, n_ranks=n, launcher=launcher)


def find_mpiexec() -> str | None:
    """The ``mpiexec`` next to this Python (the pip MPICH) or on ``PATH``."""
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=str(here)) or shutil.which("mpiexec")


def start_ranks(launch: Launch, argv: Sequence[str]) -> int:
    """Run ``pal-atoms ARGV`` on ``launch.n_ranks`` ranks; return its exit code.

    ``-m mpi4py`` aborts the whole job on an uncaught exception instead of leaving ranks
    hanging.
    """
    if launch.launcher == "srun":
        # The pip MPICH speaks PMI2, not PMIx; a cluster whose mpi4py is built against the
        # site MPI can choose its plugin with PAL_SRUN_MPI.
        prefix = ["srun", f"--mpi={os.environ.get('PAL_SRUN_MPI', 'pmi2')}"]
    else:
        exe = find_mpiexec()
        if exe is None:
            raise ConfigError(
                "--np > 1 needs mpiexec: pip install 'pal-atoms[mpi]' (or run under "
                "your cluster's mpiexec/srun)"
            )
        prefix = [exe]
    cmd = [*prefix, "-n", str(launch.n_ranks), sys.executable, "-m", "mpi4py"]
    cmd += ["-m", "pal_atoms.cli", *argv]
    logger.debug("starting ranks: %s", " ".join(cmd))
    return subprocess.call(cmd, env={**os.environ, STARTED_BY: str(launch.launcher)})
