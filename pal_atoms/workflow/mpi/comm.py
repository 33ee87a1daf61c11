"""Message tags and a non-spinning receive loop.

Blocking MPI calls in MPICH busy-poll, which burns a core per waiting rank and, on an
oversubscribed node, steals it from the ranks doing work. Every wait in pal-atoms is
therefore ``Iprobe`` plus a short sleep that backs off while nothing arrives (as in
``mpi4py.futures``, but in two stages, see :class:`Backoff`), so idle ranks cost almost
nothing and a message is picked up within ``max_sleep_s``.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Backoff",
    "Message",
    "Tag",
    "probe",
    "quiet_barrier",
    "recv",
    "send_array",
    "wait_request",
]


class Tag(enum.IntEnum):
    """Message tags (buffer messages carry float64 unless noted)."""

    PREDICT = 1  # generator -> controller: structure record
    RESULT = 2  # controller -> generator: prediction record with verdict
    BATCH = 3  # controller -> prediction: structure records
    BATCH_RESULT = 4  # prediction -> controller: prediction records
    LABEL = 5  # controller -> oracle: structure record + [uncertainty]
    LABEL_DONE = 6  # oracle -> controller: control dict (pickled) ...
    LABEL_DATA = 7  # ... then energy + forces buffer for ok labels
    TRAIN_DATA = 8  # controller -> training: label records
    WEIGHTS = 9  # training -> controller -> prediction: uint8 serialized state dicts
    STOP = 10  # controller -> any: control dict (pickled)
    DONE = 11  # any -> controller: control dict (pickled), the rank has finished
    RESCORE = 12  # controller -> prediction: structure records to re-score
    RESCORE_RESULT = 13  # prediction -> controller: prediction records
    LOG = 14  # any -> controller: control dict (pickled), e.g. training round finished


_OBJECT_TAGS = frozenset({Tag.LABEL_DONE, Tag.STOP, Tag.DONE, Tag.LOG})
_BYTE_TAGS = frozenset({Tag.WEIGHTS})


@dataclass
class Message:
    """A received message: where from, which tag, and the payload."""

    source: int
    tag: Tag
    payload: Any


class Backoff:
    """Sleep between polls that grows while nothing arrives, in two stages.

    After :meth:`reset` the sleep starts at ``min_sleep_s`` and grows by ``factor`` per
    empty poll, capped at ``active_sleep_s`` for the first ``active_s`` seconds and at
    ``max_sleep_s`` after that.

    Why two stages: a waiter oversleeps its message by up to one interval. In a cycle of
    waits (generator -> controller -> prediction rank -> controller -> generator) every
    rank's wait spans the others' oversleeps, so with a cap proportional to the time
    already waited (plain doubling) the oversleeps feed each other until every hop sits at
    the cap: a 4 us round trip became 5-13 ms. A small absolute cap while a reply is
    likely (right after traffic) bounds each hop's oversleep; the large cap afterwards
    keeps a rank that is really idle down to one ``Iprobe`` per ``max_sleep_s``.

    Args:
        min_sleep_s: First sleep after :meth:`reset`, in s.
        max_sleep_s: Longest sleep once idle for ``active_s``, in s.
        factor: Growth of the sleep per empty poll (> 1).
        active_sleep_s: Longest sleep during the first ``active_s`` after a reset, in s
            (at most ``max_sleep_s``).
        active_s: Length of that first stage, in s (0: plain capped growth).

    Raises:
        ValueError: non-positive sleeps, ``max_sleep_s < min_sleep_s``, ``factor <= 1`` or
            a negative ``active_s``.
    """

    def __init__(
        self,
        min_sleep_s: float = 2e-5,
        max_sleep_s: float = 2e-3,
        factor: float = 1.5,
        *,
        active_sleep_s: float = 2.5e-4,
        active_s: float = 0.05,
    ):
        if not 0 < min_sleep_s <= max_sleep_s:
            raise ValueError(
                f"need 0 < min_sleep_s <= max_sleep_s, got {min_sleep_s}, {max_sleep_s}"
            )
        if not factor > 1:
            raise ValueError(f"factor must be > 1, got {factor}")
        if not active_sleep_s > 0 or active_s < 0:
            raise ValueError(
                f"need active_sleep_s > 0 and active_s >= 0, got {active_sleep_s}, {active_s}"
            )
        self.min_sleep_s, self.max_sleep_s, self.factor = min_sleep_s, max_sleep_s, factor
        self.active_sleep_s = min(max(active_sleep_s, min_sleep_s), max_sleep_s)
        self.active_s = active_s
        self._sleep = 0.0
        self._since: float | None = None

    def reset(self) -> None:
        """Something happened: poll again at once."""
        self._sleep = 0.0
        self._since = None

    def wait(self) -> None:
        """Nothing happened: sleep a little longer than last time."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        cap = self.active_sleep_s if now - self._since < self.active_s else self.max_sleep_s
        self._sleep = min(cap, max(self.min_sleep_s, self._sleep * self.factor))
        time.sleep(self._sleep)


