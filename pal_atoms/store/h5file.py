"""Opening a pal-atoms HDF5 store: the checks and error messages both stores share."""

from __future__ import annotations

from pathlib import Path

import h5py

from pal_atoms.core.errors import StoreError, StoreFormatError

__all__ = ["format_of", "open_existing"]


def open_existing(path: Path, mode: str, *, kind: str) -> h5py.File | None:
    """Open ``path`` if it exists (``None``: it does not, and ``mode`` may create it).

    Args:
        path: The store's file.
        mode: ``"a"`` or ``"r"``.
        kind: What the file should be, for messages (e.g. ``"label store"``).

    Raises:
        StoreError: missing in mode ``"r"``, or locked by another writer.
        StoreFormatError: a directory, an empty file, or not HDF5.
    """
    exists = path.exists()
    if not exists and mode == "r":
        raise StoreError(f"{kind} {path} does not exist")
    if exists and path.is_dir():
        raise StoreFormatError(f"{path} is a directory, not a {kind}")
    if not exists:
        path.parent.mkdir(parents=True, exist_ok=True)
        return None
    try:
        return h5py.File(path, mode)
    except BlockingIOError as exc:
        raise StoreError(f"{path} is open for writing by another process") from exc
    except OSError as exc:
        if "unable to lock" in str(exc).lower():
            raise StoreError(f"{path} is open for writing by another process") from exc
        if path.stat().st_size == 0:
            raise StoreFormatError(f"{path} is empty, not a {kind}") from exc
        raise StoreFormatError(
            f"{path} is not a {kind} or is damaged (HDF5 could not open it)"
        ) from exc


def format_of(f: h5py.File) -> str | None:
    """The file's ``format`` attribute as text (``None`` if it has none)."""
    fmt = f.attrs.get("format")
    return fmt.decode() if isinstance(fmt, bytes) else fmt
