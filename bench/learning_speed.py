"""How fast does a run hand over a good potential? Continuous vs round-based training.

For each system (the shipped Bi clusters, ethanol) and seed, ``pal-atoms md`` runs once
with ``--training continuous`` and once with ``--training rounds``, one after the other on
the same machine (the convergence stop is switched off so both use the whole budget).
From each run: the held-out force MAE against wall time and against labels (the run's
own test set, ``metrics.jsonl``), the time to reach ``--target`` eV/Å, and the final
committee's MAE on an independent test set (xTB MD at 300, 600 and 900 K from the
starting frames, per system). Then random sampling at equal wall time: as many labels as
the continuous run used, drawn from xTB MD at the run's temperature, trained by the same
:class:`StreamingTrainer` in one process for the continuous run's loop time.

    python bench/learning_speed.py --quick          # one seed, Bi, 4 min per run
    python bench/learning_speed.py                  # 3 seeds, Bi and ethanol, 30 min per run

Writes ``bench/results/learning_speed[_quick].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import fresh_committee, run_md, table, write_json

ROOT = Path(__file__).resolve().parents[1]


def _xtb_md(frames: list[Any], temps: list[float], n: int, every: int, seed: int) -> list[Any]:
    """Labelled frames of xTB Langevin MD (tblite) from each start at each temperature."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tblite.ase import TBLite

    out = []
    for k, a0 in enumerate(frames):
        for t in temps:
            a = a0.copy()
            a.info = dict(a0.info)
            a.calc = TBLite(
                method="GFN2-xTB",
                charge=int(a.info.get("charge", 0)),
                multiplicity=int(a.info.get("multiplicity", 1)),
                verbosity=0,
            )
            rng = np.random.default_rng([seed, k, int(t)])
            MaxwellBoltzmannDistribution(a, temperature_K=t, rng=rng)
            dyn = Langevin(a, 1.0 * units.fs, temperature_K=t, friction=0.02, rng=rng, fixcm=False)
            dyn.run(200)  # equilibrate away from the start
            for _ in range(n):
                dyn.run(every)
                b = a.copy()
                b.info = dict(a.info)
                b.calc = SinglePointCalculator(
                    b, energy=a.get_potential_energy(), forces=a.get_forces()
                )
                out.append(b)
    return out


def _mae_per_system(committee: Any, frames: list[Any]) -> dict[str, float]:
    from pal_atoms.jobs.final_check import system_key

    preds = committee.predict_batch(frames)
    errs: dict[str, list[np.ndarray]] = {}
    for p, a in zip(preds, frames, strict=True):
        errs.setdefault(system_key(a), []).append(np.abs(p["forces"] - a.get_forces()).ravel())
    out = {k: float(np.mean(np.concatenate(v))) for k, v in errs.items()}
    out["all"] = float(np.mean(np.concatenate([e for v in errs.values() for e in v])))
    return out


def _run_md(system: Path, out: Path, mode: str, seed: int, args: argparse.Namespace) -> float:
    return run_md(system, out, [
        "--training", mode, "--seed", str(seed), "--time-limit", str(args.minutes * 60),
        "--max-labels", str(args.max_labels), "--convergence-fraction", "1e-9",
        "--final-check-ps", "0", "-q",
    ])  # fmt: skip


def _curve(run: Path) -> list[dict[str, float]]:
    from pal_atoms.workflow.metrics import read_metrics

    return [
        {"t_s": r["elapsed_s"], "labels": r["labels_ok"], "mae": r["test_force_mae"]}
        for r in read_metrics(run / "metrics.jsonl")
        if r.get("test_force_mae") is not None
    ]


def _time_to(curve: list[dict[str, float]], target: float) -> float | None:
    return next((p["t_s"] for p in curve if p["mae"] <= target), None)


