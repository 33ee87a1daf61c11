"""Replay a finished run's labels into the continuous trainer, to tell labels from schedule.

Reads a run directory of ``pal-atoms md`` (``labels.h5``, ``metrics.jsonl``,
``test_set.extxyz``) and feeds its ``ok`` labels, in the order they were stored, into one
:class:`~pal_atoms.calculators.StreamingTrainer` (2 members, one process) at the
optimizer step at which each reached the run's trainers (interpolated from
``metrics.jsonl``: labels against ``training_steps`` per training rank). Each variant
changes one thing: the trainer's settings (``--variant NAME JSON`` of
:class:`StreamSettings` keywords) or, with ``"_all_at_once": true``, gives every label at
step 0, which separates what the labels are worth from when they came. Errors: the run's
own test frames and, with ``--test FILE``, independent labelled frames (extxyz).

    python bench/replay.py pal-run --variant default "{}" --variant all "{\\"_all_at_once\\": true}"

Writes ``bench/results/replay.json`` (``--name``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import table, write_json
from learning_speed import _mae_per_system


def _arrival_steps(run: Path, n_labels: int) -> np.ndarray:
    """Optimizer step of one training rank at which each stored label arrived."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ranks = json.loads((run / "config.json").read_text()).get("training_ranks") or 1
    labels = np.array([0] + [r["labels_ok"] for r in rows], dtype=float)
    steps = np.array([0] + [r["training_steps"] for r in rows], dtype=float) / ranks
    return np.interp(np.arange(1, n_labels + 1), labels, steps).astype(int)


def _replay(
    labels: list[Any], arrive: np.ndarray, total: int, tests: dict[str, list[Any]], kw: dict
) -> dict[str, Any]:
    from pal_atoms.calculators import CommitteeCalculator, StreamingTrainer, StreamSettings

    kw = dict(kw)
    if kw.pop("_all_at_once", False):
        arrive = np.zeros_like(arrive)
    committee = CommitteeCalculator.create(
        "mace",
        elements=sorted({s for a in labels for s in a.get_chemical_symbols()}),
        charges=sorted({int(a.info.get("charge", 0)) for a in labels}),
        n_members=2,
        seed=0,
        device="cpu",
    )
    trainer = StreamingTrainer(committee, StreamSettings(seed=0, **kw))
    done, serving, t0 = 0, None, time.monotonic()
    while trainer.step < total:
        k = done
        # the first two labels come at once: a trainer without labels takes no steps
        while k < len(labels) and (arrive[k] <= trainer.step or trainer.n_train + k - done < 2):
            k += 1
        if k > done:
            trainer.add(labels[done:k])
            done = k
        for pub in trainer.train_steps(25):
            serving = pub
    if serving is not None:  # the last published weights, as the run serves them
        committee.set_weights(serving.weights, members=serving.members)
    errors = {name: _mae_per_system(committee, frames)["all"] for name, frames in tests.items()}
    return {"steps": trainer.step, "labels": done, "train_s": time.monotonic() - t0, **errors}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run directory of pal-atoms md")
    p.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"))
    p.add_argument("--test", type=Path, default=None, help="independent labelled frames")
    p.add_argument("--name", default="replay", help="results file bench/results/NAME.json")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io

    from pal_atoms.store import LabelStore

    with LabelStore(args.run / "labels.h5", mode="r") as store:
        labels = list(store.read(status="ok"))
    arrive = _arrival_steps(args.run, len(labels))
    total = int(arrive[-1]) if len(arrive) else 0
    tests = {"run test": ase.io.read(args.run / "test_set.extxyz", ":")}
    if args.test is not None:
        tests["independent"] = ase.io.read(args.test, ":")
    variants = args.variant or [["default", "{}"], ["all at once", '{"_all_at_once": true}']]
    results = {}
    for name, spec in variants:
        results[name] = {"settings": json.loads(spec)}
        results[name].update(_replay(labels, arrive, total, tests, json.loads(spec)))
    headers = ["variant", "labels", "steps", *(f"{t} MAE eV/Å" for t in tests)]
    rows = [[n, r["labels"], r["steps"], *(r[t] for t in tests)] for n, r in results.items()]
    print(table(headers, rows))
    path = write_json(args.name, {"run": str(args.run), "steps": total, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
