"""Generators: uncertainty-aware MD, transition-state search and samplers.

A generator proposes geometries, sends each one through a
:class:`~pal_atoms.protocols.PredictionClient` and reacts to the controller's verdict.
Unmodified ASE dynamics run on a :class:`ForwardingCalculator`; :class:`LocalClient`
serves predictions in a single process. Nothing here imports ``mpi4py``; every ASE
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
from .clusters import build_bi_clusters, random_cluster
from .driven import DriverGenerator, DynamicsGenerator
from .forwarding import (
    UNCERTAINTY_KEYS,
    ForwardingCalculator,
    LocalClient,
    SelectedGeometry,
    UnphysicalStateError,
    worst_verdict,
)
from .frames import FrameWriter
from .md import INTEGRATORS, MDGenerator, MDSettings
from .mpi_safety import local_comm, open_trajectory, write_frames
from .sampling import rattle_sample
from .ts import NEBGenerator, NEBSettings, SellaGenerator, SellaSettings

__all__ = [
    "INTEGRATORS",
    "UNCERTAINTY_KEYS",
    "Action",
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
    "PatiencePolicy",
    "SelectedGeometry",
    "SellaGenerator",
    "SellaSettings",
    "UnphysicalStateError",
    "atoms_from_dict",
    "atoms_to_dict",
    "build_bi_clusters",
    "check_geometry",
    "local_comm",
    "n_fragments",
    "open_trajectory",
    "random_cluster",
    "rattle_sample",
    "worst_verdict",
    "write_frames",
]
