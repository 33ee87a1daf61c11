"""A generic active-learning run on the Branin function, in one process or under MPI.

The same script, unchanged, runs both ways (``--single``, or under ``mpiexec -n 5
python -m mpi4py``); it prints ``SUMMARY <json>`` on the controller. Used by
``test_workflow_modes.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np


def branin(x: np.ndarray) -> float:
    """Branin-Hoo; global minimum 0.397887 at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)."""
    x1, x2 = float(x[0]), float(x[1])
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


class Oracle:
    """Branin as an oracle (picklable); fails right of ``fail_above`` and can be slowed."""

    def __init__(self, fail_above: float | None, delay_s: float):
        self.fail_above, self.delay_s = fail_above, delay_s

    def __call__(self, sample: dict) -> dict:
        time.sleep(self.delay_s)
        if self.fail_above is not None and sample["x"][0] > self.fail_above:
            raise RuntimeError("solver diverged")
        return {"y": branin(sample["x"])}


def held_out(n: int = 200) -> list[dict]:
    rng = np.random.default_rng(123)
    return [{"x": p, "y": np.array(branin(p))} for p in rng.uniform([-5, 0], [10, 15], (n, 2))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--single", action="store_true")
    p.add_argument("--max-labels", type=int, default=48)
    p.add_argument("--fail-above", type=float, default=None)
    p.add_argument("--delay-s", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-converge", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from pal_atoms.generic import Ensemble, FunctionOracle, ParticleSwarm, TrainingSettings, mlp
    from pal_atoms.workflow import ActiveLearning
    from pal_atoms.workflow.settings import WorkflowSettings

    comm = None
    if not args.single:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    training = TrainingSettings(epochs=150)
    path = args.run_dir / "committee"
    if args.resume and path.exists():
        committee = Ensemble.load(path, mlp((32, 32)), training=training)
    else:
        committee = Ensemble(
            mlp((32, 32)), members=4, inputs={"x": (2,)}, outputs={"y": ()}, training=training
        )
    al = ActiveLearning(
        committee=committee,
        oracle=FunctionOracle(Oracle(args.fail_above, args.delay_s), name="branin"),
        generators=[
            ParticleSwarm(
                bounds=[(-5, 10), (0, 15)], particles=8, objective="y", seed=s, generator_id=s
            )
            for s in range(2)
        ],
        store=args.run_dir / "labels.h5",
        run_dir=args.run_dir,
        test_set=held_out(),
        settings=WorkflowSettings(
            max_labels=args.max_labels,
            retrain_size=12,
            failure_budget=0.9,
            checkpoint_interval_s=0.5,
            convergence_fraction=0.0 if args.no_converge else 0.01,
        ),
        comm=comm,
    )
    restored = al.restore_generators() if args.resume else 0
    summary = al.run()
    if comm is None or comm.Get_rank() == 0:
        out = dataclasses.asdict(summary)
        out["restored"] = restored
        print("SUMMARY " + json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
