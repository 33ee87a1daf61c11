"""Live progress of an active-learning run: one status line on a terminal, log lines otherwise.

:class:`Progress` takes the records the workflow writes to ``metrics.jsonl`` (see
:meth:`pal_atoms.workflow.ActiveLearning.metrics`) and shows the numbers that say whether
a run is healthy: labels stored and failed, how busy the oracle is, generator steps per
second, the current committee uncertainty and the held-out force error. On a terminal it
redraws one line in place (carriage return, no dependency); when the stream is not a
terminal (a batch job's log file) it emits a plain ``logging`` INFO line at most every
``interval_s`` seconds, and always the final record.

Example:
    >>> progress = Progress()                                   # doctest: +SKIP
    >>> progress.update(workflow.metrics(elapsed_s))           # doctest: +SKIP
    >>> progress.close()                                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "eta_to_cap", "format_duration", "format_status", "oracle_busy_fraction"]

logger = logging.getLogger(__name__)

#: Shortest interval between two redraws of the terminal line, in s.
_REDRAW_S = 0.1


def format_duration(seconds: float) -> str:
    """``seconds`` as a short human duration: ``"12.3s"``, ``"4m05s"``, ``"2h07m"``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def oracle_busy_fraction(metrics: Mapping[str, Any]) -> float | None:
    """Fraction of the wall time the oracle was busy (0..1), or ``None`` if unknown.

    Under MPI the controller reports ``oracle_busy_fraction`` (averaged over the oracle
    ranks); in one process it is ``busy_s["oracle"] / elapsed_s``.
    """
    fraction = _number(metrics.get("oracle_busy_fraction"))
    if fraction is not None:
        return fraction
    busy = metrics.get("busy_s")
    elapsed = _number(metrics.get("elapsed_s"))
    oracle_s = _number(busy.get("oracle")) if isinstance(busy, Mapping) else None
    if oracle_s is None or not elapsed:
        return None
    return oracle_s / elapsed


def eta_to_cap(
    elapsed_s: float,
    *,
    labels_ok: int,
    steps: int,
    time_limit_s: float | None,
    max_labels: int | None,
    max_steps: int | None,
) -> dict[str, Any]:
    """Time left until the nearest cap, at the rates so far (the run may converge sooner).

    Returns:
        ``{"eta_s": seconds, "eta_cap": "time_limit" | "max_labels" | "max_steps"}``, or
        ``{}`` when no cap can be estimated yet.
    """
    if elapsed_s <= 0:
        return {}
    left: dict[str, float] = {}
    if time_limit_s is not None:
        left["time_limit"] = max(time_limit_s - elapsed_s, 0.0)
    if max_labels is not None and labels_ok > 0:
        left["max_labels"] = max(max_labels - labels_ok, 0) * elapsed_s / labels_ok
    if max_steps is not None and steps > 0:
        left["max_steps"] = max(max_steps - steps, 0) * elapsed_s / steps
    if not left:
        return {}
    cap = min(left, key=left.__getitem__)
    return {"eta_s": round(left[cap], 1), "eta_cap": cap}


def _bar(elapsed_s: float, eta_s: float, width: int = 12) -> str:
    done = elapsed_s / max(elapsed_s + eta_s, 1e-9)
    filled = min(width, round(done * width))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done:4.0%}"


