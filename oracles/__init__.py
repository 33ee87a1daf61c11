"""Oracles: reference methods (xTB, PySCF, Turbomole, any ASE calculator) with failures.

PySCF labels ground states (:class:`PySCF`) and TDA/TDDFT excited states
(:class:`PySCFExcited`); so does Turbomole (:class:`Turbomole`,
:class:`TurbomoleExcited`, where the programs are installed).

Each oracle is an ASE calculator (``atoms.calc = XTB()``) that also reports a ``name``,
a ``method`` and a JSON ``settings`` dict (hashed into each label's provenance), checks a
structure before any expensive call, and pickles as its settings. :func:`label` turns
one oracle call into a :class:`~pal_atoms.core.label.Label` whose status is ``ok``,
``failed``, ``unconverged`` or ``timeout``, in this process or in an
:class:`OracleWorker` child process that is killed at a timeout.

Importing this package imports neither tblite, xtb, PySCF nor Turbomole; each program is
imported when its oracle first runs.
"""

from __future__ import annotations

from pal_atoms.oracles.base import Oracle, SCFNotConverged
from pal_atoms.oracles.labelling import Outcome, RetryPolicy, label, run_attempt
from pal_atoms.oracles.pyscf_dft import PySCF, PySCFSettings, gpu_available
from pal_atoms.oracles.pyscf_excited import PySCFExcited, PySCFExcitedSettings
from pal_atoms.oracles.registry import ORACLES, make_oracle
from pal_atoms.oracles.turbomole import Turbomole, TurbomoleSettings
from pal_atoms.oracles.turbomole_excited import TurbomoleExcited, TurbomoleExcitedSettings
from pal_atoms.oracles.worker import OracleWorker, shared_worker
from pal_atoms.oracles.wrap import Wrapped, WrappedSettings
from pal_atoms.oracles.xtb import XTB, XTBPython, XTBSettings

__all__ = [
    "ORACLES",
    "XTB",
    "Oracle",
    "OracleWorker",
    "Outcome",
    "PySCF",
    "PySCFExcited",
    "PySCFExcitedSettings",
    "PySCFSettings",
    "RetryPolicy",
    "SCFNotConverged",
    "Turbomole",
    "TurbomoleExcited",
    "TurbomoleExcitedSettings",
    "TurbomoleSettings",
    "Wrapped",
    "WrappedSettings",
    "XTBPython",
    "XTBSettings",
    "gpu_available",
    "label",
    "make_oracle",
    "run_attempt",
    "shared_worker",
]
