"""Active learning from Python: ``ActiveLearning`` with a custom selection rule.

Shows: the single-process loop of :class:`pal_atoms.workflow.ActiveLearning` on the Bi
clusters of ``examples/bi_cluster.xyz`` (one Langevin generator per frame, GFN2-xTB
oracle, tiny MACE committee), driven by a selection rule written in a few lines: the
committee's energy spread per atom, with a looser threshold for larger clusters.
A selection rule is any callable ``rule(atoms, results) -> Verdict``.

Run::

    python examples/python_loop.py --quick                 # CI: ~8 labels, 2 frames
    python examples/python_loop.py --max-labels 64 --out run
    python examples/python_loop.py --continuous --out run  # StreamingTrainer, no rounds
    mpiexec -n 6 python -m mpi4py examples/python_loop.py --mpi --out run   # MPI ranks

With ``--mpi`` every rank runs this script and takes one kernel (controller,
prediction, training, oracle, generators; see ``examples/slurm/README.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ase.io
import torch
from ase import Atoms
from pal_atoms.calculators import (
    CommitteeCalculator,
    CommitteeTrainer,
    StreamingTrainer,
    StreamSettings,
    TrainerSettings,
)
from pal_atoms.dynamics import MDGenerator, MDSettings, rattle_sample
from pal_atoms.oracles import XTB, label

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.settings import WorkflowSettings

HERE = Path(__file__).resolve().parent


def per_atom_energy_rule(atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
    """Trust the committee when its energy spread is below a size-dependent eV/atom bound."""
    per_atom = float(results["energy_std"]) / len(atoms)  # eV/atom
    threshold = 0.010 if len(atoms) <= 5 else 0.015  # larger clusters: looser bound
    if per_atom < threshold:
        return Verdict.TRUSTED
    return Verdict.UNCERTAIN if per_atom < 20 * threshold else Verdict.UNTRUSTED


def labelled(frames: list[Atoms], oracle: XTB) -> list[Atoms]:
    """Oracle labels of ``frames`` (the ``ok`` ones) as atoms with results attached."""
    labels = (label(a, oracle) for a in frames)
    return [lab.to_atoms() for lab in labels if lab.ok]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--structures", type=Path, default=HERE / "bi_cluster.xyz")
    p.add_argument("--frames", type=int, default=None, help="use the first N frames only")
    p.add_argument("--out", type=Path, default=Path("pal-python-loop"), help="run folder")
    p.add_argument("--max-labels", type=int, default=48)
    p.add_argument("--time-limit", type=float, default=600.0, help="wall time limit in s")
    p.add_argument("--retrain-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30, help="epochs per training round")
    p.add_argument("--mpi", action="store_true", help="run the kernels on MPI ranks")
    p.add_argument("--prediction-ranks", type=int, default=1, help="with --mpi")
    p.add_argument("--oracle-ranks", type=int, default=1, help="with --mpi")
    p.add_argument("--training-ranks", type=int, default=1, help="with --mpi (0 or 1)")
    p.add_argument(
        "--continuous", action="store_true", help="train without stopping (StreamingTrainer)"
    )
    p.add_argument("--quick", action="store_true", help="short settings (CI)")
    args = p.parse_args()
    if args.quick:
        args.frames, args.max_labels, args.time_limit = 2, 8, 60.0
        args.retrain_size, args.epochs = 4, 5
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("e3nn", "mace", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(1)
    comm = layout = None
    if args.mpi:
        from mpi4py import MPI

        from pal_atoms.workflow.mpi.layout import Layout

        comm = MPI.COMM_WORLD
        layout = Layout(
            prediction=args.prediction_ranks,
            oracle=args.oracle_ranks,
            training=args.training_ranks,
        )

    frames = list(ase.io.read(args.structures, index=":"))[: args.frames]
    charges = sorted({int(a.info.get("charge", 0)) for a in frames})
    committee = CommitteeCalculator.create(
        "mace",
        elements=["Bi"],
        charges=charges,
        n_members=3,
        hidden_irreps="8x0e",
        num_interactions=1,
        device="cpu",
    )
    trainer: CommitteeTrainer | StreamingTrainer
    if args.continuous:
        # Labels join at once; weights are published whenever validation improves.
        trainer = StreamingTrainer(committee, StreamSettings(eval_every_steps=20, seed=0))
    else:
        trainer = CommitteeTrainer(
            committee, TrainerSettings(max_epochs=args.epochs, lr=1e-2, batch_size=4, seed=0)
        )
    oracle = XTB()
    # Same seeds on every rank: every rank builds the same objects (SPMD).
    test_set = labelled(rattle_sample(frames, 2, rattle_std_A=0.1, seed=11), oracle)
    bootstrap = labelled(rattle_sample(frames, 2, rattle_std_A=0.1, seed=5), oracle)
    if args.continuous:
        trainer.add(bootstrap)
    else:
        trainer.train(bootstrap)
    generators = [
        MDGenerator(
            atoms,
            generator_id=i,
            settings=MDSettings(temperature_K=600, timestep_fs=2.0, patience=3, seed=i),
        )
        for i, atoms in enumerate(frames)
    ]
    loop = ActiveLearning(
        committee=committee,
        oracle=oracle,
        generators=generators,
        store=args.out / "labels.h5",
        trainer=trainer,
        selection=per_atom_energy_rule,
        settings=WorkflowSettings(
            max_labels=args.max_labels,
            time_limit_s=args.time_limit,
            retrain_size=args.retrain_size,
            diversity_A=0.0,
            metrics_interval_s=5.0,
            steps_per_label=10.0 if args.continuous else None,
        ),
        run_dir=args.out,
        test_set=test_set,
        comm=comm,
        layout=layout,
    )
    summary = loop.run()
    if comm is None or comm.Get_rank() == 0:
        print(json.dumps(summary.as_dict(), indent=2, default=float))
        training = (
            f"{summary.training_steps} training steps, {summary.publishes} publishes"
            if args.continuous
            else f"{summary.training_rounds} training rounds"
        )
        print(f"{summary.labels_ok} labels, {training}; stopped: {summary.stop_reason}")


if __name__ == "__main__":
    main()
