"""Replay a finished run's labels into the continuous trainer, to tell labels from training.

Reads a run directory of ``pal-atoms md`` (``labels.h5``, ``metrics.jsonl``,
``test_set.extxyz``) and feeds its ``ok`` labels into one
:class:`~pal_atoms.calculators.StreamingTrainer` (``--members`` members, one process,
one thread). ``--order arrival`` (default) gives each label at the optimizer step at
which it reached the run's trainers (interpolated from ``metrics.jsonl``: labels against
``training_steps`` per training rank); ``--order all`` gives every label at step 0, which
separates what the labels are worth from when they came. ``--steps`` trains for longer
than the run did (default: the run's steps per training rank), so one sees what more
training on the same labels would buy. Each ``--variant NAME JSON`` changes the
trainer's settings (:class:`StreamSettings` keywords); ``--model-option KEY=VALUE``
changes the MACE hyperparameters of every variant. Every ``--every`` steps the last
published weights (what a run would serve) are scored per system on the run's own test
frames and, with ``--test FILE``, on independent labelled frames (extxyz).
``--random N`` replaces the run's labels with N frames of xTB MD per starting frame of
the run (at the run's temperature, after 200 fs, one every 25 fs; given all at once):
the same trainer on labels that no committee chose, to tell the labels' worth from the
model's.

    python bench/replay.py pal-run --order all --steps 8000 --variant default "{}"

Writes ``bench/results/replay.json`` (``--name``) and prints a table.
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


def _arrival_steps(run: Path, n_labels: int) -> np.ndarray:
    """Optimizer step of one training rank at which each stored label arrived."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ranks = json.loads((run / "config.json").read_text()).get("training_ranks") or 1
    labels = np.array([0] + [r["labels_ok"] for r in rows], dtype=float)
    steps = np.array([0] + [r["training_steps"] for r in rows], dtype=float) / ranks
    return np.interp(np.arange(1, n_labels + 1), labels, steps).astype(int)


def _key_values(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            sys.exit(f"error: --model-option needs KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _replay(
    labels: list[Any],
    arrive: np.ndarray,
    total: int,
    tests: dict[str, list[Any]],
    *,
    settings: Any,
    hyper: dict[str, Any],
    members: int,
    every: int,
) -> dict[str, Any]:
    from pal_atoms.calculators import StreamingTrainer

    committee = fresh_committee(labels, members=members, **hyper)
    trainer = StreamingTrainer(committee, settings)
    done, serving, t0, curve = 0, None, time.monotonic(), []
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
        if trainer.step % every == 0 or trainer.step >= total:
            served = serving_copy(committee, serving)  # what a run would serve
            point = {"step": trainer.step, "labels": done, "t_s": time.monotonic() - t0}
            point["lr"] = trainer.lr
            point.update({name: _mae_per_system(served, f) for name, f in tests.items()})
            curve.append(point)
            errors = " ".join(f"{n} {point[n]['all']:.4f}" for n in tests)
            print(f"  step {trainer.step}: {errors} eV/Å ({point['t_s']:.0f} s)", flush=True)
    return {**curve[-1], "curve": curve}


def _labels(args: argparse.Namespace) -> tuple[list[Any], np.ndarray, int]:
    """The labels to replay, the step at which each arrived, and the run's steps."""
    import ase.io

    from pal_atoms.store import LabelStore

    with LabelStore(args.run / "labels.h5", mode="r") as store:
        labels = list(store.read(status="ok"))
    arrive = _arrival_steps(args.run, len(labels))
    run_steps = int(arrive[-1]) if len(arrive) else 0
    if args.random is not None:
        if args.random < 1:
            sys.exit("error: --random needs N >= 1")
        config = json.loads((args.run / "config.json").read_text())
        system = Path(config["system"])
        system = system if system.is_file() else ROOT / system
        labels = _xtb_md(ase.io.read(system, ":"), [config["temperature_K"]], args.random, 25,
                         seed=12345)  # fmt: skip
        arrive = np.zeros(len(labels), dtype=int)
    return labels, arrive, run_steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run directory of pal-atoms md")
    p.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"))
    p.add_argument("--order", choices=["arrival", "all"], default="arrival",
                   help="labels at their arrival step, or all at step 0")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default: the run's steps per training rank)")  # fmt: skip
    p.add_argument("--every", type=int, default=1000, help="steps between scores")
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--test", type=Path, default=None, help="independent labelled frames")
    p.add_argument(
        "--random",
        type=int,
        default=None,
        metavar="N",
        help="N xTB MD frames per starting frame instead of the run's labels",
    )
    p.add_argument("--name", default="replay", help="results file bench/results/NAME.json")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    import torch
    from pal_atoms.calculators import StreamSettings

    torch.set_num_threads(1)
    if args.every < 25 or args.every % 25:
        sys.exit("error: --every must be a positive multiple of 25 (the training chunk)")
    hyper = _key_values(args.model_option)
    variants = []
    for name, spec in args.variant or [["default", "{}"]]:
        try:
            variants.append((name, json.loads(spec), StreamSettings(seed=0, **json.loads(spec))))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            sys.exit(f"error: variant {name!r}: {exc}")
    labels, arrive, run_steps = _labels(args)
    if args.order == "all":
        arrive = np.zeros_like(arrive)
    total = args.steps or run_steps
    tests = {"run test": ase.io.read(args.run / "test_set.extxyz", ":")}
    if args.test is not None:
        tests["independent"] = ase.io.read(args.test, ":")
    results = {}
    for name, spec, settings in variants:
        source = "run" if args.random is None else f"random {args.random} per frame"
        print(f"{name}: {len(labels)} {source} labels ({args.order}), {total} steps", flush=True)
        results[name] = {"settings": spec}
        results[name].update(
            _replay(
                labels,
                arrive,
                total,
                tests,
                settings=settings,
                hyper=hyper,
                members=args.members,
                every=args.every,
            )
        )
    systems = sorted(k for k in results[variants[0][0]]["run test"] if k != "all")
    headers = ["variant", "labels", "steps", "s", *(f"{t} MAE eV/Å" for t in tests), *systems]
    rows = [
        [
            n,
            r["labels"],
            r["step"],
            round(r["t_s"]),
            *(r[t]["all"] for t in tests),
            *(r["run test"][k] for k in systems),
        ]
        for n, r in results.items()
    ]
    print(table(headers, rows))
    path = write_json(args.name, {
        "run": str(args.run), "run_steps": run_steps, "order": args.order, "steps": total,
        "labels": "run" if args.random is None else f"random {args.random} per frame",
        "members": args.members, "model_options": hyper, "results": results,
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
