"""Every label of a run in one HDF5 file.

The store (:mod:`~pal_atoms.store.label_store`), its schema, reading, writing, and
extxyz exchange (:mod:`pal_atoms.store.exchange`).
"""

from __future__ import annotations

from pal_atoms.store.label_store import LabelStore

__all__ = ["LabelStore"]