def format_status(metrics: Mapping[str, Any], *, bar: bool = False) -> str:
    """One-line summary of a metrics record, numbers with units; missing fields are left out.

    Args:
        metrics: One record of ``metrics.jsonl`` (``labels_ok``, ``labels_failed``,
            ``steps_per_s``, ``max_force_std`` in eV/Å, ``test_force_mae`` in eV/Å,
            ``elapsed_s``, ``busy_s``, ``queued``, ``eta_s``/``eta_cap``, ...).
        bar: Start with a bar of the time done until the nearest cap (terminal mode).

    Returns:
        E.g. ``"12m05s | labels 40 ok, 2 failed | oracle busy 83% | 51.2 steps/s |
        max force std 0.132 eV/Å | test MAE 0.045 eV/Å | queue 3"``.
    """
    parts: list[str] = []
    elapsed = _number(metrics.get("elapsed_s"))
    if elapsed is not None:
        parts.append(format_duration(elapsed))
    ok, failed = _number(metrics.get("labels_ok")), _number(metrics.get("labels_failed"))
    if ok is not None:
        parts.append(f"labels {int(ok)} ok" + (f", {int(failed)} failed" if failed else ""))
    busy = oracle_busy_fraction(metrics)
    if busy is not None:
        parts.append(f"oracle busy {busy:.0%}")
    rate = _number(metrics.get("steps_per_s"))
    if rate is not None:
        parts.append(f"{rate:.3g} steps/s")
    # A generic run's uncertainty is relative and its error in the outputs' own units.
    generic = bool(metrics.get("generic"))
    std = _number(metrics.get("max_force_std"))
    if std is not None:
        parts.append(f"uncertainty {std:.3g}" if generic else f"max force std {std:.3g} eV/Å")
    mae = _number(metrics.get("test_force_mae"))
    if mae is not None:
        parts.append(f"test MAE {mae:.3g}" + ("" if generic else " eV/Å"))
    queued = _number(metrics.get("queued"))
    if queued is not None:
        parts.append(f"queue {int(queued)}")
    pending = _number(metrics.get("pending_predictions"))
    if pending:
        parts.append(f"{int(pending)} predictions pending")
    eta = _number(metrics.get("eta_s"))
    if eta is not None and not metrics.get("final"):
        parts.append(f"ETA {format_duration(eta)} ({metrics.get('eta_cap', 'cap')})")
        if bar and elapsed is not None:
            parts.insert(0, _bar(elapsed, eta))
    if metrics.get("final"):
        parts.append("final")
    return " | ".join(parts)


class Progress:
    """Shows metrics records as a live status line (terminal) or periodic log lines.

    Args:
        stream: Where the live line goes (default ``sys.stderr``); its ``isatty()``
            decides the mode unless ``force_plain`` says otherwise.
        interval_s: Plain mode: at most one log line per this many seconds (the final
            record is always logged).
        force_plain: ``True``: log lines even on a terminal; ``False``: live line even
            when the stream is not a terminal; ``None``: decide by ``stream.isatty()``.
        clock: Monotonic clock in s (tests pass a fake one).

    Attributes:
        live: Whether the status line is redrawn in place.
        last: The last record passed to :meth:`update` (``None`` before the first).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval_s: float = 2.0,
        force_plain: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(interval_s) and interval_s >= 0):
            raise ValueError(f"interval_s must be a finite number >= 0, got {interval_s!r}")
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.interval_s = float(interval_s)
        if force_plain is None:
            isatty = getattr(self.stream, "isatty", None)
            self.live = bool(isatty()) if callable(isatty) else False
        else:
            self.live = not force_plain
        self.clock = clock
        self.last: dict[str, Any] | None = None
        self._last_emit: float | None = None
        self._width = 0  # length of the line on screen, to blank what a shorter one leaves
        self._closed = False

    def update(self, metrics: Mapping[str, Any]) -> None:
        """Show ``metrics`` (one ``metrics.jsonl`` record), throttled as the mode requires."""
        if self._closed:
            return
        self.last = dict(metrics)
        now = self.clock()
        final = bool(metrics.get("final"))
        min_gap = _REDRAW_S if self.live else self.interval_s
        if not final and self._last_emit is not None and now - self._last_emit < min_gap:
            return
        self._last_emit = now
        text = format_status(metrics, bar=self.live)
        if self.live:
            self._draw(text)
        else:
            logger.info("progress: %s", text)

    def _draw(self, text: str) -> None:
        columns = shutil.get_terminal_size(fallback=(120, 24)).columns
        if len(text) >= columns:  # a wrapped line cannot be redrawn with a carriage return
            text = text[: max(columns - 2, 1)] + "…"
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """End the live line with a newline (idempotent); plain mode writes nothing."""
        if self._closed:
            return
        self._closed = True
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
