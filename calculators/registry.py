"""Backends by name: the built-in ones (MACE, SchNet) and any registered by the user."""

from __future__ import annotations

from . import mace_backend, schnet_backend  # noqa: F401  (registers the built-in ones)
from .backend import REGISTRY, Backend

__all__ = ["get_backend"]


def get_backend(name: str) -> Backend:
    """An instance of the backend called ``name``.

    Raises:
        ValueError: no backend has that name.
    """
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {sorted(REGISTRY)}") from None
