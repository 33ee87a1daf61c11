"""Oracle utilisation under MPI: are the oracles busy whenever there is work queued?

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/oracle_utilisation.py [--quick]``. Prints
a table and writes ``bench/results/oracle_utilisation[_quick].json``.

Each case is a real MPI active-learning run (``mpiexec``; controller, 1 prediction rank,
N oracle ranks, 2 generator ranks, no training) on the zero-cost stand-ins of
``bench/_standins.py`` (committee, trivial generators) with an oracle of fixed cost:

* ``sleep``: a stand-in for a remote DFT job -- the library's ``label()`` on the
  ``sleep_oracle`` stand-in, padded to the nominal cost by a sleep (no local CPU), so N can
  exceed the 2 cores;
* ``pyscf``: a real PySCF label, PBE/def2-SVP on methanol (grid level 1, ~1 s on one
  core); N <= 2 fits the cores, more oversubscribes them (slower labels, same question).

The generators aim to supply about twice what the oracles can take (the stand-in
committee sleeps ``250 ms * t_oracle / N`` per batch, at most 20 ms; half the predictions
are uncertain); ``queue>0`` says how often they managed to keep work queued.

Timing hooks (``bench/_util_timing.py``: a ``label_fn`` that stamps start/end on the
oracle rank, the controller's queue and ``record_label`` instrumented by subclassing) give,
per label, when it was queued, popped (sent to an oracle), computed and stored. From
these:

* ``util``: oracle-seconds spent inside ``label_fn`` while the controller's queue was
  non-empty, over ``N *`` (time the queue was non-empty), from the start of the run to the
  label that reached the budget. Target >= 95 %.
* ``util_ctrl``: the same with "busy" from pop to receipt (the controller's view; the
  difference is message delivery and polling).
* ``gap``: per oracle, the idle time between finishing one label and starting the next
  when the next was already queued (median), split into ``ret`` (oracle -> controller:
  message and the controller's poll), ``ctrl`` (controller: receipt -> next structure
  popped for this oracle) and ``deliv``
  (controller -> oracle: message and the oracle's poll).
* ``latency``: selection (queued) -> label stored, median and p95, and the service part
  popped -> stored. With the queue kept full the queued part is waiting for a free oracle.

``--variant per-label-store`` monkeypatches, in the job only, the controller as it was
before labels were stored in batches (see :func:`patch_controller`); ``--variant both``
runs each case both ways back to back (A/B) and writes ``..._ab.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_json
from _util_timing import (
    busy_while_queued,
    loadavg,
    nonempty_intervals,
    percentiles,
    wait_for_quiet,
)

# (oracle kind, nominal cost in s, oracle ranks)
QUICK_CASES = [
    ("sleep", 0.5, 1),
    ("sleep", 0.5, 4),
    ("sleep", 0.5, 16),
    ("sleep", 0.01, 1),
    ("sleep", 0.01, 4),
    ("pyscf", 1.0, 1),
    ("pyscf", 1.0, 2),
]
FULL_CASES = [
    *QUICK_CASES,
    ("sleep", 0.05, 1),
    ("sleep", 0.05, 16),
    ("sleep", 0.01, 16),
    ("pyscf", 1.0, 4),
]


#: Generator ranks (2 trivial generators each): two prediction round trips in flight.
GENERATOR_RANKS = 2


# -- the MPI job (every rank) -----------------------------------------------------------------
def patch_controller(*, per_label_store: bool) -> None:
    """Stamp each label's receipt on the controller, monkeypatched in this job only.

    With ``per_label_store`` the controller also writes each label to the HDF5 store (one
    flushed append, ~3 ms) as soon as it arrives, as it did before labels were stored in
    batches (one write per pass of its loop).
    """
    from _util_timing import now

    from pal_atoms.workflow.mpi import controller

    class Stamped(controller.MPIController):
        def _on_label(self, src: int, control: dict[str, Any], store: Any) -> None:
            t_received = now()
            super()._on_label(src, control, store)
            self.unstored[-1][0].atoms.info["t_received"] = t_received
            if per_label_store:
                self._store_labels(store)

    controller.MPIController = Stamped  # type: ignore[misc]  # run_mpi imports it late


def job(cfg: dict[str, Any], out: Path) -> None:
    """One run; rank 0 writes the stamps to ``out``."""
    import _standins as s
    from _util_timing import TimedAL, TimedLabel, now, soft_barrier
    from ase.build import molecule
    from mpi4py import MPI

    from pal_atoms.workflow.mpi.layout import Layout
    from pal_atoms.workflow.settings import WorkflowSettings

    patch_controller(per_label_store=cfg["variant"] == "per-label-store")
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    run_dir = Path(cfg["run_dir"])
    if cfg["oracle"] == "pyscf":
        from pal_atoms.oracles import PySCF

        oracle = PySCF(functional="PBE", basis="def2-SVP", grid_level=1, use_gpu=False)
        atoms = molecule("CH3OH")
        atoms.info["charge"] = 0
        label_fn = TimedLabel()
    else:
        oracle = s.sleep_oracle(0.0)
        atoms = s.ethanol()
        label_fn = TimedLabel(pad_to_s=cfg["cost_s"])
    al = TimedAL(
        committee=s.ZeroCommittee(sleep_ms=cfg["committee_sleep_ms"], seed=rank),
        oracle=oracle,
        generators=s.trivial_generators(2 * GENERATOR_RANKS, atoms),
        store=run_dir / "labels.h5",
        trainer=None,
        selection=s.selection_for_fraction(0.5),
        settings=WorkflowSettings(
            max_labels=cfg["labels"],
            time_limit_s=cfg["time_limit_s"],
            metrics_interval_s=1.0,
            checkpoint_interval_s=1e6,
            diversity_A=0.0,
            convergence_fraction=0.0,
            stop_file=None,
        ),
        run_dir=run_dir,
        label_fn=label_fn,
        comm=comm,
        layout=Layout(prediction=1, oracle=cfg["n_oracle"], training=0),
    )
    if cfg["oracle"] == "pyscf" and al.layout.role(comm.Get_size(), rank).value == "oracle":
        label_fn(atoms, oracle)  # warm-up outside the timed run: imports, basis parsing
    soft_barrier(comm)
    t_run = now()
    summary = al.run()
    if rank == 0:
        out.write_text(
            json.dumps(
                {
                    "t_run": t_run,
                    "t_budget": al.t_budget,
                    "queue_events": al.queue.events,
                    "label_log": al.label_log,
                    "summary": summary.as_dict(),
                },
                default=float,
            )
        )


# -- the driver -------------------------------------------------------------------------------
def mpiexec() -> str:
    exe = Path(sys.executable).parent / "mpiexec"
    return str(exe) if exe.exists() else (shutil.which("mpiexec") or "mpiexec")


def run_case(
    kind: str, cost_s: float, n_oracle: int, *, duration_s: float, max_labels: int, variant: str
) -> dict[str, Any]:
    labels = max(8, min(max_labels, math.ceil(n_oracle * duration_s / cost_s)))
    size = 1 + 1 + n_oracle + GENERATOR_RANKS  # controller, prediction, oracles, generators
    tmp = Path(tempfile.mkdtemp(prefix="pal-util-"))
    cfg = {
        "oracle": kind,
        "cost_s": cost_s,
        "n_oracle": n_oracle,
        "labels": labels,
        "committee_sleep_ms": min(20.0, 250.0 * cost_s / n_oracle),
        "time_limit_s": 20 * duration_s + 60,
        "variant": variant,
        "run_dir": str(tmp / "run"),
    }
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    out = tmp / "out.json"
    cmd = [mpiexec(), "-n", str(size), sys.executable, "-m", "mpi4py", __file__, "--job"]
    cmd += [str(tmp / "cfg.json"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    quiet = wait_for_quiet()
    load0 = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=cfg["time_limit_s"] + 300,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"case {kind} {cost_s} x{n_oracle} failed:\n{proc.stderr[-3000:]}")
    raw = json.loads(out.read_text())
    metrics = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(tmp, ignore_errors=True)
    res = analyse(raw, n_oracle)
    res.update(
        oracle=kind,
        cost_s=cost_s,
        n_oracle=n_oracle,
        ranks=size,
        labels_budget=labels,
        committee_sleep_ms=cfg["committee_sleep_ms"],
        job_wall_s=wall,
        library_oracle_busy_fraction=metrics[-1].get("oracle_busy_fraction"),
        loadavg_before=load0,
        quiet_wait=quiet,
        loadavg_after=loadavg(),
        stop_reason=raw["summary"]["stop_reason"],
        variant=variant,
    )
    return res


def analyse(raw: dict[str, Any], n_oracle: int) -> dict[str, Any]:
    """Utilisation, idle gaps and latencies from the stamps of one run."""
    # From the first selection (start-up, e.g. the prediction rank importing torch, is not
    # the oracles' business) to the label that reached the budget.
    t0 = next((t for t, n in raw["queue_events"] if n > 0), raw["t_run"])
    t1 = raw["t_budget"] or max(e["t_stored"] for e in raw["label_log"])
    log = [e for e in raw["label_log"] if "t_label_start" in e]
    in_window = [e for e in log if e["t_stored"] <= t1 + 1e-9]
    queue_on = nonempty_intervals([tuple(e) for e in raw["queue_events"]], t0, t1)
    on_s = sum(b - a for a, b in queue_on)
    _, util = busy_while_queued(in_window, queue_on, n_oracle)
    _, util_ctrl = busy_while_queued(
        in_window, queue_on, n_oracle, start_key="t_popped", end_key="t_record"
    )
    # Idle gaps between consecutive labels of one oracle when the next was already queued.
    parts: dict[str, list[float]] = {k: [] for k in ("return", "to_dispatch", "delivery")}
    gaps: list[float] = []
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for e in in_window:
        by_pid.setdefault(e["pid"], []).append(e)
    for labels in by_pid.values():
        labels.sort(key=lambda e: e["t_label_start"])
        for prev, nxt in itertools.pairwise(labels):
            if nxt["t_queued"] >= prev["t_label_end"]:
                continue  # the oracle waited for work: starvation, not overhead
            gaps.append(nxt["t_label_start"] - prev["t_label_end"])
            parts["return"].append(prev["t_record"] - prev["t_label_end"])
            parts["to_dispatch"].append(nxt["t_popped"] - prev["t_record"])
            parts["delivery"].append(nxt["t_label_start"] - nxt["t_popped"])
    label_s = [e["t_label_end"] - e["t_label_start"] for e in log]
    return {
        "window_s": t1 - t0,
        "queue_nonempty_s": on_s,
        "queue_nonempty_fraction": on_s / max(t1 - t0, 1e-9),
        "labels_in_window": len(in_window),
        "labels_total": len(log),
        "label_s": percentiles(label_s),
        "util": util,
        "util_ctrl": util_ctrl,
        "gap_ms": {k: 1e3 * v for k, v in percentiles(gaps).items() if k != "n"} | {"n": len(gaps)},
        "gap_parts_median_ms": {
            k: 1e3 * float(np.median(v)) if v else None for k, v in parts.items()
        },
        "store_append_ms": {
            k: 1e3 * v
            for k, v in percentiles([e["t_stored"] - e["t_stored_start"] for e in log]).items()
        },
        "labels_per_store_write": len(log) / max(1, len({e["t_stored_start"] for e in log})),
        "queue_wait_s": percentiles([e["t_popped"] - e["t_queued"] for e in log]),
        "latency_s": percentiles([e["t_stored"] - e["t_queued"] for e in log]),
        "service_latency_s": percentiles([e["t_stored"] - e["t_popped"] for e in log]),
    }


def summary_table(results: list[dict[str, Any]]) -> str:
    """The printed table: one row per case (and variant)."""
    rows = [
        [
            r["oracle"] + ("" if r["variant"] == "library" else " (old)"),
            f"{r['cost_s']:g}",
            r["n_oracle"],
            f"{1e3 * r['label_s']['p50']:.1f}",
            r["labels_in_window"],
            f"{100 * r['queue_nonempty_fraction']:.0f}",
            f"{100 * r['util']:.1f}",
            f"{100 * r['util_ctrl']:.1f}",
            f"{100 * (r['library_oracle_busy_fraction'] or float('nan')):.1f}",
            f"{r['gap_ms']['p50']:.2f}",
            " / ".join("-" if v is None else f"{v:.1f}" for v in r["gap_parts_median_ms"].values()),
            f"{r['store_append_ms']['p50']:.1f}",
            f"{r['latency_s']['p50']:.2f} / {r['latency_s']['p95']:.2f}",
            f"{r['service_latency_s']['p50']:.3f} / {r['service_latency_s']['p95']:.3f}",
            " ".join(f"{x:.1f}" for x in r["loadavg_before"]),
        ]
        for r in results
    ]
    headers = [
        "oracle",
        "cost s",
        "N",
        "label ms",
        "labels",
        "queue>0 %",
        "util %",
        "util_ctrl %",
        "lib busy %",
        "gap ms",
        "ret/ctrl/deliv ms",
        "store ms",
        "latency p50/p95 s",
        "service p50/p95 s",
        "load",
    ]
    return table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~10 s per case, 7 cases (~5 min)")
    parser.add_argument(
        "--variant",
        choices=("library", "per-label-store", "both"),
        default="library",
        help="per-label-store: the controller storing each label on arrival (before batched "
        "stores), monkeypatched in the job; both: each case both ways, back to back (A/B)",
    )
    parser.add_argument(
        "--cases", nargs="+", metavar="KIND:COST:N", help="only these cases, e.g. sleep:0.5:4"
    )
    parser.add_argument("--job", nargs=2, type=Path, metavar=("CFG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job(json.loads(args.job[0].read_text()), args.job[1])
        return
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.cases:
        cases = [(k, float(c), int(n)) for k, c, n in (x.split(":") for x in args.cases)]
    variants = ["library", "per-label-store"] if args.variant == "both" else [args.variant]
    duration, max_labels = (10.0, 300) if args.quick else (30.0, 1000)
    results = []
    for kind, cost, n in cases:
        for variant in variants:
            print(f"... {kind} {cost:g} s x {n} oracle ranks ({variant})", flush=True)
            results.append(
                run_case(kind, cost, n, duration_s=duration, max_labels=max_labels, variant=variant)
            )
    print(summary_table(results))
    bad = [
        f"{r['oracle']} {r['cost_s']:g} s x{r['n_oracle']}"
        + ("" if r["variant"] == "library" else " (old)")
        for r in results
        if not r["util"] >= 0.95
    ]
    print(f"target util >= 95 %: {len(results) - len(bad)} of {len(results)} cases meet it")
    if bad:
        print("misses: " + ", ".join(bad))
    name = "oracle_utilisation" + ("_quick" if args.quick else "")
    if args.variant != "library":
        name += "_ab" if args.variant == "both" else "_" + args.variant.replace("-", "_")
    path = write_json(
        name,
        {
            "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/oracle_utilisation.py"
            + "".join(f" {a}" for a in sys.argv[1:]),
            "variant": args.variant,
            "target_util": 0.95,
            "cases": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