def _receive(comm: Any, status: Any) -> Message:
    from mpi4py import MPI

    source, tag = status.Get_source(), Tag(status.Get_tag())
    if tag in _OBJECT_TAGS:
        payload = comm.recv(source=source, tag=tag)
    elif tag in _BYTE_TAGS:
        payload = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
        comm.Recv([payload, MPI.BYTE], source=source, tag=tag)
    else:
        payload = np.empty(status.Get_count(MPI.DOUBLE), dtype=np.float64)
        comm.Recv([payload, MPI.DOUBLE], source=source, tag=tag)
    return Message(source, tag, payload)


def probe(comm: Any, source: int | None = None, tag: int | None = None) -> Message | None:
    """Receive one pending message if there is one (never blocks)."""
    from mpi4py import MPI

    status = MPI.Status()
    src = MPI.ANY_SOURCE if source is None else source
    tg = MPI.ANY_TAG if tag is None else tag
    if not comm.Iprobe(source=src, tag=tg, status=status):
        return None
    return _receive(comm, status)


def recv(
    comm: Any,
    source: int | None = None,
    tag: int | None = None,
    backoff: Backoff | None = None,
    timeout_s: float | None = None,
) -> Message | None:
    """Wait for a message without spinning; ``None`` after ``timeout_s``."""
    backoff = backoff or Backoff()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        msg = probe(comm, source, tag)
        if msg is not None:
            return msg
        if deadline is not None and time.monotonic() > deadline:
            return None
        backoff.wait()


def send_array(comm: Any, array: np.ndarray, dest: int, tag: Tag) -> None:
    """Send a float64 or uint8 buffer; return once the buffer may be reused.

    A blocking ``Send`` of a message above MPICH's eager size waits for the receiver to
    post its receive, spinning all the while (measured: 3-5 ms of a busy core per batch
    on an oversubscribed node while the controller slept). ``Isend`` plus
    :func:`wait_request` waits the same time without using the core.
    """
    from mpi4py import MPI

    kind = MPI.BYTE if array.dtype == np.uint8 else MPI.DOUBLE
    wait_request(comm.Isend([np.ascontiguousarray(array), kind], dest=dest, tag=tag))


def wait_request(request: Any, backoff: Backoff | None = None) -> None:
    """Wait for an MPI request without spinning (``Test`` plus a short backoff).

    The default backoff polls often (the receiver of a large message may be waiting
    inside its ``Recv`` for this side to move the data along).
    """
    if request.Test():
        return
    backoff = backoff or Backoff(min_sleep_s=5e-6, active_sleep_s=1e-4)
    while not request.Test():
        backoff.wait()


def quiet_barrier(comm: Any) -> None:
    """Barrier that waits without spinning (``Ibarrier`` + :func:`wait_request`).

    Use it before a blocking collective whose ranks may arrive far apart in time (e.g. at
    start-up), so that the early ones sleep instead of spinning.
    """
    wait_request(comm.Ibarrier(), Backoff(max_sleep_s=0.01))
