"""One small job run in either mode, for the behavioural tests that hold the modes together.

A periodic Cu cell labelled by ASE's EMT (wrapped as an oracle: energy, forces and
stress), a tiny real MACE committee trained continuously, Langevin MD generators. Faults
are injected by flags. Run as ``mpiexec -n N python -m mpi4py modes_job.py RUN_DIR ...``
or with ``--single`` in one process; the same arguments give the same job.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ase.build import bulk
from ase.calculators.emt import EMT
from pal_atoms.calculators import CommitteeCalculator, StreamingTrainer, StreamSettings
from pal_atoms.dynamics import MDGenerator, MDSettings, rattle_sample
from pal_atoms.oracles import Wrapped, label

from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.selection import TrustWindow
from pal_atoms.workflow.settings import WorkflowSettings


class FlakyCommittee:
    """A real committee whose every ``fail_every``-th prediction of generator geometries
    raises (held-out and validation frames, which carry their labels, always work)."""

    def __init__(self, committee: Any, fail_every: int):
        self._committee, self.fail_every, self.calls = committee, fail_every, 0

    def predict_batch(self, frames: list[Any]) -> list[dict[str, Any]]:
        if any(a.calc is not None for a in frames):
            return self._committee.predict_batch(frames)
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("injected prediction failure")
        return self._committee.predict_batch(frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._committee, name)


class FailingMD(MDGenerator):
    """MD that raises once at a given step: ``RuntimeError`` (recoverable) or ``KeyError``
    (a bug)."""

    def __init__(self, *args: Any, fail_at: int, bug: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fail_at, self.bug, self.failed = fail_at, bug, False

    def irun(self, client: Any) -> Any:
        for event in super().irun(client):
            if self.fail_at and not self.failed and self.step >= self.fail_at:
                self.failed = True
                raise (KeyError("injected bug") if self.bug else RuntimeError("injected fault"))
            yield event


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--single", action="store_true")
    p.add_argument("--max-labels", type=int, default=8)
    p.add_argument("--time-limit", type=float, default=120.0)
    p.add_argument("--fail-predictions", type=int, default=0, help="every N-th call fails")
    p.add_argument("--generator-fault-at", type=int, default=0)
    p.add_argument("--generator-bug", action="store_true", help="the fault is a KeyError")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    comm = None
    if not args.single:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms, periodic
    oracle = Wrapped(factory=EMT, name="emt", method="EMT")
    committee = CommitteeCalculator.create(
        "mace", elements=["Cu"], n_members=2, seed=0, hidden_irreps="8x0e", r_max=4.0
    )
    trainer = StreamingTrainer(
        committee, StreamSettings(eval_every_steps=10, validation_every=3, min_validation=2)
    )
    test = [label(a, oracle).to_atoms() for a in rattle_sample([cell], 3, rattle_std_A=0.1, seed=1)]
    gens = [
        FailingMD(
            cell.copy(),
            generator_id=i,
            settings=MDSettings(temperature_K=600, timestep_fs=2.0, patience=2, seed=i),
            fail_at=args.generator_fault_at if i == 0 else 0,
            bug=args.generator_bug,
        )
        for i in range(2)
    ]
    al = ActiveLearning(
        committee=FlakyCommittee(committee, args.fail_predictions),
        oracle=oracle,
        generators=gens,
        store=args.run_dir / "labels.h5",
        trainer=trainer,
        selection=TrustWindow(key="energy_std", lower=1e-4, upper=10.0),
        settings=WorkflowSettings(
            max_labels=args.max_labels,
            time_limit_s=args.time_limit,
            metrics_interval_s=1.0,
            diversity_A=0.0,
            convergence_window=1000,
            label_burst=2,
        ),
        run_dir=args.run_dir,
        test_set=test,
        comm=comm,
    )
    try:
        summary = al.run()
    except Exception as exc:
        if comm is None or comm.Get_rank() == 0:
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
            print("SUMMARY " + json.dumps(al.summary.as_dict(), default=float), flush=True)
        sys.exit(3)
    if comm is None or comm.Get_rank() == 0:
        print("SUMMARY " + json.dumps(summary.as_dict(), default=float), flush=True)


if __name__ == "__main__":
    main()
