"""Serial active-learning loop against the asynchronous MPI workflow, at a fixed label budget.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/parallel_vs_serial.py [--quick]``. Prints a
table and writes ``bench/results/parallel_vs_serial[_quick].{json,png}``.

Both modes do the same job: 4 Langevin MD generators (800 K, 2 fs, patience 2) on Bi4/Bi5
clusters driven by a small real MACE committee (3 members, ``hidden_irreps="16x0e"``,
bootstrapped on 8 rattled xTB labels before any timing), trust window on ``energy_std``,
retraining every ``K`` new labels (``CommitteeTrainer``, ``max_steps`` fixed so that a round
costs about the same whatever the data size), until ``n`` new labels are stored.

* **serial** (written out below with the library's pieces, one process): step the
  generators round-robin until ``K`` structures are not trusted, label them one by one,
  train, repeat.
* **parallel**: :class:`~pal_atoms.workflow.ActiveLearning` under ``mpiexec``: controller,
  1 prediction rank, 1 training rank, ``N`` oracle ranks, 2 generator ranks (2 generators
  each); nothing waits for training.

The oracle is GFN2-xTB through tblite (the real labels, ~5 ms for Bi4/Bi5) padded by a
sleep to the nominal cost ``t_o`` (10 ms, 1 s, 10 s): the sleep stands in for a DFT job
running elsewhere, so ``N`` oracle ranks can oversubscribe the 2 cores.

Reported: wall time from the start of the loop until the ``n``-th label is stored (start-up,
imports and the committee's first call excluded: every rank warms up, then waits at a
barrier), the speed-up over serial, and the ideal of this model, built from the serial run's
measured parts (``t_o`` mean label time, ``G`` generation time for the ``n`` non-trusted
structures, ``t_tr`` mean training round, ``R = ceil(n/K) - 1`` rounds before the budget,
``g = 2`` generator ranks whose predictions the prediction rank batches together)::

    T_serial          = n * t_o + R * t_tr + G
    T_ideal_async(N)  = max(G/n + ceil(n/N) * t_o,  G/g + t_o)
    T_ideal(N)        = max(T_ideal_async(N),  R * t_tr)

``T_ideal_async`` is the best case when nothing waits for training (the first label cannot
start before one structure is generated, an oracle does ``ceil(n/N)`` labels in a row, the
last structure comes no earlier than ``G/g`` and is then labelled); ``T_ideal`` adds that
the same ``R`` training rounds are done by the budget, as in the serial loop (the
Amdahl-style ``max(n t_o / N, training, generation)``). The asynchronous workflow does not
wait for training, so it can beat ``T_ideal`` when it reaches the budget with fewer rounds
done (``rounds`` column, serial/parallel). ``G`` is measured in the serial run, with the
committee of that run and the machine's load at that time, so ``T_ideal_async`` is an
estimate, not a strict bound: a staler committee (fewer rounds) or a quieter machine
generates faster.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table, write_json
from _util_timing import loadavg, now, wait_for_quiet

#: Committee and trainer of both modes.
COMMITTEE = {"n_members": 3, "seed": 0, "hidden_irreps": "16x0e"}
TRAIN = {"max_epochs": 1000, "max_steps": 12, "lr": 5e-3, "seed": 0, "batch_size": 8}
BOOTSTRAP_TRAIN = {"max_epochs": 60, "lr": 5e-3, "seed": 0}
#: Trust window on energy_std (eV): between the bounds -> labelled; above -> labelled and
#: the generator restarts.
WINDOW = {"key": "energy_std", "lower": 0.02, "upper": 2.0}
GENERATOR_RANKS = 2


# -- pieces shared by both modes ----------------------------------------------------------------
def systems() -> list[Any]:
    from pal_atoms.dynamics import build_bi_clusters

    return build_bi_clusters([4, 5], shapes_per_size=2, charges=[0], seed=3)


def generators() -> list[Any]:
    from pal_atoms.dynamics import MDGenerator, MDSettings

    return [
        MDGenerator(
            a,
            generator_id=i,
            settings=MDSettings(temperature_K=800, timestep_fs=2.0, patience=2, seed=i),
        )
        for i, a in enumerate(systems())
    ]


def selection() -> Any:
    from pal_atoms.workflow.selection import TrustWindow

    return TrustWindow(**WINDOW)


def trainer_for(committee: Any) -> Any:
    from pal_atoms.calculators import CommitteeTrainer, TrainerSettings

    return CommitteeTrainer(committee, settings=TrainerSettings(**TRAIN))


def oracle_and_label_fn(cost_s: float) -> tuple[Any, Any]:
    from _util_timing import TimedLabel
    from pal_atoms.oracles import XTB

    return XTB(), TimedLabel(pad_to_s=cost_s)


# -- jobs (subprocesses) --------------------------------------------------------------------------
def job_setup(cfg: dict[str, Any], out: Path) -> None:
    """Bootstrap committee and labels (not timed); also one timed training round."""
    from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings
    from pal_atoms.dynamics import rattle_sample
    from pal_atoms.oracles import XTB, label

    from pal_atoms.store import LabelStore

    work = Path(cfg["work"])
    oracle = XTB()
    labels = [label(a, oracle) for a in rattle_sample(systems(), 2, rattle_std_A=0.1, seed=5)]
    assert all(lab.ok for lab in labels)
    committee = CommitteeCalculator.create("mace", elements=["Bi"], **COMMITTEE)
    CommitteeTrainer(committee, settings=TrainerSettings(**BOOTSTRAP_TRAIN)).train(
        [lab.to_atoms() for lab in labels]
    )
    committee.save(work / "committee0")
    with LabelStore(work / "boot.h5") as store:
        for lab in labels:
            store.append_label(lab)
    out.write_text(json.dumps({"bootstrap_labels": len(labels)}))


class SerialClient:
    """Prediction client of the serial loop: committee + selection, keeps the non-trusted."""

    def __init__(self, committee: Any, rule: Any):
        self.committee, self.rule = committee, rule
        self.selected: list[tuple[Any, float, int, int]] = []

    def evaluate(self, atoms: Any, *, generator_id: int = 0, step: int = 0) -> tuple[Any, Any]:
        from pal_atoms.core.protocols import Verdict

        (results,) = self.committee.predict_batch([atoms])
        verdict = Verdict(self.rule(atoms, results))
        if verdict is not Verdict.TRUSTED:
            u = float(results[self.rule.key])
            self.selected.append((atoms.copy(), u, generator_id, step))
        return results, verdict


def job_serial(cfg: dict[str, Any], out: Path) -> None:
    """The classic loop: generate until K uncertain, label them one by one, train, repeat."""
    from pal_atoms.calculators import CommitteeCalculator

    from pal_atoms.store import LabelStore

    work, run_dir = Path(cfg["work"]), Path(cfg["run_dir"])
    n, k = cfg["labels"], cfg["retrain_size"]
    committee = CommitteeCalculator.load(work / "committee0", device="cpu")
    trainer = trainer_for(committee)
    oracle, label_fn = oracle_and_label_fn(cfg["cost_s"])
    label_fn(systems()[0], oracle)  # warm-up: tblite parameters
    committee.predict_batch(systems())  # warm-up: the first call of a torch model is slow
    client = SerialClient(committee, selection())
    gens = generators()
    iters = [g.irun(client) for g in gens]
    store = LabelStore(run_dir / "labels.h5")
    gen_s, label_s, train_s = 0.0, [], []
    labels_ok, steps = 0, 0
    t_start = now()
    t_budget = None
    while t_budget is None:
        t0 = now()
        while len(client.selected) < k:
            for it in iters:
                next(it)
                steps += 1
                if len(client.selected) >= k:
                    break
        gen_s += now() - t0
        batch, client.selected = client.selected[:k], client.selected[k:]
        for atoms, u, gid, step in batch:
            t0 = now()
            lab = label_fn(atoms, oracle)
            label_s.append(now() - t0)
            store.append_label(lab, generator_id=gid, generator_step=step, uncertainty=u)
            labels_ok += lab.ok
            if labels_ok >= n:
                t_budget = now()
                break
        if t_budget is None:
            t0 = now()
            trainer.train(store.read(status="ok"))
            train_s.append(now() - t0)
    store.close()
    out.write_text(
        json.dumps(
            {
                "time_to_budget_s": t_budget - t_start,
                "generation_s": gen_s,
                "label_s": label_s,
                "train_s": train_s,
                "rounds_at_budget": len(train_s),
                "generator_steps": steps,
            }
        )
    )


def job_mpi(cfg: dict[str, Any], out: Path) -> None:
    """The asynchronous workflow; every rank runs this, rank 0 writes ``out``."""
    from _util_timing import TimedAL, soft_barrier
    from mpi4py import MPI

    from pal_atoms.workflow.mpi.layout import Layout, Role
    from pal_atoms.workflow.settings import WorkflowSettings

    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    layout = Layout(prediction=1, oracle=cfg["n_oracle"], training=1)
    role = layout.role(size, rank)
    committee: Any = None
    trainer: Any = object()  # must not be None on any rank: it decides the layout
    if role in (Role.PREDICTION, Role.TRAINING):
        from pal_atoms.calculators import CommitteeCalculator

        committee = CommitteeCalculator.load(Path(cfg["work"]) / "committee0", device="cpu")
        trainer = trainer_for(committee)
        committee.predict_batch(systems())  # warm-up: the first call of a torch model is slow
    oracle, label_fn = oracle_and_label_fn(cfg["cost_s"])
    if role is Role.ORACLE:
        label_fn(systems()[0], oracle)  # warm-up: tblite parameters
    run_dir = Path(cfg["run_dir"])
    al = TimedAL(
        committee=committee,
        oracle=oracle,
        generators=generators(),
        store=run_dir / "labels.h5",
        trainer=trainer,
        selection=selection(),
        settings=WorkflowSettings(
            max_labels=cfg["labels"],
            retrain_size=cfg["retrain_size"],
            time_limit_s=cfg["time_limit_s"],
            diversity_A=0.0,
            convergence_fraction=0.0,
            metrics_interval_s=2.0,
            checkpoint_interval_s=1e6,
            stop_file=None,
        ),
        run_dir=run_dir,
        label_fn=label_fn,
        comm=comm,
        layout=layout,
    )
    soft_barrier(comm)
    t_run = now()
    summary = al.run()
    t_end = now()
    if rank == 0:
        out.write_text(
            json.dumps(
                {
                    "time_to_budget_s": None if al.t_budget is None else al.t_budget - t_run,
                    "wall_with_shutdown_s": t_end - t_run,
                    "at_budget": al.at_budget,
                    "label_s": [
                        e["t_label_end"] - e["t_label_start"]
                        for e in al.label_log
                        if "t_label_start" in e
                    ],
                    "summary": summary.as_dict(),
                },
                default=float,
            )
        )


# -- driver -------------------------------------------------------------------------------------
def mpiexec() -> str:
    exe = Path(sys.executable).parent / "mpiexec"
    return str(exe) if exe.exists() else (shutil.which("mpiexec") or "mpiexec")


def launch(kind: str, cfg: dict[str, Any], tmp: Path, ranks: int = 1) -> dict[str, Any]:
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    out = tmp / "out.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--job", kind, str(tmp / "cfg.json"), str(out)]
    if kind == "mpi":
        cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=cfg.get("time_limit_s", 600) + 600,
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{kind} job failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(out.read_text())
    res["process_wall_s"] = time.perf_counter() - t0
    return res


def fresh_run_dir(work: Path, name: str) -> Path:
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    shutil.copy(work / "boot.h5", run_dir / "labels.h5")
    return run_dir


def model(serial: dict[str, Any], n: int, n_oracle: int) -> dict[str, float]:
    """Ideal times of the model in the module docstring, from the serial run's components."""
    t_o = sum(serial["label_s"]) / len(serial["label_s"])
    t_tr = sum(serial["train_s"]) / len(serial["train_s"]) if serial["train_s"] else 0.0
    r, g = serial["rounds_at_budget"], serial["generation_s"]
    t_async = max(g / n + math.ceil(n / n_oracle) * t_o, g / GENERATOR_RANKS + t_o)
    return {
        "t_o": t_o,
        "t_tr": t_tr,
        "R": r,
        "G": g,
        "T_serial_model": n * t_o + r * t_tr + g,
        "T_ideal": max(t_async, r * t_tr),
        "T_ideal_async": t_async,
    }


