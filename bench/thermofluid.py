"""The thermo-fluid surrogate: active learning against random sampling, and against PSO
run directly on the CFD.

Problem (``examples/thermofluid``): maximise the Stanton number St of a laminar channel
(Re 100, Pr 0.7, L = 8 H) with ``--promoters`` square eddy promoters at a drag
coefficient C_f <= ``--cf-max``; OpenFOAM (simpleFoam) labels a geometry in 1-2 s.

Per seed, with the same CNN committee and training settings everywhere:

1. **surrogate error**: committees trained from scratch on the first n labels of the
   active-learning run (swarms on the committee, uncertain predictions labelled) and on n
   uniformly random geometries; MAE of C_f and St on ``--test`` random CFD labels;
2. **best St at bounded C_f per CFD call**: the best feasible CFD label among the first n
   calls of the active-learning run, of random sampling, and of the same particle swarm
   run directly on the CFD (``ParticleSwarm.optimise``).

    python bench/thermofluid.py --quick      # 1 seed, 40 labels, 24 test geometries
    python bench/thermofluid.py              # 2 seeds, 64 labels, 40 test geometries

Writes ``bench/results/thermofluid[_quick].json`` and prints tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import table, write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "thermofluid"))

import thermofluid as tf  # noqa: E402


def _errors(labels: list[dict], test: list[dict], s: Any, flow: Any) -> dict[str, float]:
    ens = tf.committee(s, flow)
    ens.default_trainer().train(labels)
    return ens.errors(test)


def _best_so_far(labels: list[dict], checkpoints: list[int], cf_max: float) -> list[float | None]:
    out = []
    for n in checkpoints:
        best = tf.best_feasible(labels[:n], cf_max)
        out.append(None if best is None else float(best["st"]))
    return out


def _active(s: Any, flow: Any, n: int, test: list[dict], run_dir: Path) -> list[dict]:
    from pal_atoms.workflow import ActiveLearning
    from pal_atoms.workflow.settings import WorkflowSettings

    al = ActiveLearning(
        committee=tf.committee(s, flow),
        oracle=tf.oracle(flow),
        generators=tf.swarms(s, flow),
        store=run_dir / "labels.h5",
        run_dir=run_dir,
        test_set=test,
        settings=WorkflowSettings(max_labels=n, retrain_size=8, oracle_timeout_s=120.0),
    )
    al.run()
    with al.open_store() as store:
        return store.read("ok")


def _direct_pso(s: Any, flow: Any, n: int) -> list[dict]:
    from pal_atoms.core.samples import Schema
    from pal_atoms.generic import ParticleSwarm
    from pal_atoms.generic.channel import ChannelFlow

    cfd = ChannelFlow(flow)
    calls: list[dict] = []
    pso = ParticleSwarm(
        flow.bounds(s.promoters),
        particles=s.particles,
        objective="st",
        minimise=False,
        limits={"cf": (None, s.cf_max)},
        kappa=0.0,
        seed=s.seed,
    )
    pso.bind(Schema({"promoters": (s.promoters, 2)}, {"cf": (), "st": ()}))

    def record(sample: Any, out: Any) -> None:
        if out is not None:
            calls.append({**sample, **{k: np.array(v) for k, v in out.items()}})

    pso.optimise(cfd, iterations=max(1, n // s.particles), on_call=record)
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--labels", type=int, default=None)
    p.add_argument("--test", type=int, default=None)
    p.add_argument("--promoters", type=int, default=2)
    p.add_argument("--cf-max", type=float, default=0.3)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pal_atoms.generic.channel import openfoam_available

    if (reason := openfoam_available()) is not None:
        sys.exit(f"error: {reason}")
    seeds = args.seeds or (1 if args.quick else 2)
    n = args.labels or (40 if args.quick else 64)
    n_test = args.test or (24 if args.quick else 40)
    checkpoints = sorted({max(8, n // 4), n // 2, n})
    flow = tf.channel()
    t0 = time.time()
    base = tf.ThermofluidSettings(promoters=args.promoters, cf_max=args.cf_max)
    test = tf.labelled(tf.random_geometries(base, flow, n_test, seed=10_000), flow)
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        s = tf.ThermofluidSettings(promoters=args.promoters, cf_max=args.cf_max, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.time()
            active = _active(s, flow, n, test, Path(tmp))
            t_active = time.time() - t
        randoms = tf.labelled(tf.random_geometries(s, flow, n, seed=500 + seed), flow)
        direct = _direct_pso(s, flow, n)
        for k in checkpoints:
            row = {"seed": seed, "labels": k}
            for name, labels in (("active", active), ("random", randoms)):
                err = _errors(labels[:k], test, s, flow)
                row[f"{name}_cf_mae"], row[f"{name}_st_mae"] = err["cf"], err["st"]
            for name, labels in (("active", active), ("random", randoms), ("pso_cfd", direct)):
                row[f"{name}_best_st"] = _best_so_far(labels, [k], s.cf_max)[0]
            rows.append(row)
        print(f"seed {seed}: active learning {len(active)} labels in {t_active:.0f} s", flush=True)

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    print(
        table(
            ["seed", "labels", "C_f MAE AL", "C_f MAE random", "St MAE AL", "St MAE random"],
            [
                [
                    r["seed"],
                    r["labels"],
                    fmt(r["active_cf_mae"]),
                    fmt(r["random_cf_mae"]),
                    fmt(r["active_st_mae"]),
                    fmt(r["random_st_mae"]),
                ]
                for r in rows
            ],
        )
    )
    print()
    print(f"best St with C_f <= {args.cf_max} among the first n CFD calls")
    print(
        table(
            ["seed", "CFD calls", "active learning", "random", "PSO on CFD"],
            [
                [
                    r["seed"],
                    r["labels"],
                    fmt(r["active_best_st"]),
                    fmt(r["random_best_st"]),
                    fmt(r["pso_cfd_best_st"]),
                ]
                for r in rows
            ],
        )
    )
    empty = tf.labelled([{"promoters": np.zeros((0, 2))}], flow)
    payload = {
        "settings": {"seeds": seeds, "labels": n, "test": len(test), **tf.as_json(base, flow)},
        "empty_channel": {k: float(v) for k, v in empty[0].items() if k != "promoters"}
        if empty
        else None,
        "rows": rows,
        "wall_time_s": time.time() - t0,
    }
    path = write_json("thermofluid_quick" if args.quick else "thermofluid", payload)
    print(f"wrote {path} ({payload['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
