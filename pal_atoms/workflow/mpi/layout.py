"""Which MPI rank runs which kernel, and which device it uses."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pal_atoms.core.errors import LayoutError

__all__ = ["Layout", "Role", "device_for", "make_ase_rank_local", "node_local_rank"]


class Role(str, enum.Enum):
    """The five PAL kernels."""

    CONTROLLER = "controller"
    PREDICTION = "prediction"
    GENERATOR = "generator"
    ORACLE = "oracle"
    TRAINING = "training"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Rank counts per kernel; the generator ranks are the rest of the communicator.

    Ranks are handed out in an interleaved order, so code must look roles up through
    :meth:`role` and :meth:`ranks`, never assume contiguous blocks.

    Args:
        prediction: Prediction ranks (>= 1).
        oracle: Oracle ranks (>= 1).
        training: Training ranks (>= 0; 0 disables training).
    """

    prediction: int = 1
    oracle: int = 1
    training: int = 1

    def __post_init__(self) -> None:
        if self.prediction < 1 or self.oracle < 1 or self.training < 0:
            raise LayoutError(
                f"need >= 1 prediction and oracle rank and >= 0 training ranks, got "
                f"prediction={self.prediction}, oracle={self.oracle}, training={self.training}"
            )

    @property
    def fixed(self) -> int:
        """Ranks that are not generators (controller included)."""
        return 1 + self.prediction + self.oracle + self.training

    def check(self, size: int) -> None:
        """Raise :class:`LayoutError` unless ``size`` ranks leave >= 1 generator rank."""
        if size < self.fixed + 1:
            raise LayoutError(
                f"{size} MPI ranks cannot hold 1 controller + {self.prediction} prediction + "
                f"{self.oracle} oracle + {self.training} training ranks and at least one "
                f"generator rank (need >= {self.fixed + 1})"
            )

    def roles(self, size: int) -> list[Role]:
        """Role of every rank 0..size-1 (rank 0 is the controller)."""
        self.check(size)
        wanted = {
            Role.PREDICTION: self.prediction,
            Role.ORACLE: self.oracle,
            Role.TRAINING: self.training,
        }
        out = [Role.CONTROLLER]
        # Interleave the fixed kernels first, then generators: spreads kinds over nodes.
        while any(wanted.values()):
            for role in (Role.PREDICTION, Role.TRAINING, Role.ORACLE):
                if wanted[role]:
                    out.append(role)
                    wanted[role] -= 1
        out += [Role.GENERATOR] * (size - len(out))
        return out

    def counts(self, size: int) -> dict[str, int]:
        """Ranks per kernel on ``size`` ranks, e.g. ``{"controller": 1, ..., "generator": 2}``."""
        roles = self.roles(size)
        order = (Role.CONTROLLER, Role.PREDICTION, Role.TRAINING, Role.ORACLE, Role.GENERATOR)
        return {str(role): roles.count(role) for role in order if role in roles}

    def ranks(self, size: int, role: Role) -> list[int]:
        """Ranks with ``role``."""
        return [r for r, x in enumerate(self.roles(size)) if x is role]

    def role(self, size: int, rank: int) -> Role:
        """Role of ``rank``."""
        return self.roles(size)[rank]


def make_ase_rank_local() -> None:
    """Make ASE behave as in a serial run in this process.

    Once mpi4py is imported, ``ase.parallel.world`` is ``COMM_WORLD``: ``ase.io.read``
    reads on rank 0 and broadcasts, velocity distributions and Langevin broadcast random
    numbers, ``ase.io.write`` writes on rank 0 only. In pal-atoms every rank runs its own
    kernel, so any of these on one rank alone deadlocks or corrupts the others' messages.
    ``world`` is a lazy wrapper (also bound as the default ``comm`` argument of many ASE
    functions), so giving it a serial communicator fixes every such call at once.
    """
    import ase.parallel

    ase.parallel.world.comm = ase.parallel.DummyMPI()


def node_local_rank(comm: Any) -> int:
    """This rank's index among the ranks on its node (collective: call on every rank)."""
    from mpi4py import MPI

    from pal_atoms.workflow.mpi.comm import quiet_barrier

    # Split_type is a blocking collective, and MPICH spins in it: the ranks that finished
    # their imports first would burn the cores the slower ones need to finish theirs
    # (start-up of 74 oversubscribed ranks on 2 cores took ~10 s). Meet quietly first.
    quiet_barrier(comm)
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return int(local.Get_rank())
    finally:
        local.Free()


def device_for(role: Role, local_rank: int, devices: list[str] | None = None) -> str:
    """Torch device of a rank: an explicit list, else node-local rank over visible GPUs.

    Args:
        role: The rank's role (only prediction and training ranks get GPUs).
        local_rank: Its node-local rank (:func:`node_local_rank`).
        devices: Explicit devices, indexed by node-local rank (like PAL's
            ``gpu_pred``/``gpu_ml``).
    """
    if role not in (Role.PREDICTION, Role.TRAINING):
        return "cpu"
    if devices:
        return devices[local_rank % len(devices)]
    try:
        import torch

        n = torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a core dependency
        n = 0
    if n == 0:
        return "cpu"
    return f"cuda:{local_rank % n}"
