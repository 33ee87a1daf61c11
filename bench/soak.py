"""Memory soak: 10^5 committee-driven MD steps under MPI, resident memory of every rank.

One real MPI active-learning run (``mpiexec``; controller, 1 prediction rank, 1 oracle
rank, generator ranks, no training) of the production stack: a real, untrained 4-member
MACE committee (default hyperparameters, Bi at charges -2/0/+1, float32, CPU) serves
Langevin MD generators (:class:`~pal_atoms.dynamics.MDGenerator`) on the Bi clusters of
``examples/bi_cluster.xyz`` (Bi4, Bi4^2-, Bi6, Bi8, Bi8^+), several generators per rank
(:class:`~pal_atoms.workflow.mpi.generators.BatchingClient`). As in production every rank
builds the same ``ActiveLearning`` (committee included). The trust window trusts
every prediction (lower bound 10^6 eV/Å), so nothing is ever labelled (the oracle rank,
a wrapped Lennard-Jones calculator, stays idle) and the soak measures MD + prediction +
messaging alone. The untrained committee's forces are near zero, so clusters may slowly
evaporate; the fragment check then restarts them from the initial structure with fresh
velocities (``restart="initial"``: from the last trusted frame, the frame just before the
split, the same momenta would split it again at once).
Each generator finishes after its share of the steps; the run ends when all have (steps
as the workflow counts them, ``summary.generator_steps``).

Every rank writes its pid at start-up; this launcher samples ``VmRSS`` of every rank from
``/proc/PID/status`` every ``--interval`` s, with the step count of the controller's
metrics (``metrics.jsonl``) at that time. Per rank:

- **warm**: RSS at the first sample after ``--warmup-fraction`` (10 %) of the steps
  (imports, model compilation and allocator warm-up are done by then);
- **end**: RSS at the last sample before any rank returned from ``run()`` (shutdown and
  interpreter exit, which free memory, left out); **run end**: RSS each rank read itself
  as ``run()`` returned;
- **growth** = end / warm - 1 (target: under 10 %), **max** over the whole run, and the
  least-squares **slope** of RSS over steps after the warm-up (MiB per 10^5 steps);
- steps/s: whole run (summary) and steady state (warm-up sample to end sample).

Usage: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/soak.py [--quick]`` (10^5
steps, 8 generators on 2 generator ranks, 5 ranks; ``--quick``: 10^4 steps). Writes
``bench/results/soak.json`` (or ``--out``; ``"quick"`` in it says which mode); the run
folder (job log, metrics, pids) goes under ``/tmp/soak/``. The job is this same file:
``mpiexec -n N python -m mpi4py bench/soak.py --job RUN_DIR ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, table  # bench/ is sys.path[0]

HERE = Path(__file__).resolve().parent
FRAMES = HERE.parent / "examples" / "bi_cluster.xyz"
TARGET_GROWTH_PERCENT = 10.0

logger = logging.getLogger("soak")


# -------------------------------------------------------------------------------- memory
def proc_status(pid: int | str = "self") -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of a process in MiB (empty once it has exited)."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


# -------------------------------------------------------------------------------- the job
def job(argv: list[str]) -> None:
    """One MPI rank of the soak run (every rank builds the same ``ActiveLearning``)."""
    p = argparse.ArgumentParser(prog="soak.py --job")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--generators", type=int, required=True)
    p.add_argument("--steps", type=int, required=True, help="generator steps in all")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--time-limit", type=float, required=True)
    p.add_argument("--metrics-interval", type=float, default=2.0)
    args = p.parse_args(argv)

    from mpi4py import MPI

    from pal_atoms.workflow.mpi.layout import Layout, make_ase_rank_local

    make_ase_rank_local()  # before any ASE call: every rank reads and draws on its own
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    layout = Layout(prediction=1, oracle=1, training=0)
    role = str(layout.role(size, rank))
    pids = args.run_dir / "pids"
    (pids / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "pid": os.getpid(), "role": role})
    )
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s",
    )

    import ase.io
    from ase.calculators.lj import LennardJones
    from pal_atoms.calculators import CommitteeCalculator
    from pal_atoms.dynamics import MDGenerator, MDSettings
    from pal_atoms.oracles import Wrapped

    from pal_atoms.workflow import ActiveLearning
    from pal_atoms.workflow.selection import TrustWindow
    from pal_atoms.workflow.settings import WorkflowSettings

    frames = ase.io.read(FRAMES, ":")
    charges = sorted({int(a.info.get("charge", 0)) for a in frames})
    committee = CommitteeCalculator.create(
        "mace", elements=["Bi"], charges=charges, n_members=4, seed=0, device="cpu"
    )
    # The workflow counts every event but a generator's last (``FINISHED``) one as a step:
    # n_steps = share + 1 makes the counted steps add up to ``--steps``.
    share, extra = divmod(args.steps, args.generators)
    generators = [
        MDGenerator(
            frames[i % len(frames)],
            generator_id=i,
            settings=MDSettings(
                temperature_K=args.temperature,
                n_steps=share + 1 + (1 if i < extra else 0),
                restart="initial",
                seed=i,
            ),
        )
        for i in range(args.generators)
    ]
    al = ActiveLearning(
        committee=committee,
        oracle=Wrapped(factory=LennardJones, name="lj", method="Lennard-Jones (never called)"),
        generators=generators,
        store=args.run_dir / "labels.h5",
        trainer=None,
        # Everything trusted: nothing is queued, labelled or restarted for uncertainty.
        selection=TrustWindow(key="max_force_std", lower=1e6, upper=1e7),
        settings=WorkflowSettings(
            max_labels=10**9,
            time_limit_s=args.time_limit,
            metrics_interval_s=args.metrics_interval,
            convergence_fraction=0.0,  # never "converged": run until the generators finish
            stop_file=None,
        ),
        run_dir=args.run_dir,
        comm=comm,
        layout=layout,
    )
    t0 = time.monotonic()
    summary = al.run()
    wall = time.monotonic() - t0
    (pids / f"rank{rank}.end.json").write_text(
        json.dumps({"rank": rank, "role": role, "run_wall_s": wall, **proc_status()})
    )
    if rank == 0:
        states = json.loads((args.run_dir / "generators.json").read_text())
        result = {
            "summary": summary.as_dict(),
            "size": size,
            "generators": {
                gid: {
                    "start": frames[int(gid) % len(frames)].get_chemical_formula(),
                    "charge": int(frames[int(gid) % len(frames)].info.get("charge", 0)),
                    "steps": st["step"],
                    "restarts": st["n_restarts"],
                }
                for gid, st in states.items()
            },
        }
        (args.run_dir / "result.json").write_text(json.dumps(result, default=str))


# -------------------------------------------------------------------------------- launcher
def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("mpiexec not found (pip install mpich)")
    return exe


class Sampler:
    """Reads the ranks' pid files and the controller's metrics; samples every rank's RSS."""

    def __init__(self, run_dir: Path, size: int):
        self.run_dir, self.size = run_dir, size
        self.ranks: dict[int, dict[str, Any]] = {}
        self.samples: list[dict[str, Any]] = []  # t, steps, rss {rank: MiB}
        self.steps = 0
        self._metrics_offset = 0
        self.t0 = time.monotonic()

    def _read_pids(self) -> None:
        if len(self.ranks) == self.size:
            return
        for f in (self.run_dir / "pids").glob("rank*.json"):
            if f.name.endswith(".end.json"):
                continue
            try:
                info = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):  # being written
                continue
            self.ranks.setdefault(int(info["rank"]), info)

    def _read_steps(self) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        with path.open("rb") as f:
            f.seek(self._metrics_offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self._metrics_offset += end
        for line in chunk[:end].splitlines():
            try:
                self.steps = max(self.steps, int(json.loads(line)["generator_steps"]))
            except (json.JSONDecodeError, KeyError, ValueError):
                continue

    def sample(self) -> None:
        self._read_pids()
        self._read_steps()
        rss = {}
        for r, info in self.ranks.items():
            st = proc_status(info["pid"])
            if "VmRSS" in st:
                rss[r] = st["VmRSS"]
        # Still running on every rank: no rank has returned from ``run()`` yet.
        running = not any((self.run_dir / "pids").glob("rank*.end.json"))
        self.samples.append(
            {
                "t": round(time.monotonic() - self.t0, 2),
                "steps": self.steps,
                "running": running,
                "rss": rss,
            }
        )


def launch(args: argparse.Namespace, run_dir: Path) -> tuple[dict[str, Any], Sampler, list[str]]:
    """Run the MPI job, sampling memory meanwhile; return its result, the sampler, the command."""
    size = 3 + args.gen_ranks  # controller, prediction, oracle, generators
    (run_dir / "pids").mkdir(parents=True)
    cmd = [mpiexec(), "-n", str(size), sys.executable, "-m", "mpi4py", str(Path(__file__))]
    cmd += ["--job", str(run_dir), f"--generators={args.generators}", f"--steps={args.steps}"]
    cmd += [f"--temperature={args.temperature}", f"--time-limit={args.time_limit}"]
    cmd += [f"--metrics-interval={min(2.0, args.interval)}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    sampler = Sampler(run_dir, size)
    logger.info("%s", " ".join(cmd))
    with (run_dir / "job.log").open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + args.time_limit + 600
        last_report = time.monotonic()
        try:
            while proc.poll() is None:
                sampler.sample()
                if time.monotonic() - last_report > 60:
                    last_report = time.monotonic()
                    s = sampler.samples[-1]
                    logger.info(
                        "%.0f s: %d / %d steps, RSS MiB %s",
                        s["t"],
                        s["steps"],
                        args.steps,
                        {r: round(v) for r, v in sorted(s["rss"].items())},
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job still running after {args.time_limit + 600:.0f} s")
                time.sleep(args.interval)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)  # the job's own process group
            proc.wait(timeout=60)
            raise
    if proc.returncode != 0 or not (run_dir / "result.json").exists():
        tail = (run_dir / "job.log").read_text()[-4000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return json.loads((run_dir / "result.json").read_text()), sampler, cmd


def analyse(
    sampler: Sampler, total_steps: int, warmup_fraction: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-rank warm / end / growth / max / slope, and the steady-state window."""
    samples = sampler.samples
    ranks = sorted(sampler.ranks)
    alive = [i for i, s in enumerate(samples) if s["running"] and set(ranks) <= set(s["rss"])]
    if not alive:
        raise RuntimeError("no sample saw every rank running")
    i_end = alive[-1]
    warm_steps = warmup_fraction * total_steps
    i_warm = next((i for i in alive if samples[i]["steps"] >= warm_steps), alive[0])
    window = {
        "warm_sample": samples[i_warm] | {"index": i_warm},
        "end_sample": samples[i_end] | {"index": i_end},
        "warmup_steps": warm_steps,
        "samples": len(samples),
    }
    dt = samples[i_end]["t"] - samples[i_warm]["t"]
    ds = samples[i_end]["steps"] - samples[i_warm]["steps"]
    window["steady_steps_per_s"] = ds / dt if dt > 0 else None
    rows = []
    for r in ranks:
        series = [s["rss"][r] for s in samples if r in s["rss"]]
        after = [(s["steps"], s["rss"][r]) for s in samples[i_warm : i_end + 1] if r in s["rss"]]
        warm, end = samples[i_warm]["rss"][r], samples[i_end]["rss"][r]
        rows.append(
            {
                "rank": r,
                "role": sampler.ranks[r]["role"],
                "pid": sampler.ranks[r]["pid"],
                "rss_first_MiB": series[0],
                "rss_warm_MiB": warm,
                "rss_end_MiB": end,
                "growth_percent": 100.0 * (end / warm - 1.0),
                "rss_max_MiB": max(series),
                "rss_max_after_warmup_MiB": max(v for _, v in after),
                "slope_MiB_per_1e5_steps": slope(after) * 1e5,
            }
        )
    return rows, window


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return 0.0
    n = len(points)
    mx, my = sum(xs) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--job":
        job(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10^4 steps instead of 10^5")
    p.add_argument("--steps", type=int, default=None, help="generator steps in all")
    p.add_argument("--generators", type=int, default=8, help="MD generators")
    p.add_argument("--gen-ranks", type=int, default=2, help="generator ranks")
    p.add_argument("--temperature", type=float, default=300.0, help="MD temperature, K")
    p.add_argument("--interval", type=float, default=None, help="RSS sampling period, s")
    p.add_argument("--warmup-fraction", type=float, default=0.1, help="of the steps")
    p.add_argument("--time-limit", type=float, default=3 * 3600.0, help="job limit, s")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/soak"), help="run folders")
    p.add_argument("--out", type=Path, default=RESULTS / "soak.json", help="results file (JSON)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    args.steps = args.steps or (10**4 if args.quick else 10**5)
    args.interval = args.interval or (1.0 if args.quick else 2.0)
    run_dir = args.scratch / f"{'quick' if args.quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}"

    t_start = time.monotonic()
    load_before = os.getloadavg()
    result, sampler, cmd = launch(args, run_dir)
    total_s = time.monotonic() - t_start
    summary = result["summary"]
    steps = int(summary["generator_steps"])
    rows, window = analyse(sampler, steps, args.warmup_fraction)
    worst = max(r["growth_percent"] for r in rows)
    ok = worst < TARGET_GROWTH_PERCENT
    ends = {}
    for f in (run_dir / "pids").glob("rank*.end.json"):
        e = json.loads(f.read_text())
        ends[e["rank"]] = e
    for r in rows:
        r["rss_run_end_MiB"] = ends.get(r["rank"], {}).get("VmRSS")
        r["VmHWM_run_end_MiB"] = ends.get(r["rank"], {}).get("VmHWM")

    restarts = sum(g["restarts"] for g in result["generators"].values())
    print(
        f"\n{steps} generator steps ({args.generators} MD generators on {args.gen_ranks} "
        f"ranks, {result['size']} ranks) in {summary['wall_time_s']:.0f} s: "
        f"{steps / summary['wall_time_s']:.1f} steps/s overall, "
        f"{window['steady_steps_per_s'] or float('nan'):.1f} steps/s after the warm-up; "
        f"{restarts} restarts, {summary['labels_ok']} labels"
    )
    print(
        f"warm = RSS at {window['warm_sample']['steps']} steps "
        f"(t = {window['warm_sample']['t']:.0f} s), end = RSS at "
        f"{window['end_sample']['steps']} steps (t = {window['end_sample']['t']:.0f} s), "
        f"{window['samples']} samples every {args.interval:g} s\n"
    )
    print(
        table(
            [
                *("rank", "role", "first MiB", "warm MiB", "end MiB", "growth %"),
                *("max MiB", "slope MiB/1e5 steps", "run end MiB"),
            ],
            [
                [
                    r["rank"],
                    r["role"],
                    round(r["rss_first_MiB"], 1),
                    round(r["rss_warm_MiB"], 1),
                    round(r["rss_end_MiB"], 1),
                    round(r["growth_percent"], 2),
                    round(r["rss_max_MiB"], 1),
                    round(r["slope_MiB_per_1e5_steps"], 2),
                    round(r["rss_run_end_MiB"] or float("nan"), 1),
                ]
                for r in rows
            ],
        )
    )
    verdict = "met" if ok else "MISSED"
    print(
        f"\nlargest growth after warm-up {worst:.2f} % "
        f"(target < {TARGET_GROWTH_PERCENT:g} %): {verdict}"
    )
    out = {
        "quick": args.quick,
        "command": " ".join(
            ["OMP_NUM_THREADS=1", "nice -n 10", "python", "bench/soak.py", *sys.argv[1:]]
        ),
        "job_command": " ".join(["mpiexec", *cmd[1:3], "python", "-m", "mpi4py", *cmd[6:]]),
        "steps": steps,
        "generators": args.generators,
        "generator_ranks": args.gen_ranks,
        "ranks": result["size"],
        "temperature_K": args.temperature,
        "committee": "MACE, 4 members, full, default hyperparameters, untrained, float32, cpu",
        "sampling_interval_s": args.interval,
        "warmup_fraction": args.warmup_fraction,
        "target_growth_percent": TARGET_GROWTH_PERCENT,
        "max_growth_percent": worst,
        "target_met": ok,
        "steps_per_s": steps / summary["wall_time_s"],
        "steady_steps_per_s": window["steady_steps_per_s"],
        "run_wall_s": summary["wall_time_s"],
        "total_s": total_s,
        "restarts": restarts,
        "per_generator": result["generators"],
        "ranks_rss": rows,
        "window": window,
        "summary": summary,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "run_dir": str(run_dir),
        "series": {
            "t_s": [s["t"] for s in sampler.samples],
            "steps": [s["steps"] for s in sampler.samples],
            "running": [s["running"] for s in sampler.samples],
            "rss_MiB": {
                str(r): [round(s["rss"][r], 2) if r in s["rss"] else None for s in sampler.samples]
                for r in sorted(sampler.ranks)
            },
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), **out}, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out} in {total_s:.0f} s")


if __name__ == "__main__":
    main()
