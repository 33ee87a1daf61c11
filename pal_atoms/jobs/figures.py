"""Matplotlib figures without pyplot (the object API on the Agg canvas)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["new_figure", "save_figure"]

logger = logging.getLogger(__name__)


def new_figure(width_in: float = 6.4, height_in: float = 4.2) -> Any:
    """A matplotlib figure on the Agg canvas (object API; ``pyplot`` is never touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, 120 dpi); return the path."""
    fig.savefig(path, dpi=120)
    logger.info("wrote %s", path)
    return path
