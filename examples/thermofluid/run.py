"""Active learning of a CFD surrogate: CNN committee, particle swarms, OpenFOAM oracle.

PAL's thermo-fluid application (paper, section 3.4), end to end on 2 cores: maximise the
Stanton number St of a laminar channel with eddy promoters at a drag coefficient C_f of
at most ``--cf-max``. Swarms move on the committee's prediction (upper confidence bound
of St, C_f penalised above the limit); what the committee is unsure of goes to
OpenFOAM (``simpleFoam``, 1-2 s per case); the committee retrains every ``--retrain``
labels. Writes the store (``labels.h5``), the committee, ``summary.json`` and
``thermofluid.png`` (best geometry, surrogate error vs labels).

    python examples/thermofluid/run.py --out runs/thermofluid
    mpiexec -n 5 python -m mpi4py examples/thermofluid/run.py --out runs/tf-mpi --mpi

Needs OpenFOAM (``bash scripts/openfoam.sh``) and foamlib (the ``cfd`` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import thermofluid as tf


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/thermofluid"))
    p.add_argument("--max-labels", type=int, default=80)
    p.add_argument("--time-limit", type=float, default=1200.0, help="seconds")
    p.add_argument("--promoters", type=int, default=2)
    p.add_argument("--cf-max", type=float, default=0.3)
    p.add_argument("--retrain", type=int, default=8, help="labels per training round")
    p.add_argument("--test-size", type=int, default=24, help="held-out CFD labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpi", action="store_true", help="run the kernels on MPI ranks")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pal_atoms.generic.channel import openfoam_available
    from pal_atoms.workflow import ActiveLearning
    from pal_atoms.workflow.settings import WorkflowSettings

    reason = openfoam_available()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    comm = None
    if args.mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    root = comm is None or comm.Get_rank() == 0
    s = tf.ThermofluidSettings(promoters=args.promoters, cf_max=args.cf_max, seed=args.seed)
    flow = tf.channel()
    # Held-out CFD labels of random geometries: computed once, on the first rank (under
    # MPI the prediction rank measures the committee on them after each round).
    test = (
        tf.labelled(tf.random_geometries(s, flow, args.test_size, seed=10_000), flow)
        if root
        else []
    )
    if comm is not None:
        test = comm.bcast(test, root=0)
    al = ActiveLearning(
        committee=tf.committee(s, flow),
        oracle=tf.oracle(flow),
        generators=tf.swarms(s, flow),
        store=args.out / "labels.h5",
        run_dir=args.out,
        test_set=test,
        settings=WorkflowSettings(
            max_labels=args.max_labels,
            time_limit_s=args.time_limit,
            retrain_size=args.retrain,
            oracle_timeout_s=120.0,
            diversity_A=0.02,
        ),
        comm=comm,
    )
    al.restore_generators()
    summary = al.run()
    if not root:
        return 0
    with al.open_store() as store:
        labels = store.read("ok")
    best = tf.best_feasible(labels, s.cf_max)
    out = {
        **tf.as_json(s, flow),
        "labels_ok": summary.labels_ok,
        "labels_failed": summary.labels_failed,
        "stop_reason": summary.stop_reason,
        "test_mae": summary.test_force_mae,
        "best": None
        if best is None
        else {
            "promoters": best["promoters"].tolist(),
            "cf": float(best["cf"]),
            "st": float(best["st"]),
        },
        "empty_channel": {"cf": 12 / flow.reynolds},
    }
    (args.out / "summary.json").write_text(json.dumps(out, indent=2, default=str))
    tf.draw(args.out / "thermofluid.png", flow, best, summary.test_force_mae, s.cf_max)
    if best is not None:
        print(
            f"best: St {float(best['st']):.4f} at C_f {float(best['cf']):.3f} "
            f"from {summary.labels_ok} CFD labels; figure {args.out / 'thermofluid.png'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
