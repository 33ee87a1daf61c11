"""An active-learning job for the MPI tests: tiny MACE committee, tblite oracle, Bi clusters.

Run as ``mpiexec -n N python -m mpi4py al_job.py RUN_DIR [options]`` (every rank runs
this script; ranks pick their kernel) or with ``--single`` in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ase import Atoms
from pal_atoms.calculators import (
    CommitteeCalculator,
    CommitteeTrainer,
    StreamingTrainer,
    StreamSettings,
    TrainerSettings,
)
from pal_atoms.dynamics import MDGenerator, MDSettings, build_bi_clusters, rattle_sample
from pal_atoms.oracles import XTB, label

from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.store import LabelStore
from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.selection import TrustWindow
from pal_atoms.workflow.settings import WorkflowSettings


class FlakyLabel:
    """Real tblite labels, with every ``fail_every``-th call failing (injected faults)."""

    def __init__(self, fail_every: int = 0, always_fail: bool = False, hang_at: int = 0):
        self.fail_every, self.always_fail, self.calls = fail_every, always_fail, 0
        self.hang_at = hang_at

    def __call__(self, atoms: Atoms, oracle: object, **kwargs: object) -> Label:
        self.calls += 1
        if self.calls == self.hang_at:  # a real child process that hangs, killed at 2 s
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracles"))
            import oracle_standins as s

            return label(atoms, s.oracle(s.Hang), timeout_s=2.0, isolate=True)
        if self.always_fail or (self.fail_every and self.calls % self.fail_every == 0):
            return Label(
                atoms=atoms,
                status=LabelStatus.FAILED,
                error="injected failure",
                oracle="xtb",
                method="GFN2-xTB",
            )
        return label(atoms, oracle, **kwargs)  # type: ignore[arg-type]


def labelled(frames: list[Atoms], oracle: XTB) -> list[Atoms]:
    out = []
    for a in frames:
        lab = label(a, oracle)
        assert lab.ok
        out.append(lab.to_atoms())
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--single", action="store_true")
    p.add_argument("--max-labels", type=int, default=16)
    p.add_argument("--time-limit", type=float, default=120.0)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--always-fail", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-at", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--bootstrap", type=int, default=0)
    p.add_argument("--continuous", action="store_true", help="StreamingTrainer, no rounds")
    p.add_argument("--lower", type=float, default=0.005, help="trust window on energy_std, eV")
    p.add_argument("--convergence-window", type=int, default=200)
    p.add_argument("--plateau-tolerance", type=float, default=0.02)
    p.add_argument("--diversity-A", type=float, default=0.0)
    p.add_argument("--retrain-size", type=int, default=4)
    p.add_argument("--stall-duplicates", type=int, default=2000)
    p.add_argument("--train-after-max-labels", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    comm = None
    if not args.single:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    oracle = XTB()
    starts = build_bi_clusters([4, 5], shapes_per_size=1, charges=[0], seed=3)
    run_dir = args.run_dir
    if args.resume and (run_dir / "committee").is_dir():
        committee = CommitteeCalculator.load(run_dir / "committee")
    else:
        committee = CommitteeCalculator.create(
            "mace", elements=["Bi"], n_members=3, seed=0, hidden_irreps="16x0e"
        )
    trainer: CommitteeTrainer | StreamingTrainer
    if args.continuous:
        trainer = StreamingTrainer(
            committee,
            StreamSettings(
                lr=args.lr,
                eval_every_steps=10,
                validation_every=3,
                min_validation=2,
                plateau_evals=3,
                plateau_tolerance=args.plateau_tolerance,
            ),
        )
    else:
        trainer = CommitteeTrainer(
            committee, settings=TrainerSettings(max_epochs=args.epochs, seed=0, lr=args.lr)
        )
    # Held-out frames and a bootstrap, labelled by the real oracle (cheap: ~ms each).
    test = labelled(rattle_sample(starts, 3, rattle_std_A=0.15, seed=11), oracle)
    if args.bootstrap and not args.resume:
        boot = labelled(rattle_sample(starts, args.bootstrap, rattle_std_A=0.1, seed=5), oracle)
        if args.continuous:  # the stream starts from the store's labels
            if comm is None or comm.Get_rank() == 0:
                run_dir.mkdir(parents=True, exist_ok=True)
                with LabelStore(run_dir / "labels.h5") as store:
                    for a in boot:
                        store.append(a, oracle="xtb", method="GFN2-xTB", generator_id=-1)
            if comm is not None:
                comm.Barrier()
        else:
            trainer.train(boot)
    gens = [
        MDGenerator(
            a,
            generator_id=i,
            settings=MDSettings(temperature_K=800, timestep_fs=2.0, patience=2, seed=i),
        )
        for i, a in enumerate(starts)
    ]
    al = ActiveLearning(
        committee=committee,
        oracle=oracle,
        generators=gens,
        store=run_dir / "labels.h5",
        trainer=trainer,
        selection=TrustWindow(key="energy_std", lower=args.lower, upper=max(5.0, args.lower)),
        settings=WorkflowSettings(
            max_labels=args.max_labels,
            train_after_max_labels=args.train_after_max_labels,
            time_limit_s=args.time_limit,
            retrain_size=args.retrain_size,
            metrics_interval_s=1.0,
            diversity_A=args.diversity_A,
            stall_duplicates=args.stall_duplicates,
            failure_window=10,
            failure_budget=0.6,
            convergence_window=args.convergence_window,
            convergence_fraction=0.05,
            # Continuous: labels at the pace training absorbs them (5 steps each).
            steps_per_label=5.0 if args.continuous else None,
            label_burst=2,
        ),
        run_dir=run_dir,
        test_set=test,
        label_fn=FlakyLabel(args.fail_every, args.always_fail, args.hang_at),
        comm=comm,
    )
    if args.resume:
        al.restore_generators()
    try:
        summary = al.run()
    except Exception as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
    if comm is None or comm.Get_rank() == 0:
        print("SUMMARY " + json.dumps(summary.as_dict(), default=float), flush=True)


if __name__ == "__main__":
    main()
