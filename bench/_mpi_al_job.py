"""One MPI active-learning job on zero-cost stand-ins (started by ``bench/messaging.py``).

Run as ``mpiexec -n SIZE python -m mpi4py bench/_mpi_al_job.py OUT.json [options]``: every
rank builds the same :class:`~pal_atoms.workflow.ActiveLearning` (zero-cost committee,
sleep oracle, trivial or MD generators, no training) and calls ``run()``. Rank 0 (the
controller) writes ``OUT.json``: the summary, the metrics lines, the controller's memory
and the generators' round-trip latency histograms (sent back in their states).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import _standins as s  # bench/ is sys.path[0] (mpi4py's runner sets it like python does)
import numpy as np
from mpi4py import MPI

from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.metrics import read_metrics
from pal_atoms.workflow.mpi.layout import Layout
from pal_atoms.workflow.settings import WorkflowSettings


def quiet_barrier(comm: MPI.Comm) -> None:
    """Barrier without spinning (also for older pal-atoms without ``comm.quiet_barrier``)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(1e-3)


def rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process (MiB)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure_window(al: ActiveLearning, warmup_s: float, measure_s: float) -> dict[str, float]:
    """Stop the run ``warmup_s + measure_s`` after its first prediction (controller only).

    Start-up (imports on 70 oversubscribed ranks take tens of seconds) is left out: the
    returned dict is filled with time, predictions and labels at both ends of the window.
    """
    window: dict[str, float] = {}
    check_stop = al.check_stop

    def check(t_start: float) -> None:
        now = time.monotonic()
        n = al.summary.predictions
        if n and "t_first" not in window:
            window["t_first"] = now - t_start
        if (
            "t_first" in window
            and "t0" not in window
            and now - t_start >= window["t_first"] + warmup_s
        ):
            window.update(t0=now - t_start, steps0=n, labels0=al.summary.labels_ok)
        if "t0" in window and now - t_start >= window["t0"] + measure_s:
            window.update(t1=now - t_start, steps1=n, labels1=al.summary.labels_ok)
            al.stop("measured")
        check_stop(t_start)

    al.check_stop = check  # type: ignore[method-assign]
    return window


