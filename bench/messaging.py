"""Messaging overhead per generator step and controller scale (issue #8, items 1 and 6).

Starts real MPI jobs (``mpiexec``, oversubscribed: MPICH's hydra needs no flag for that)
of ``bench/_mpi_al_job.py``: the full pal-atoms MPI stack (controller, prediction, oracle
and generator ranks, label store) on zero-cost stand-ins from ``bench/_standins.py``: a
committee that returns zero forces at once, a sleeping oracle, and a generator whose step
is one ``client.evaluate`` and nothing else (so the time is messaging, not physics). Also
runs the same with Langevin MD generators (messaging + propagation, what PAL's 4.27 ms
counts), and the raw MPI round-trip floor (``bench/_mpi_pingpong.py``).

What the numbers mean:

- **ms/step** (aggregate): measured wall time / generator steps taken by *all* generators
  in that time, in the steady state (start-up and shutdown left out). The inverse of the
  throughput; this is what the target "<= 0.4 ms per step at 89 generators" refers to.
- **round trip** (per generator): time one generator waits in ``evaluate`` for its
  prediction and verdict (median / p90). The generators of a rank advance together, so
  this is also roughly the period of one generator's steps. PAL's 4.27 ms is this kind of
  number: one synchronous step of all 89 generators (communication + propagation).

Also (item 2) the predictions per second a real, untrained 4-member MACE committee
(full and shared-backbone) serves to 89 generators through the same stack
(``--served-only`` runs just that).

Usage: ``python bench/messaging.py [--quick] [--plot] [--served-only]`` (writes
bench/results/messaging.json, and messaging.png with ``--plot``). Before/after a change:
``python bench/messaging.py --quick --messaging-only --pythonpath OLD --name messaging_before``
with ``OLD`` a folder holding an older ``pal_atoms`` package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, table, write_json

HERE = Path(__file__).resolve().parent
PAL_MS_PER_STEP_89 = 4.27  # PAL paper, section 3.1: communication + propagation, 89 MD
TARGET_MS_PER_STEP_89 = 0.4


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("mpiexec not found (pip install mpich)")
    return exe


def launch(script: str, n_ranks: int, *args: str, timeout_s: float = 900) -> dict[str, Any]:
    """Run ``script`` on ``n_ranks`` ranks; return the JSON it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [mpiexec(), "-n", str(n_ranks), sys.executable, "-m", "mpi4py"]
        cmd += [str(HERE / script), str(out), *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        result = json.loads(out.read_text())
        result["job_wall_s"] = time.monotonic() - t0
        shown = [*cmd[:3], "python", "-m", "mpi4py", f"bench/{script}", "OUT.json", *cmd[8:]]
        result["command"] = " ".join(["mpiexec", *shown[1:]])
        return result


def al_job(
    generators: int,
    gen_ranks: int,
    *,
    kind: str = "trivial",
    oracle_ranks: int = 1,
    oracle_sleep_ms: float = 100.0,
    fraction: float = 0.0,
    warmup: float = 1.0,
    measure: float = 5.0,
    committee: str = "zero",
    committee_mode: str = "full",
    prediction_ranks: int = 1,
) -> dict[str, Any]:
    """One job; returns the row of the table with everything measured."""
    # controller, prediction, oracles, generators
    size = 1 + prediction_ranks + oracle_ranks + gen_ranks
    r = launch(
        "_mpi_al_job.py",
        size,
        f"--generators={generators}",
        f"--kind={kind}",
        f"--oracle-ranks={oracle_ranks}",
        f"--oracle-sleep-ms={oracle_sleep_ms}",
        f"--uncertain-fraction={fraction}",
        f"--warmup={warmup}",
        f"--measure={measure}",
        f"--committee={committee}",
        f"--committee-mode={committee_mode}",
        f"--prediction-ranks={prediction_ranks}",
    )
    w = r["window"]
    steps = w["steps1"] - w["steps0"]
    wall = w["t1"] - w["t0"]
    lat = r["latency"]
    rss = [m["controller_rss_MB"] for m in r["metrics"] if m.get("controller_rss_MB")]
    busy = [m["oracle_busy_fraction"] for m in r["metrics"]]
    cpu = {k: round(v["user_s"] + v["sys_s"], 2) for k, v in r["cpu_by_role"].items()}
    return {
        "kind": kind,
        "generators": generators,
        "generator_ranks": gen_ranks,
        "oracle_ranks": oracle_ranks,
        "committee": committee,
        "committee_mode": committee_mode,
        "prediction_ranks": prediction_ranks,
        "ranks": size,
        "uncertain_fraction": fraction,
        "oracle_sleep_ms": oracle_sleep_ms,
        "measured_s": wall,
        "steps": steps,
        "ms_per_step": 1e3 * wall / max(steps, 1),
        "steps_per_s": steps / wall,
        # Every generator steps once per period: N x the aggregate time per step.
        "step_period_per_generator_ms": 1e3 * wall / max(steps, 1) * generators,
        "round_trip_ms": {
            "mean": 1e3 * lat["mean_s"],
            "p50": 1e3 * lat["p50_s"],
            "p90": 1e3 * lat["p90_s"],
            "p99": 1e3 * lat["p99_s"],
            "n": lat["n"],
        },
        "labels_per_s": (w["labels1"] - w["labels0"]) / wall,
        "store_ms_per_label": 1e3 * r["store_s"] / max(1, r["summary"]["labels_ok"]),
        "labels_ok": r["summary"]["labels_ok"],
        "oracle_busy_fraction_end": busy[-1] if busy else None,
        "controller_rss_MB": {
            "start_of_run": rss[0] if rss else None,
            "peak_in_run": max(rss) if rss else None,
            "process_peak": r["rss_end_MB"].get("VmHWM"),
        },
        "cpu_s_by_role": cpu,
        "startup_s": w["t_first"],
        "job_wall_s": r["job_wall_s"],
        "loadavg": r["loadavg"],
        "command": r["command"],
    }


def floor(repeats: int) -> dict[str, Any]:
    return launch("_mpi_pingpong.py", 3, f"--repeats={repeats}")


def fmt_rt(row: dict[str, Any]) -> str:
    rt = row["round_trip_ms"]
    return f"{rt['p50']:.2g} / {rt['p90']:.2g}"


def run_floor(quick: bool) -> dict[str, Any]:
    print("raw MPI floor (ethanol payload: 424 B out, 328 B back) ...", flush=True)
    fl = floor(500 if quick else 3000)
    print(
        table(
            ["pattern / receive", "median ms", "p90 ms"],
            [[k, v["median_ms"], v["p90_ms"]] for k, v in fl["results"].items()],
        ),
        flush=True,
    )
    return fl


def run_messaging(quick: bool, gen_ranks: int, measure: float) -> list[dict[str, Any]]:
    print("\nmessaging: zero-cost committee, trivial generators (9 atoms) ...", flush=True)
    cases = [(1, 1), (8, min(8, gen_ranks)), (89, gen_ranks), (256, gen_ranks)]
    if not quick:
        cases += [(8, 8), (89, 1), (89, 2), (89, 8), (1000, gen_ranks)]
    rows = []
    for n, g in cases:
        rows.append(al_job(n, g, measure=measure))
        print(f"  {n} generators on {g} ranks: {rows[-1]['ms_per_step']:.3f} ms/step", flush=True)
    md_cases = [(89, gen_ranks)] + ([] if quick else [(1, 1), (8, 8), (256, gen_ranks)])
    for n, g in md_cases:
        rows.append(al_job(n, g, kind="md", measure=measure))
        print(f"  MD: {n} generators on {g} ranks: {rows[-1]['ms_per_step']:.3f} ms/step")
    head = ["kind", "gens", "gen ranks", "ranks", "ms/step", "steps/s", "period ms"]
    print("\nms/step = measured wall time / steps of all generators (aggregate throughput);")
    print("period = gens x ms/step, the time between two steps of one generator;")
    print("round trip = one generator's wait in evaluate (median / p90; trivial only)\n")
    print(
        table(
            [*head, "round trip ms p50/p90", "ctrl CPU s", "load"],
            [
                [
                    r["kind"],
                    r["generators"],
                    r["generator_ranks"],
                    r["ranks"],
                    r["ms_per_step"],
                    round(r["steps_per_s"]),
                    r["step_period_per_generator_ms"],
                    fmt_rt(r),
                    r["cpu_s_by_role"].get("controller"),
                    round(r["loadavg"][0], 1),
                ]
                for r in rows
            ],
        ),
        flush=True,
    )
    return rows


def run_served(quick: bool, gen_ranks: int, measure: float) -> list[dict[str, Any]]:
    """Predictions per second a real MACE committee serves to 89 generators (item 2)."""
    print("\nserved: real 4-member MACE committee, 89 trivial generators (ethanol) ...")
    cases = [("full", 1), ("shared", 1)] + ([] if quick else [("full", 2), ("shared", 2)])
    rows = []
    for mode, pred in cases:
        row = al_job(
            89,
            gen_ranks,
            committee="mace",
            committee_mode=mode,
            prediction_ranks=pred,
            warmup=3.0,
            measure=measure,
        )
        rows.append(row)
        print(
            f"  {mode} committee, {pred} prediction rank(s): "
            f"{row['steps_per_s']:.0f} predictions/s ({row['ms_per_step']:.2f} ms each)",
            flush=True,
        )
    print(
        table(
            ["committee", "prediction ranks", "predictions/s", "ms/prediction", "period ms"],
            [
                [
                    r["committee_mode"],
                    r["prediction_ranks"],
                    round(r["steps_per_s"]),
                    r["ms_per_step"],
                    r["step_period_per_generator_ms"],
                ]
                for r in rows
            ],
        ),
        flush=True,
    )
    return rows


def run_scale(
    quick: bool, sleep_ms: float, fraction: float, measure: float
) -> list[dict[str, Any]]:
    print("\nscale: 64 oracle ranks (sleep oracle), selection sends some to the oracles ...")
    # (case, generators, oracle ranks, label time ms, uncertain fraction); the last
    # full-mode case labels ~40/s, where the controller's HDF5 appends become the limit.
    cases = [("main", n, 64, sleep_ms, fraction) for n in (100, 300, 1000)]
    if not quick:
        cases += [
            ("one oracle rank, no labels", 1000, 1, sleep_ms, 0.0),
            ("label-heavy", 1000, 64, 100.0, 0.05),
        ]
    rows = []
    for case, n, oracles, ms, f in cases:
        row = al_job(
            n, 8, oracle_ranks=oracles, oracle_sleep_ms=ms, fraction=f, warmup=2.0, measure=measure
        )
        rows.append(row | {"case": case})
        print(
            f"  {n} generators, {oracles} oracle ranks, {ms:g} ms labels, {f:g} uncertain: "
            f"{row['ms_per_step']:.3f} ms/step",
            flush=True,
        )
    print()
    print(
        table(
            [
                *("gens", "oracle ranks", "label ms", "uncertain", "ranks", "ms/step"),
                *("round trip ms p50/p90", "labels/s", "store ms/label", "oracle busy"),
                *("ctrl RSS MB start/peak", "start-up s", "load"),
            ],
            [
                [
                    r["generators"],
                    r["oracle_ranks"],
                    r["oracle_sleep_ms"],
                    r["uncertain_fraction"],
                    r["ranks"],
                    r["ms_per_step"],
                    fmt_rt(r),
                    round(r["labels_per_s"], 1),
                    round(r["store_ms_per_label"], 1),
                    round(r["oracle_busy_fraction_end"] or 0.0, 3),
                    "{:.0f} / {:.0f}".format(
                        r["controller_rss_MB"]["start_of_run"] or 0.0,
                        r["controller_rss_MB"]["peak_in_run"] or 0.0,
                    ),
                    round(r["startup_s"], 1),
                    round(r["loadavg"][0], 1),
                ]
                for r in rows
            ],
        ),
        flush=True,
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows, fewer cases")
    p.add_argument("--plot", action="store_true", help="also write messaging.png")
    p.add_argument("--gen-ranks", type=int, default=4, help="generator ranks (at most)")
    p.add_argument("--oracle-sleep-ms", type=float, default=1000.0, help="scale: label time")
    p.add_argument("--fraction", type=float, default=0.002, help="scale: uncertain fraction")
    p.add_argument("--messaging-only", action="store_true", help="skip the floor and scale")
    p.add_argument(
        "--served-only",
        action="store_true",
        help="only the real-committee case (predictions/s served to 89 generators)",
    )
    p.add_argument("--name", default="messaging", help="results file bench/results/NAME.json")
    p.add_argument(
        "--pythonpath",
        type=Path,
        default=None,
        help="put this folder first on the jobs' PYTHONPATH (e.g. an older pal_atoms, "
        "for before/after comparisons)",
    )
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.pythonpath is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(args.pythonpath.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    measure = 4.0 if args.quick else 10.0
    t_start = time.monotonic()
    out: dict[str, Any] = {
        "quick": args.quick,
        "gen_ranks": args.gen_ranks,
        "pythonpath": str(args.pythonpath) if args.pythonpath else None,
        "loadavg_before": os.getloadavg(),
        "pal_ms_per_step_89": PAL_MS_PER_STEP_89,
        "target_ms_per_step_89": TARGET_MS_PER_STEP_89,
    }
    if args.served_only:
        out["served"] = run_served(args.quick, args.gen_ranks, measure)
        out["total_s"] = time.monotonic() - t_start
        path = write_json(args.name, out)
        print(f"\nwrote {path} in {out['total_s']:.0f} s")
        return
    if not args.messaging_only:
        out["floor"] = run_floor(args.quick)
    out["messaging"] = run_messaging(args.quick, args.gen_ranks, measure)
    if not args.messaging_only:
        out["served"] = run_served(args.quick, args.gen_ranks, measure)
        out["scale"] = run_scale(args.quick, args.oracle_sleep_ms, args.fraction, measure)
    out["loadavg_after"] = os.getloadavg()
    out["total_s"] = time.monotonic() - t_start
    path = write_json(args.name, out)
    print(f"\nwrote {path} in {out['total_s']:.0f} s")
    if args.plot and "scale" in out:
        plot(out, RESULTS / f"{args.name}.png")


def replot(name: str = "messaging") -> None:
    """Redraw ``bench/results/NAME.png`` from its JSON (no jobs run)."""
    plot(json.loads((RESULTS / f"{name}.json").read_text()), RESULTS / f"{name}.png")


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("trivial", "o"), ("md", "s")):
        # One series per kind: the default number of generator ranks (the other rank
        # counts at 89 generators are in the table and the JSON).
        g = out.get("gen_ranks", 4)
        rows = [
            r
            for r in out["messaging"]
            if r["kind"] == kind and r["generator_ranks"] == min(r["generators"], g)
        ]
        rows.sort(key=lambda r: r["generators"])
        label = "messaging only" if kind == "trivial" else "messaging + MD"
        a.plot(
            [r["generators"] for r in rows],
            [r["ms_per_step"] for r in rows],
            marker=marker,
            label=label,
        )
    s = sorted(
        (r for r in out["scale"] if r["case"] == "main"),
        key=lambda r: r["generators"],
    )
    a.plot(
        [r["generators"] for r in s],
        [r["ms_per_step"] for r in s],
        marker="^",
        label="+ 64 oracle ranks",
    )
    a.plot([89], [TARGET_MS_PER_STEP_89], "k*", ms=10, label="target (89 generators)")
    a.set(xscale="log", yscale="log", xlabel="generators", ylabel="ms per generator step")
    a.legend(fontsize=8)
    for key, marker in (("start_of_run", "v"), ("peak_in_run", "^")):
        b.plot(
            [r["generators"] for r in s],
            [r["controller_rss_MB"][key] for r in s],
            marker=marker,
            label=key.replace("_", " "),
        )
    b.set_ylim(bottom=0)
    b.legend(fontsize=8)
    b.set(xscale="log", xlabel="generators (64 oracle ranks)", ylabel="controller RSS, MiB")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
