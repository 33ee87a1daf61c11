"""Generators: uncertainty-aware MD, transition-state search and samplers.

A generator proposes geometries, sends each one through a
:class:`~pal_atoms.core.protocols.PredictionClient` and reacts to the controller's verdict.
Unmodified ASE dynamics run on a :class:`ForwardingCalculator`; :class:`LocalClient`
(in :mod:`pal_atoms.workflow.local_client`, also named here) serves predictions in a
single process. Nothing here imports ``mpi4py``; every ASE
object is built rank-local (see :mod:`pal_atoms.dynamics.mpi_safety`).
"""

from __future__ import annotations

from .base import (
    Action,
    Generator,
    GeneratorEvent,
    PatiencePolicy,
    atoms_from_dict,
    atoms_to_dict,
    check_geometry,
    n_fragments,
)
from .bias import BiasCalculator, DistanceCV, UmbrellaBias
from .clusters import build_bi_clusters, random_cluster
from .driven import DriverGenerator, DynamicsGenerator
from .forwarding import (
    UNCERTAINTY_KEYS,
    ForwardingCalculator,
    UnphysicalStateError,
    worst_verdict,
)
from .frames import FrameWriter
from .md import INTEGRATORS, MDGenerator, MDSettings
from .mpi_safety import local_comm, open_trajectory, write_frames
from .path import PathSettings, barrier, transfer_path
from .reference_md import reference_md_frames
from .sampling import rattle_sample
from .transfer import TransferSampler, TransferSettings
from .ts import NEBGenerator, NEBSettings, SellaGenerator, SellaSettings

__all__ = [
    "INTEGRATORS",
    "UNCERTAINTY_KEYS",
    "Action",
    "BiasCalculator",
    "DistanceCV",
    "DriverGenerator",
    "DynamicsGenerator",
    "ForwardingCalculator",
    "FrameWriter",
    "Generator",
    "GeneratorEvent",
    "LocalClient",
    "MDGenerator",
    "MDSettings",
    "NEBGenerator",
    "NEBSettings",
    "PathSettings",
    "PatiencePolicy",
    "SelectedGeometry",
    "SellaGenerator",
    "SellaSettings",
    "TransferSampler",
    "TransferSettings",
    "UmbrellaBias",
    "UnphysicalStateError",
    "atoms_from_dict",
    "atoms_to_dict",
    "barrier",
    "build_bi_clusters",
    "check_geometry",
    "local_comm",
    "n_fragments",
    "open_trajectory",
    "random_cluster",
    "rattle_sample",
    "reference_md_frames",
    "transfer_path",
    "worst_verdict",
    "write_frames",
]


def __getattr__(name: str) -> object:
    # LocalClient judges predictions with a selection rule: it belongs to the workflow
    # layer. The old names keep working.
    if name in ("LocalClient", "SelectedGeometry"):
        from pal_atoms.workflow import local_client

        return getattr(local_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