def _random_baseline(
    frames: list[Any], n_labels: int, loop_s: float, test: list[Any], *, seed: int, temp: float
) -> dict[str, Any]:
    from pal_atoms.calculators import StreamingTrainer, StreamSettings

    per = max(1, -(-n_labels // len(frames)))
    pool = _xtb_md(frames, [temp], per, 20, seed + 100)
    rng = np.random.default_rng(seed)
    labels = [pool[i] for i in rng.choice(len(pool), min(n_labels, len(pool)), replace=False)]
    committee = fresh_committee(frames, members=4, seed=seed)
    trainer = StreamingTrainer(committee, StreamSettings(seed=seed))
    trainer.add(labels)
    serving = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < loop_s:
        for pub in trainer.train_steps(50):
            serving = pub
    if serving is not None:  # the last published (best validated) weights, as in a run
        committee.set_weights(serving.weights, members=serving.members)
    return {"labels": len(labels), "train_s": loop_s, "test": _mae_per_system(committee, test)}


def _ethanol(path: Path) -> Path:
    import ase.io
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    atoms.info.update(charge=0, multiplicity=1)
    ase.io.write(path, [atoms], format="extxyz")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, Bi only, 4 min per run")
    p.add_argument("--minutes", type=float, default=None, help="loop time limit per run")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--systems", nargs="+", default=None, choices=["bi", "ethanol"])
    p.add_argument("--modes", nargs="+", default=["continuous", "rounds"])
    p.add_argument("--max-labels", type=int, default=256)
    p.add_argument("--target", type=float, default=0.05, help="MAE target for time-to, eV/Å")
    p.add_argument("--temperature", type=float, default=600.0, help="the runs' MD temperature")
    p.add_argument("--name", default=None, help="results file bench/results/NAME.json")
    args = p.parse_args()
    args.minutes = args.minutes or (4.0 if args.quick else 30.0)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.systems = args.systems or (["bi"] if args.quick else ["bi", "ethanol"])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    from pal_atoms.calculators import CommitteeCalculator

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.systems:
            system = (
                ROOT / "examples" / "bi_cluster.xyz"
                if name == "bi"
                else _ethanol(Path(tmp) / "ethanol.xyz")
            )
            frames = ase.io.read(system, ":")
            test = _xtb_md(frames, [300.0, 600.0, 900.0], 6, 25, seed=999)
            for seed in args.seeds:
                for mode in args.modes:
                    run = Path(tmp) / f"{name}_{seed}_{mode}"
                    wall = _run_md(system, run, mode, seed, args)
                    summary = json.loads((run / "summary.json").read_text())
                    committee = CommitteeCalculator.load(run / "committee", device="cpu")
                    curve = _curve(run)
                    res = {
                        "system": name, "seed": seed, "mode": mode, "wall_s": wall,
                        "loop_s": summary["wall_time_s"], "labels": summary["labels_ok"],
                        "curve": curve, "time_to_target_s": _time_to(curve, args.target),
                        "final_run_test_mae": summary["final_test_force_mae"],
                        "independent_test": _mae_per_system(committee, test),
                        "calibration": summary.get("test_calibration"),
                    }  # fmt: skip
                    results.append(res)
                    rows.append(
                        [name, seed, mode, res["labels"], res["loop_s"],
                         res["final_run_test_mae"], res["independent_test"]["all"],
                         max(v for k, v in res["independent_test"].items() if k != "all"),
                         res["time_to_target_s"] or "never"]
                    )  # fmt: skip
                    print(table(HEADERS, rows[-1:]), flush=True)
                cont = next(r for r in results if r["seed"] == seed and r["system"] == name)
                rnd = _random_baseline(
                    frames, cont["labels"], cont["loop_s"], test, seed=seed, temp=args.temperature
                )
                results.append({"system": name, "seed": seed, "mode": "random", **rnd})
                rows.append(
                    [name, seed, "random (equal time)", rnd["labels"], rnd["train_s"], "-",
                     rnd["test"]["all"], max(v for k, v in rnd["test"].items() if k != "all"),
                     "-"]
                )  # fmt: skip
    print(table(HEADERS, rows))
    out = write_json(
        args.name or ("learning_speed_quick" if args.quick else "learning_speed"),
        {"args": vars(args), "load_avg": os.getloadavg(), "runs": results},
    )
    print(f"wrote {out}")


HEADERS = [
    "system", "seed", "mode", "labels", "loop s", "run test MAE", "indep. MAE",
    "worst system", "t to target s",
]  # fmt: skip


if __name__ == "__main__":
    main()