def plot(results: list[dict[str, Any]], costs: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 3.8), squeeze=False)
    for ax, cost in zip(axes[0], costs, strict=True):
        rows = sorted((r for r in results if r["cost_s"] == cost), key=lambda r: r["n_oracle"])
        ns = [r["n_oracle"] for r in rows]
        ax.axhline(rows[0]["serial_s"], color="k", ls="--", label="serial loop (1 oracle)")
        ax.plot(ns, [r["parallel_s"] for r in rows], "o-", color="C0", label="parallel (MPI)")
        ax.plot(
            ns, [r["T_ideal"] for r in rows], "s:", color="C1", label="ideal, training keeps pace"
        )
        ax.plot(
            ns,
            [r["T_ideal_async"] for r in rows],
            "^:",
            color="C2",
            alpha=0.7,
            label="ideal, async",
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(x) for x in ns])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("oracle ranks N")
        ax.set_title(f"oracle {cost * 1e3:g} ms" if cost < 1 else f"oracle {cost:g} s")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"wall time to {results[0]['labels']} labels (s)")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parallel_case(
    work: Path, cfg: dict[str, Any], serial: dict[str, Any], n_oracle: int, *, time_limit_s: float
) -> dict[str, Any]:
    """Run the MPI workflow for one (cost, N) and compare it with the serial run."""
    cost, n = cfg["cost_s"], cfg["labels"]
    print(f"... parallel, oracle {cost:g} s x {n_oracle} ranks", flush=True)
    quiet = wait_for_quiet()
    load0 = loadavg()
    cfg_p = {
        **cfg,
        "n_oracle": n_oracle,
        "run_dir": str(fresh_run_dir(work, f"mpi{n_oracle}")),
        "time_limit_s": time_limit_s,
    }
    par = launch("mpi", cfg_p, work, ranks=n_oracle + 3 + GENERATOR_RANKS)
    m = model(serial, n, n_oracle)
    t_par = par["time_to_budget_s"]
    return {
        "cost_s": cost,
        "n_oracle": n_oracle,
        "labels": n,
        "retrain_size": cfg["retrain_size"],
        "serial_s": serial["time_to_budget_s"],
        "parallel_s": t_par,
        "speedup": serial["time_to_budget_s"] / t_par if t_par else None,
        "ideal_speedup": serial["time_to_budget_s"] / m["T_ideal"],
        "ideal_async_speedup": serial["time_to_budget_s"] / m["T_ideal_async"],
        **m,
        "serial_rounds": serial["rounds_at_budget"],
        "parallel_rounds": par["at_budget"].get("training_rounds"),
        "parallel_predictions": par["at_budget"].get("predictions"),
        "parallel_wall_with_shutdown_s": par["wall_with_shutdown_s"],
        "parallel_label_s_mean": sum(par["label_s"]) / max(1, len(par["label_s"])),
        "parallel_stop_reason": par["summary"]["stop_reason"],
        "loadavg_before": load0,
        "quiet_wait": quiet,
        "loadavg_after": loadavg(),
    }