def committee_and_selection(args: argparse.Namespace, rank: int) -> tuple[Any, Any]:
    """The zero-cost stand-in and its selection, or a real untrained MACE committee."""
    if args.committee == "zero":
        return s.ZeroCommittee(seed=rank), s.selection_for_fraction(args.uncertain_fraction)
    from pal_atoms.calculators import CommitteeCalculator

    from pal_atoms.workflow.selection import TrustWindow

    committee = CommitteeCalculator.create(
        "mace", elements=["H", "C", "O"], n_members=4, mode=args.committee_mode, device="cpu"
    )
    # An untrained committee's uncertainty is arbitrary: label nothing, trust everything.
    return committee, TrustWindow(key="max_force_std", lower=1e6, upper=1e7)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--generators", type=int, default=89)
    p.add_argument("--kind", choices=("trivial", "md"), default="trivial")
    p.add_argument("--prediction-ranks", type=int, default=1)
    p.add_argument("--oracle-ranks", type=int, default=1)
    p.add_argument("--oracle-sleep-ms", type=float, default=10.0)
    p.add_argument("--uncertain-fraction", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=1.0, help="s after the first step")
    p.add_argument("--measure", type=float, default=5.0, help="s measured after the warm-up")
    p.add_argument("--time-limit", type=float, default=600.0, help="safety limit, s")
    p.add_argument("--queue-cap", type=int, default=64)
    p.add_argument(
        "--committee",
        choices=("zero", "mace"),
        default="zero",
        help="zero-cost stand-in, or a real untrained 4-member MACE committee (H, C, O)",
    )
    p.add_argument("--committee-mode", choices=("full", "shared"), default="full")
    p.add_argument("--profile", type=Path, default=None, help="cProfile every rank to DIR")
    args = p.parse_args()

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    rss_start = rss_mb()
    quiet_barrier(comm)  # a blocking bcast would spin while slow ranks still import
    run_dir = Path(tempfile.mkdtemp(prefix="pal-bench-")) if rank == 0 else None
    run_dir = Path(comm.bcast(str(run_dir) if run_dir else None, root=0))
    factory = s.trivial_generators if args.kind == "trivial" else s.md_generators
    committee, selection = committee_and_selection(args, rank)
    al = ActiveLearning(
        committee=committee,
        oracle=s.sleep_oracle(args.oracle_sleep_ms),
        generators=factory(args.generators),
        store=run_dir / "labels.h5",
        trainer=None,
        selection=selection,
        settings=WorkflowSettings(
            max_labels=10**9,
            time_limit_s=args.time_limit,
            metrics_interval_s=0.5,
            checkpoint_interval_s=10**6,
            diversity_A=0.0,
            convergence_fraction=0.0,
            queue_cap=args.queue_cap,
            stop_file=None,
        ),
        run_dir=run_dir,
        comm=comm,
        layout=Layout(prediction=args.prediction_ranks, oracle=args.oracle_ranks, training=0),
    )
    window: dict[str, float] = {}
    if rank == 0:
        window = measure_window(al, args.warmup, args.measure)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if args.profile is not None:
        import cProfile

        prof = cProfile.Profile()
        summary = prof.runcall(al.run)
        args.profile.mkdir(parents=True, exist_ok=True)
        prof.dump_stats(args.profile / f"rank{rank}.prof")
    else:
        summary = al.run()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    layout = al.layout
    role = str(layout.role(comm.Get_size(), rank))
    # CPU seconds per rank, taken before the gather (MPICH's blocking collectives spin).
    cpu = comm.gather((role, ru.ru_utime - ru0.ru_utime, ru.ru_stime - ru0.ru_stime, wall), root=0)
    if rank != 0:
        return
    result = {
        "args": vars(args) | {"out": str(args.out)},
        "size": comm.Get_size(),
        "summary": summary.as_dict(),
        "run_wall_s": wall,
        # Controller time spent appending labels to the HDF5 store (workflow timing).
        "store_s": al._timings.get("store", 0.0),
        "window": window,
        "metrics": read_metrics(run_dir / "metrics.jsonl"),
        "rss_start_MB": rss_start,
        "rss_end_MB": rss_mb(),
        "latency": latencies(run_dir / "generators.json"),
        "cpu_by_role": by_role(cpu),
        "loadavg": os.getloadavg(),
    }
    args.out.write_text(json.dumps(result, default=str))
    # The run folder (labels, metrics) is scratch: keep nothing behind.
    for f in sorted(run_dir.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    run_dir.rmdir()


def by_role(cpu: list[tuple[str, float, float, float]]) -> dict[str, dict[str, float]]:
    """Sum the ranks' CPU seconds per role."""
    out: dict[str, dict[str, float]] = {}
    for r, user, system, w in cpu:
        d = out.setdefault(r, {"ranks": 0, "user_s": 0.0, "sys_s": 0.0, "wall_s": 0.0})
        d["ranks"] += 1
        d["user_s"] += user
        d["sys_s"] += system
        d["wall_s"] = max(d["wall_s"], w)
    return out


def latencies(states_file: Path) -> dict[str, float]:
    """Merge the trivial generators' latency histograms (MD generators have none)."""
    states = json.loads(states_file.read_text())
    counts = np.zeros(len(s.LATENCY_BINS_S) + 1)
    total = 0.0
    for st in states.values():
        if "latency_counts" in st:
            counts += np.asarray(st["latency_counts"])
            total += st["latency_sum_s"]
    n = counts.sum()
    return {
        "n": int(n),
        "mean_s": total / n if n else float("nan"),
        **latency_or_nan(counts),
    }


def latency_or_nan(counts: np.ndarray) -> dict[str, float]:
    return {k + "_s": v for k, v in s.latency_percentiles(counts).items()}


if __name__ == "__main__":
    main()
