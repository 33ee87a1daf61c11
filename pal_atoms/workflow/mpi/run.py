"""Run an :class:`~pal_atoms.workflow.ActiveLearning` over MPI ranks (SPMD).

Every rank builds the same ``ActiveLearning`` object and calls ``run()``; each rank then
uses only its own part: the controller the store, selection and queue; prediction ranks
the committee; oracle ranks the oracle; training ranks the trainer; generator ranks their
share of the generators (round-robin by generator index).
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from pal_atoms.core.errors import WorkflowError
from pal_atoms.core.protocols import StopCriterion
from pal_atoms.workflow.mpi.layout import (
    Layout,
    Role,
    device_for,
    make_ase_rank_local,
    node_local_rank,
)

if TYPE_CHECKING:
    from pal_atoms.workflow.serial import ActiveLearning
    from pal_atoms.workflow.summary import Summary

__all__ = ["run_mpi"]

logger = logging.getLogger(__name__)

CONTROLLER = 0


def run_mpi(al: ActiveLearning) -> Summary:
    """Run ``al`` on ``al.comm``; rank 0 returns the run's summary, others their own."""
    from pal_atoms.workflow.mpi.generators import generator_rank
    from pal_atoms.workflow.mpi.ranks import oracle_rank, prediction_rank
    from pal_atoms.workflow.mpi.training import stream_rank, training_rank
    from pal_atoms.workflow.summary import Summary

    comm = al.comm
    if comm is None:
        raise ValueError("run_mpi needs ActiveLearning(comm=...)")
    size, rank = comm.Get_size(), comm.Get_rank()
    layout: Layout = al.layout or Layout(training=1 if al.trainer is not None else 0)
    layout.check(size)  # every rank raises the same LayoutError: a clean exit everywhere
    make_ase_rank_local()
    if al.trainer is None and layout.training:
        layout = Layout(prediction=layout.prediction, oracle=layout.oracle, training=0)
    role = layout.role(size, rank)
    if role is not Role.CONTROLLER:
        # mpiexec forwards SIGINT/SIGTERM to every rank; the controller alone decides how
        # to stop, and tells the others.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    explicit = {
        Role.PREDICTION: al.settings.prediction_devices,
        Role.TRAINING: al.settings.training_devices,
    }.get(role, ())
    # node_local_rank is collective: every rank calls it.
    device = device_for(role, node_local_rank(comm), list(explicit) or None)
    if role in (Role.PREDICTION, Role.TRAINING) and device != "cpu":
        al.committee.to(device=device)
    logger.debug("rank %d of %d: %s on %s", rank, size, role, device)

    if role is Role.CONTROLLER:
        return _control(al, comm, layout)
    if role is Role.PREDICTION:
        first = rank == layout.ranks(size, Role.PREDICTION)[0]
        checkpoint = al.run_dir / "committee" if (first and al.run_dir) else None
        prediction_rank(
            comm,
            CONTROLLER,
            al.committee,
            checkpoint=checkpoint,
            test_set=al.test_set if first else (),
            codec=al.codec,
        )
    elif role is Role.ORACLE:
        oracle_rank(
            comm,
            CONTROLLER,
            al.oracle,
            al.label_fn,
            timeout_s=al.settings.oracle_timeout_s,
            isolate=al.settings.isolate_oracle,
            codec=al.codec,
        )
    elif role is Role.TRAINING:
        trainers = layout.ranks(size, Role.TRAINING)
        k = trainers.index(rank)
        n_members = int(getattr(al.committee, "n_members", 1))
        members = [m for m in range(n_members) if m % len(trainers) == k]
        if al.continuous:
            from pal_atoms.calculators.stream import StreamingTrainer

            # Each training rank owns its share of the members, on its own process's copy,
            # and starts from whatever labels the user's trainer already holds.
            stream = StreamingTrainer(al.committee, al.stream.settings, members=members)
            stream.add(al.stream.labels)
            stream_rank(comm, CONTROLLER, stream)
        else:
            training_rank(
                comm,
                CONTROLLER,
                al.committee,
                al.trainer,
                members=members,
                retrain_size=al.settings.retrain_size,
                codec=al.codec,
            )
    else:
        gen_ranks = layout.ranks(size, Role.GENERATOR)
        k = gen_ranks.index(rank)
        mine = [g for i, g in enumerate(al.generators) if i % len(gen_ranks) == k]
        generator_rank(
            comm,
            CONTROLLER,
            mine,
            state_interval_s=al.settings.checkpoint_interval_s,
            codec=al.codec,
        )
    return Summary(stop_reason=f"{role} rank {rank} finished")


def _control(al: ActiveLearning, comm: Any, layout: Layout) -> Summary:
    """The controller rank: open the store, run the controller, close everything."""
    from pal_atoms.workflow.mpi.controller import MPIController

    store = al.open_store()
    metrics = al.open_metrics()
    old = al.install_signal_handlers()
    try:
        MPIController(al, comm, layout).run(store, metrics)
    finally:
        metrics.close()
        al.restore_signal_handlers(old)
        store.close()
    logger.info("run ended: %s", al.summary.stop_reason)
    if al.summary.stop_criterion == StopCriterion.ERROR.value:
        raise WorkflowError(al.summary.stop_reason)  # as in one process: the run failed
    return al.summary
