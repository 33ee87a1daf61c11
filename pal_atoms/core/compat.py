"""Compatibility shims for third-party packages, in one place.

Each shim is the smallest change that makes a pinned dependency import on the torch we
install, and each one says why. Import the backends through these functions only.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["import_mace", "import_schnetpack", "torch_load"]

_FORCE_VAR = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
#: mace's import-time notice that the optional cuequivariance package is missing.
_NOTICE = "cuequivariance or cuequivariance_torch is not available"

logger = logging.getLogger(__name__)


def _allow_slice_in_weights_only_load() -> None:
    # e3nn 0.4.4 (pinned by mace-torch 0.3.x) loads its Wigner constants with a plain
    # torch.load; since torch 2.6 that defaults to weights_only=True and refuses the
    # `slice` objects in the file. Allow-listing `slice` is harmless (it cannot run code).
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([slice])


@contextlib.contextmanager
def keep_torch_load_safe() -> Iterator[None]:
    """Undo a ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` that mace sets inside the block.

    mace's modules set it when they are imported (some lazily, while a model is built);
    the caller's environment is restored on the way out.
    """
    before = os.environ.get(_FORCE_VAR)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_FORCE_VAR, None)
        else:
            os.environ[_FORCE_VAR] = before


def import_mace() -> ModuleType:
    """Import ``mace`` (with e3nn) without leaking its process-wide side effects.

    ``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in ``os.environ``, which
    turns off torch's protection against code execution in every later ``torch.load``
    without an explicit ``weights_only``. We restore the caller's environment right after
    the import; pal-atoms itself always passes ``weights_only=True``.

    Returns:
        The imported ``mace`` package (with ``mace.modules``, ``mace.data`` and
        ``mace.tools`` imported).
    """
    _allow_slice_in_weights_only_load()
    # e3nn loads its constants at import; import it before mace sets the variable, so that
    # load runs with weights_only=True too.
    importlib.import_module("e3nn.o3")
    captured = io.StringIO()
    try:
        # mace prints a notice about the optional cuequivariance package at import; every
        # MPI rank would repeat it. Keep everything else it prints.
        with keep_torch_load_safe(), contextlib.redirect_stdout(captured):
            mace = importlib.import_module("mace")
            for sub in ("mace.modules", "mace.data", "mace.tools", "mace.tools.scatter"):
                importlib.import_module(sub)
    finally:
        for line in captured.getvalue().splitlines(keepends=True):
            if _NOTICE in line:
                logger.debug("mace: %s", line.strip())
            else:
                sys.stdout.write(line)
    return mace


def import_schnetpack() -> ModuleType:
    """Import ``schnetpack`` 2.0.x on current torch.

    schnetpack 2.0.4 imports ``T_co`` from ``torch.utils.data.dataloader``, which torch
    renamed to ``_T_co``; we restore the old name (a TypeVar) before importing.

    Raises:
        ImportError: schnetpack is not installed (install the ``schnet`` extra).
    """
    import torch.utils.data.dataloader as dl

    if not hasattr(dl, "T_co") and hasattr(dl, "_T_co"):
        dl.T_co = dl._T_co  # type: ignore[attr-defined]
    try:
        return importlib.import_module("schnetpack")
    except ImportError as exc:
        raise ImportError(
            f"{exc}; the SchNet backend needs: pip install 'pal-atoms[schnet]'"
        ) from exc


def torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` that never unpickles code (``weights_only=True``, always explicit)."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)
