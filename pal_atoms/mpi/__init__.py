"""Compatibility alias: :mod:`pal_atoms.mpi` is :mod:`pal_atoms.workflow.mpi`.

``import pal_atoms.mpi.codec`` and ``from pal_atoms.mpi.run import run_mpi`` give the very
modules of :mod:`pal_atoms.workflow.mpi` (one copy of each, so enums and classes compare
equal). New code imports :mod:`pal_atoms.workflow.mpi`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_OLD, _NEW = "pal_atoms.mpi.", "pal_atoms.workflow.mpi."


class _AliasLoader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``pal_atoms.mpi.X`` to the module ``pal_atoms.workflow.mpi.X``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(_OLD):
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(_NEW + spec.name[len(_OLD) :])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the one of :mod:`pal_atoms.workflow.mpi`."""


if not any(isinstance(f, _AliasLoader) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasLoader())


def __getattr__(name: str) -> ModuleType:
    try:
        return importlib.import_module(_NEW + name)
    except ModuleNotFoundError:
        raise AttributeError(f"module 'pal_atoms.mpi' has no attribute {name!r}") from None
