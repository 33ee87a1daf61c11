"""The orderly end of an MPI run: every kernel stops in turn, nothing is lost.

Generators stop first, then oracles (labels in progress are waited for and stored),
trainers (a round in progress finishes and its weights are forwarded) and prediction
ranks last; structures still queued are recorded as cancelled.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pal_atoms.store import LabelStore
from pal_atoms.workflow.mpi.comm import Backoff, Tag, probe

if TYPE_CHECKING:
    from pal_atoms.workflow.mpi.controller import MPIController

__all__ = ["shutdown"]

logger = logging.getLogger(__name__)


def _pump(
    ctrl: MPIController, store: LabelStore, until: Any, timeout_s: float | None = None
) -> None:
    """Handle messages until ``until()`` holds (or ``timeout_s`` passed)."""
    backoff = Backoff()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not until():
        msg = probe(ctrl.comm)
        if msg is not None:
            ctrl.handle(msg, store)
            backoff.reset()
        else:
            backoff.wait()
        ctrl._flush_outbox()
        ctrl._store_labels(store)
        if deadline is not None and time.monotonic() > deadline:
            logger.warning("shutdown: gave up waiting after %.0f s", timeout_s)
            return


def shutdown(ctrl: MPIController, store: LabelStore) -> None:
    """Stop gracefully, kernel by kernel.

    Generators first, then oracles (labels in progress are waited for and stored),
    trainers (a round in progress finishes and its weights are forwarded), predictors
    last; structures still queued are recorded as cancelled.
    """
    ctrl.stopping = True
    ctrl.al.labelling = False
    ctrl._store_labels(store)
    stop = {
        "reason": ctrl.al.summary.stop_reason,
        "criterion": ctrl.al.summary.stop_criterion,
    }
    for g in ctrl.generators:
        ctrl.comm.send(stop, dest=g, tag=Tag.STOP)
    _pump(ctrl, store, lambda: set(ctrl.generators) <= ctrl.done)
    _pump(
        ctrl,
        store,
        lambda: not ctrl.busy_oracles,
        timeout_s=ctrl.al.settings.oracle_timeout_s and 2 * ctrl.al.settings.oracle_timeout_s + 10,
    )
    for cand, _ in ctrl.busy_oracles.values():  # an oracle that never answered
        ctrl.al.queue.push(
            cand.atoms, cand.uncertainty, generator_id=cand.generator_id, step=cand.step
        )
    ctrl.al.cancel_queue(store)
    for o in ctrl.oracles:
        ctrl.comm.send(stop, dest=o, tag=Tag.STOP)
    for t in ctrl.trainers:
        ctrl.comm.send(stop, dest=t, tag=Tag.STOP)
    _pump(ctrl, store, lambda: set(ctrl.oracles + ctrl.trainers) <= ctrl.done)
    _pump(ctrl, store, lambda: not ctrl.outbox)  # final weights reach the predictors
    for p in ctrl.predictors:
        ctrl.comm.send(stop, dest=p, tag=Tag.STOP)
    _pump(ctrl, store, lambda: set(ctrl.predictors) <= ctrl.done)
    ctrl.al.save_generator_states(ctrl.generator_states)
