"""Learning curve of one Bi system: held-out force MAE against labels the model is given.

What a committee can learn of one starting system when no active learning is involved:
``--labels N ...`` random frames of xTB Langevin MD (tblite, GFN2-xTB) of that system
at 300, 600 and 900 K (200 fs, then one every 20 fs), a fresh MACE committee
(``--members``, default hyperparameters, or ``--model-option KEY=JSON``) trained with the
default :class:`~pal_atoms.calculators.StreamingTrainer` for ``--steps`` optimizer steps
on one thread; every 1000 steps the published weights are scored on 60 independent
frames (20 per temperature, one every 25 fs, seed 999, as ``bench/learning_speed.py``'s
independent set) in all and per temperature, and on the training labels. It tells a
system that needs more labels (the error falls with N) from one that needs more training
(the training error is still falling) or a bigger model.

    python bench/learning_curve.py --system-index 1 --labels 25 100 400 --steps 4000

Writes ``bench/results/learning_curve[_NAME].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import fresh_committee, serving_copy, table, write_json
from learning_speed import _mae_per_system, _xtb_md

ROOT = Path(__file__).resolve().parents[1]
TEMPS = [300.0, 600.0, 900.0]


def _score(committee: Any, frames: list[Any]) -> float:
    return _mae_per_system(committee, frames)["all"]


def _curve(
    labels: list[Any], test: dict[str, list[Any]], *, steps: int, members: int, hyper: dict
) -> list[dict[str, Any]]:
    from pal_atoms.calculators import StreamingTrainer, StreamSettings

    committee = fresh_committee(labels, members=members, **hyper)
    trainer = StreamingTrainer(committee, StreamSettings(seed=0))
    trainer.add(labels)
    serving, t0, curve = None, time.monotonic(), []
    while trainer.step < steps:
        for pub in trainer.train_steps(50):
            serving = pub
        if trainer.step % 1000 == 0 or trainer.step >= steps:
            served = serving_copy(committee, serving)  # what a run would serve
            point: dict[str, Any] = {"step": trainer.step, "t_s": time.monotonic() - t0}
            point.update({name: _score(served, frames) for name, frames in test.items()})
            point["train"] = _score(served, labels)
            curve.append(point)
            print(
                f"  {len(labels)} labels, step {trainer.step}: test {point['test']:.4f}, "
                f"train {point['train']:.4f} eV/Å",
                flush=True,
            )
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", type=Path, default=ROOT / "examples" / "bi_cluster.xyz")
    p.add_argument("--system-index", type=int, default=1, help="frame of --system (1: Bi4(2-))")
    p.add_argument("--labels", type=int, nargs="+", default=[25, 100, 400])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--name", default=None)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    import torch

    from pal_atoms.jobs.final_check import system_key

    torch.set_num_threads(1)
    hyper: dict[str, Any] = {}
    for item in args.model_option:
        key, sep, text = item.partition("=")
        if not sep:
            sys.exit(f"error: --model-option needs KEY=JSON, got {item!r}")
        hyper[key] = json.loads(text)
    frame = ase.io.read(args.system, index=args.system_index)
    frame.info.setdefault("charge", 0)
    name = system_key(frame)
    test = {f"test {t:.0f} K": _xtb_md([frame], [t], 20, 25, seed=999) for t in TEMPS}
    test = {"test": [a for f in test.values() for a in f], **test}
    per_temp = -(-max(args.labels) // len(TEMPS))
    pool = _xtb_md([frame], TEMPS, per_temp, 20, seed=5)
    rng = np.random.default_rng(0)
    results = []
    for n in args.labels:
        labels = [pool[i] for i in rng.choice(len(pool), min(n, len(pool)), replace=False)]
        curve = _curve(labels, test, steps=args.steps, members=args.members, hyper=hyper)
        results.append({"labels": len(labels), **curve[-1], "curve": curve})
    cols = ["test", *(f"test {t:.0f} K" for t in TEMPS), "train"]
    rows = [[r["labels"], r["step"], *(r[c] for c in cols)] for r in results]
    print(f"{name}: force MAE (eV/Å) after {args.steps} steps, {args.members} members")
    print(table(["labels", "steps", *cols], rows))
    path = write_json(
        "learning_curve" + (f"_{args.name}" if args.name else ""),
        {"system": name, "args": {k: str(v) for k, v in vars(args).items()},
         "model_options": hyper, "results": results},
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