def summary_table(results: list[dict[str, Any]]) -> str:
    """The printed table: one row per parallel case."""
    headers = [
        "t_o s",
        "N",
        "serial s",
        "model s",
        "parallel s",
        "ideal s",
        "async s",
        "speed-up",
        "ideal",
        "rounds s/p",
        "G s",
        "t_tr s",
        "load",
    ]
    rows = [
        [
            f"{r['cost_s']:g}",
            r["n_oracle"],
            f"{r['serial_s']:.1f}",
            f"{r['T_serial_model']:.1f}",
            f"{r['parallel_s']:.1f}",
            f"{r['T_ideal']:.1f}",
            f"{r['T_ideal_async']:.1f}",
            f"{r['speedup']:.2f}",
            f"{r['ideal_speedup']:.2f}",
            f"{r['serial_rounds']}/{r['parallel_rounds']}",
            f"{r['G']:.1f}",
            f"{r['t_tr']:.2f}",
            " ".join(f"{x:.1f}" for x in r["loadavg_before"]),
        ]
        for r in results
    ]
    return table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="16 labels; 10 ms at N=4, 1 s at N=1,4,16 (~8 min)"
    )
    parser.add_argument("--labels", type=int, help="label budget n (default 16 quick / 64)")
    parser.add_argument("--retrain-size", type=int, help="labels per round K (default n/4)")
    parser.add_argument("--costs", type=float, nargs="+", help="oracle costs in s")
    parser.add_argument("--oracle-ranks", type=int, nargs="+", help="N (default 1 4 16)")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="COST:N",
        help="parallel cases to leave out, e.g. 10:1 (10 s at one oracle rank: ~ serial, 11 min)",
    )
    parser.add_argument("--job", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        kind, cfg_path, out = args.job
        cfg = json.loads(Path(cfg_path).read_text())
        {"setup": job_setup, "serial": job_serial, "mpi": job_mpi}[kind](cfg, Path(out))
        return
    n = args.labels or (16 if args.quick else 64)
    k = args.retrain_size or max(1, n // 4)
    costs = args.costs or ([0.01, 1.0] if args.quick else [0.01, 1.0, 10.0])
    ranks_for = {c: args.oracle_ranks or [1, 4, 16] for c in costs}
    if args.quick and not args.oracle_ranks:
        ranks_for[0.01] = [4]  # 10 ms: training-bound whatever N; one point is the story
    work = Path(tempfile.mkdtemp(prefix="pal-pvs-"))
    print(f"setup (bootstrap committee) in {work}", flush=True)
    launch("setup", {"work": str(work)}, work)
    results: list[dict[str, Any]] = []
    serials: dict[float, dict[str, Any]] = {}
    for cost in costs:
        cfg = {"work": str(work), "labels": n, "retrain_size": k, "cost_s": cost}
        quiet = wait_for_quiet()
        load0 = loadavg()
        print(f"... serial, oracle {cost:g} s", flush=True)
        cfg["run_dir"] = str(fresh_run_dir(work, "serial"))
        serial = launch("serial", cfg, work)
        serial["loadavg_before"], serial["loadavg_after"] = load0, loadavg()
        serial["quiet_wait"] = quiet
        serials[cost] = serial
        est = n * cost + 10 * (serial["time_to_budget_s"] - n * cost) + 60
        for n_oracle in ranks_for[cost]:
            if f"{cost:g}:{n_oracle}" in args.skip:
                continue
            results.append(parallel_case(work, cfg, serial, n_oracle, time_limit_s=est))
    shutil.rmtree(work, ignore_errors=True)
    print(summary_table(results))
    name = "parallel_vs_serial" + ("_quick" if args.quick else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"{name}.png"
    plot(results, costs, png)
    path = write_json(
        name,
        {
            "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/parallel_vs_serial.py "
            + " ".join(sys.argv[1:]),
            "model": {
                "T_serial": "n*t_o + R*t_tr + G",
                "T_ideal_async": "max(G/n + ceil(n/N)*t_o, G/g + t_o)",
                "T_ideal": "max(T_ideal_async, R*t_tr)",
                "g": GENERATOR_RANKS,
                "R": "ceil(n/K) - 1 training rounds before the n-th label",
            },
            "committee": COMMITTEE,
            "train": TRAIN,
            "window": WINDOW,
            "serial": serials,
            "cases": results,
        },
    )
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
