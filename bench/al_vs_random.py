"""Active learning vs random sampling: force MAE vs number of oracle labels (issue #8.5).

Test set (made here, xTB-labelled, cached): xTB MD at 300/600/900/1200 K from every shipped
frame (with its charge) plus strongly distorted geometries (rattle 0.2-0.3 Å, strain
0.90-1.12; no atom pair closer than 0.85 x the frame's shortest distance, no atomic force
above 25 eV/Å) of every frame. Two ways to spend n oracle labels:

(a) ``al``: pal-atoms' single-process ActiveLearning loop. Bootstrap labels (rattled
    frames, as ``pal-atoms md`` makes them) first, then one Langevin MD generator per
    frame on the committee, temperature ramp 300 -> 1200 K, the most uncertain
    geometries labelled with xTB (default: the top 10 % of the recent max_force_std of
    each system, a RecentQuantile per system; or one RecentQuantile, or a TrustWindow).
    Every label counts, the bootstrap included.
(b) ``random``: labels drawn uniformly at random from plain xTB MD at 300 K from every
    frame (the MD itself is not counted, only the frames drawn).

For every n in ``--counts`` a FRESH committee (same seed, TrainerSettings() defaults plus
the seed, or the --max-steps/--epochs overrides) is trained on the first n labels of each
method and scored on the test set: the comparison isolates the data. In the AL loop every
training round is such a fresh committee (see bench/_al_loop.py), so the AL curve is the
loop's own committee after each round. Rank correlation (Spearman) between the
committee's max_force_std and the true largest per-atom force error on the test set.

Usage: python bench/al_vs_random.py [--quick] [--system bi|ethanol] [--seeds 0 1 2]
           [--counts 8 16 32 64 128] [--max-steps N] [--epochs N]
Writes bench/results/al_vs_random[_quick][_ethanol].json and .png.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import logging
import math
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _al_data import load_system, make_test_set, random_pool
from _al_loop import ALSettings, FreshTrainer, active_learning
from _common import RESULTS, table, write_json
from pal_atoms.calculators import CommitteeCalculator, TrainerSettings

METHODS = ("random", "al")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "pal_atoms_bench_cache" / "al_vs_random"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------- scoring
def evaluate(committee: CommitteeCalculator, test: list[Atoms]) -> dict[str, Any]:
    """Force MAE (all, per category, MD vs distorted), energy MAE, Spearman on ``test``."""
    preds = committee.predict_batch(test)
    cats = np.array([a.info["category"] for a in test])
    abs_err, max_err, mfs, e_err = [], [], [], []
    for p, a in zip(preds, test, strict=True):
        d = np.asarray(p["forces"]) - a.get_forces()
        abs_err.append(np.abs(d).ravel())
        max_err.append(float(np.linalg.norm(d, axis=1).max()))
        mfs.append(float(p["max_force_std"]))
        e_err.append(abs(p["energy"] - a.get_potential_energy()) / len(a))
    max_err, mfs = np.array(max_err), np.array(mfs)

    def mae(mask: np.ndarray) -> float:
        return float(np.mean(np.concatenate([e for e, m in zip(abs_err, mask, strict=True) if m])))

    def rho(mask: np.ndarray) -> float:
        return float(spearmanr(mfs[mask], max_err[mask]).statistic) if mask.sum() > 2 else None

    md = np.char.startswith(cats.astype(str), "md")
    groups = {"md": md, "distorted": ~md} | {c: cats == c for c in sorted(set(cats))}
    return {
        "force_mae": mae(np.ones(len(test), bool)),
        "energy_mae_per_atom": float(np.mean(e_err)),
        "force_mae_by_category": {k: mae(m) for k, m in groups.items() if m.any()},
        "spearman": rho(np.ones(len(test), bool)),
        "spearman_by_category": {k: rho(m) for k, m in groups.items() if k in ("md", "distorted")},
        "mean_max_force_std": float(mfs.mean()),
        "mean_max_force_error": float(max_err.mean()),
    }


def save_labels(labels: list[Atoms], path: Path) -> None:
    """The labels in order (extxyz: energy, forces, charge, provenance) for later study."""
    out = []
    for a in labels:
        b = Atoms(a.numbers, a.positions)
        keep = ("charge", "multiplicity", "category", "generator_id", "uncertainty")
        b.info.update({k: a.info[k] for k in keep if k in a.info})
        e = a.get_potential_energy()
        b.calc = SinglePointCalculator(b, energy=e, free_energy=e, forces=a.get_forces())
        out.append(b)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, out, format="extxyz")


def label_stats(labels: list[Atoms], frames: list[Atoms]) -> dict[str, Any]:
    """What a method labelled: mean/max |F| and how the labels spread over the frames."""
    fnorm = [float(np.linalg.norm(a.get_forces(), axis=1).max()) for a in labels]
    keys = [f"{a.get_chemical_formula()}({int(a.info['charge']):+d})" for a in frames]
    per: dict[str, int] = dict.fromkeys(keys, 0)
    for a in labels:
        per[f"{a.get_chemical_formula()}({int(a.info['charge']):+d})"] += 1
    return {
        "mean_max_force_eV_A": float(np.mean(fnorm)),
        "p90_max_force_eV_A": float(np.quantile(fnorm, 0.9)),
        "per_system": per,
    }


# ---------------------------------------------------------------------------- one seed
def run_seed(
    seed: int, *, args: argparse.Namespace, system, test: list[Atoms], tset: TrainerSettings, al
) -> dict[str, Any]:
    frames = list(system.frames)
    counts = sorted(args.counts)

    def make_committee() -> CommitteeCalculator:
        return CommitteeCalculator.create(
            "mace",
            elements=system.elements,
            charges=system.charges,
            n_members=args.members,
            seed=seed,
            device="cpu",
        )

    out: dict[str, Any] = {"load_start": load()}
    settings = replace(tset, seed=seed)

    # (b) random draws from plain xTB MD
    t0 = time.perf_counter()
    pool = random_pool(
        system,
        temperatures=tuple(args.random_temperatures),
        size=2 * counts[-1],
        seed=seed,
        cache=args.cache,
    )
    labels = pool[: counts[-1]]
    out["random_pool_s"] = round(time.perf_counter() - t0, 1)
    curve: dict[str, Any] = {}

    def record(into: dict[str, Any], method: str):
        def on_trained(labs: list[Atoms], committee: CommitteeCalculator, rec: dict) -> None:
            res = {**evaluate(committee, test), **rec, "load": load()}
            into[str(len(labs))] = res
            print(
                f"  seed {seed} {method:6s} n={len(labs):4d}: force MAE {res['force_mae']:.4f} "
                f"eV/Å (md {res['force_mae_by_category']['md']:.4f}, distorted "
                f"{res['force_mae_by_category'].get('distorted', float('nan')):.4f}), "
                f"Spearman {res['spearman']:.2f}, {rec['steps']} steps {rec['train_s']:.0f} s,"
                f" load {res['load'][0]}",
                flush=True,
            )

        return on_trained

    trainer = FreshTrainer(
        make_committee, settings, on_trained=record(curve, "random"), min_epochs=args.min_epochs
    )
    t0 = time.perf_counter()
    for n in counts:
        trainer.train(labels[:n])
    save_labels(labels, args.cache / f"labels_{Path(args.out).name}_random_s{seed}.extxyz")
    out["random"] = {
        "curve": curve,
        "wall_s": round(time.perf_counter() - t0, 1),
        "labels": label_stats(labels, frames),
    }

    # (a) active learning
    al_curve: dict[str, Any] = {}
    live = make_committee()
    trainer = FreshTrainer(
        make_committee,
        settings,
        live=live,
        on_trained=record(al_curve, "al"),
        min_epochs=args.min_epochs,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = active_learning(
            frames,
            counts=counts,
            trainer=trainer,
            live=live,
            store_path=Path(tmp) / "labels.h5",
            s=al,
            timestep_fs=system.timestep_fs,
            seed=seed,
        )
    save_labels(run["labels"], args.cache / f"labels_{Path(args.out).name}_al_s{seed}.extxyz")
    out["al"] = {
        "curve": al_curve,
        "wall_s": round(time.perf_counter() - t0, 1),
        "stages": run["stages"],
        "store_counts": run["store_counts"],
        "bootstrap_failed": run["bootstrap_failed"],
        "labels": label_stats(run["labels"], frames),
    }
    out["load_end"] = load()
    return out


# ---------------------------------------------------------------------------- summary
def curve_points(per_seed: dict[str, Any], method: str) -> list[int]:
    ns = set()
    for res in per_seed.values():
        ns |= {int(n) for n in res[method]["curve"]}
    return sorted(ns)


def stats(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None], float)
    return {"mean": float(v.mean()), "std": float(v.std()), "n": len(v)}


def summarise(per_seed: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for method in METHODS:
        rows = {}
        for n in curve_points(per_seed, method):
            got = [
                r[method]["curve"][str(n)]
                for r in per_seed.values()
                if str(n) in r[method]["curve"]
            ]
            cats = sorted({c for g in got for c in g["force_mae_by_category"]})
            rows[str(n)] = {
                "force_mae": stats([g["force_mae"] for g in got]),
                "energy_mae_per_atom": stats([g["energy_mae_per_atom"] for g in got]),
                "spearman": stats([g["spearman"] for g in got]),
                "by_category": {
                    c: stats([g["force_mae_by_category"].get(c) for g in got]) for c in cats
                },
            }
        summary[method] = rows
    rnd, al = summary["random"], summary["al"]
    n_final = max(int(n) for n in rnd)
    target = rnd[str(n_final)]["force_mae"]["mean"]
    match = matching_labels(
        [(int(n), v["force_mae"]["mean"]) for n, v in sorted(al.items(), key=lambda x: int(x[0]))],
        target,
    )
    per_seed_ratio = {}
    for seed, r in per_seed.items():
        own = r["random"]["curve"].get(str(n_final))
        if own is None:
            continue
        m = matching_labels(
            sorted((int(n), v["force_mae"]) for n, v in r["al"]["curve"].items()), own["force_mae"]
        )
        per_seed_ratio[seed] = None if m is None else m / n_final
    al_final = str(max(int(n) for n in al))
    summary["targets"] = {
        "random_final_labels": n_final,
        "random_final_force_mae": target,
        "al_labels_to_match": match,
        "label_ratio": None if match is None else match / n_final,
        "label_ratio_per_seed": per_seed_ratio,
        "label_ratio_target": 1 / 3,
        "spearman_final": {
            "random": rnd[str(n_final)]["spearman"],
            "al": al[al_final]["spearman"],
        },
        "spearman_target": 0.8,
    }
    return summary


def matching_labels(curve: list[tuple[int, float]], target: float) -> float | None:
    """Labels at which ``curve`` first reaches ``target`` (log-log interpolation)."""
    for k, (n, v) in enumerate(curve):
        if v <= target:
            if k == 0:
                return float(n)
            n0, v0 = curve[k - 1]
            f = (math.log(v0) - math.log(target)) / (math.log(v0) - math.log(v))
            return float(math.exp(math.log(n0) + f * (math.log(n) - math.log(n0))))
    return None


def fmt(s: dict[str, float] | None, digits: int = 4) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def report(summary: dict[str, Any]) -> str:
    ns = sorted({int(n) for m in METHODS for n in summary[m]})
    rows = []
    for n in ns:
        r, a = summary["random"].get(str(n)), summary["al"].get(str(n))
        row = [n]
        for s in (r, a):
            row += [
                fmt(s and s["force_mae"]),
                fmt(s and s["by_category"].get("md")),
                fmt(s and s["by_category"].get("distorted")),
                fmt(s and s["spearman"], 2),
            ]
        rows.append(row)
    head = ["labels"] + [
        f"{m} {k}" for m in METHODS for k in ("MAE", "MAE md", "MAE distorted", "Spearman")
    ]
    lines = ["Force MAE (eV/Å) on the test set, mean ± std over seeds:", table(head, rows)]
    cats = sorted(
        {c for m in METHODS for v in summary[m].values() for c in v["by_category"]}
        - {"md", "distorted"},
        key=lambda c: float(c[2:]) if c.startswith("md") else 1e9,
    )
    rows = []
    for m in METHODS:
        for n in sorted(summary[m], key=int):
            rows.append([m, n] + [fmt(summary[m][n]["by_category"].get(c), 3) for c in cats])
    lines += ["Per category:", table(["method", "labels", *cats], rows)]
    t = summary["targets"]
    ratio = t["label_ratio"]
    lines.append(
        f"random's final error {t['random_final_force_mae']:.4f} eV/Å at "
        f"{t['random_final_labels']} labels; AL reaches it at "
        + (
            f"{t['al_labels_to_match']:.1f} labels (ratio {ratio:.2f}, target <= 0.33)"
            if ratio is not None
            else "no label count measured (ratio > 1)"
        )
    )
    sp = t["spearman_final"]
    lines.append(
        f"Spearman(max_force_std, max force error), final committees: random "
        f"{fmt(sp['random'], 2)}, AL {fmt(sp['al'], 2)} (target >= 0.8)"
    )
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"random": ("tab:gray", "o", "random (300 K xTB MD)"), "al": ("tab:blue", "s", "AL")}
    for m in METHODS:
        color, marker, name = styles[m]
        ns = sorted(summary[m], key=int)
        x = [int(n) for n in ns]
        y = [summary[m][n]["force_mae"]["mean"] for n in ns]
        e = [summary[m][n]["force_mae"]["std"] for n in ns]
        axes[0].errorbar(x, y, yerr=e, color=color, marker=marker, capsize=3, label=name)
        for cat, ls in (("md", "-"), ("distorted", "--")):
            yc = [summary[m][n]["by_category"].get(cat, {}).get("mean", np.nan) for n in ns]
            ec = [summary[m][n]["by_category"].get(cat, {}).get("std", np.nan) for n in ns]
            axes[1].errorbar(
                x, yc, yerr=ec, color=color, marker=marker, ls=ls, capsize=3, label=f"{m}: {cat}"
            )
    t = summary["targets"]
    axes[0].axhline(t["random_final_force_mae"], color="tab:gray", ls=":", lw=1)
    if t["al_labels_to_match"]:
        axes[0].axvline(t["al_labels_to_match"], color="tab:blue", ls=":", lw=1)
    for ax, sub in zip(axes, ("all test frames", "MD 300-1200 K vs distorted"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("oracle labels")
        ax.set_ylabel("force MAE (eV/Å)")
        ax.set_title(sub)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 8-32 labels, small test set")
    ap.add_argument("--system", choices=("bi", "ethanol"), default="bi")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--counts", type=int, nargs="+", help="label counts of the curve")
    ap.add_argument("--max-steps", type=int, help="override TrainerSettings.max_steps")
    ap.add_argument("--epochs", type=int, help="override TrainerSettings.max_epochs")
    ap.add_argument(
        "--min-epochs",
        type=int,
        help="the step budget grows with the labels: at least this many passes over them "
        "(default 0: the fixed --max-steps budget of the library's recipe)",
    )
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--test-temperatures", type=float, nargs="+", default=[300, 600, 900, 1200])
    ap.add_argument("--test-md", type=int, help="test MD frames per frame and temperature")
    ap.add_argument("--test-distorted", type=int, help="distorted test frames per frame")
    ap.add_argument("--random-temperatures", type=float, nargs="+", default=[300])
    ap.add_argument("--bootstrap", type=int, default=8, help="AL bootstrap labels (counted)")
    ap.add_argument(
        "--selection", choices=("system-quantile", "quantile", "window"), default="system-quantile"
    )
    ap.add_argument("--quantile", type=float, default=0.9)
    ap.add_argument("--lower", type=float, default=0.04, help="trust window lower (eV/Å)")
    ap.add_argument("--upper", type=float, default=math.inf, help="untrusted above (eV/Å)")
    ap.add_argument("--t-end", type=float, default=1200.0, help="AL MD ramp end (K)")
    ap.add_argument("--ramp-steps", type=int, help="AL ramp steps (default: from the budget)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="result name under bench/results (no suffix)")
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="NAME",
        help="no runs: combine the seeds of bench/results/NAME.json files (e.g. one seed "
        "per core, run side by side) into --out, with its table and plot",
    )
    args = ap.parse_args()
    q = args.quick
    args.seeds = args.seeds or ([0] if q else [0, 1, 2])
    args.counts = sorted(args.counts or ([8, 16, 32] if q else [8, 16, 32, 64, 128]))
    if q and args.max_steps is None and args.epochs is None:
        args.max_steps = 100  # quick: a short recipe; the full run keeps the defaults
    if args.min_epochs is None:
        args.min_epochs = 0
    args.test_md = args.test_md or (2 if q else 5)
    args.test_distorted = args.test_distorted or (2 if q else 8)
    args.out = args.out or "al_vs_random" + ("_quick" if q else "") + (
        "" if args.system == "bi" else f"_{args.system}"
    )
    return args


def merge(names: list[str], out: str) -> None:
    """Combine per-seed results of runs with the same settings into one result."""
    parts = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    first = parts[0]

    def same(part: dict[str, Any], key: str) -> Any:
        value = part.get(key, 0)  # min_epochs: 0 in results made before it existed
        # The time it took to make (or load) the test set is no setting.
        return {k: v for k, v in value.items() if k != "make_s"} if key == "test_set" else value

    for other in parts[1:]:
        for key in (
            "system",
            "counts",
            "trainer_settings",
            "al_settings",
            "test_set",
            "min_epochs",
        ):
            if same(other, key) != same(first, key):
                raise SystemExit(f"cannot merge: {key} differs between {names}")
    result = dict(first)
    result["per_seed"] = {k: v for p in parts for k, v in p["per_seed"].items()}
    result["seeds"] = sorted(int(k) for k in result["per_seed"])
    result["merged_from"] = [
        {"name": n, "command": p["command"]} for n, p in zip(names, parts, strict=True)
    ]
    result["complete"] = all(p.get("complete") for p in parts)
    result["wall_s"] = max(p.get("wall_s", 0.0) for p in parts)
    result["summary"] = summarise(result["per_seed"])
    path = write_json(out, result)
    print(report(result["summary"]))
    plot(
        result["summary"],
        RESULTS / f"{out}.png",
        f"{first['system']}: fresh {first['committee']['members']}-member MACE committee per "
        f"point, {len(result['seeds'])} seed(s), test {first['test_set']['n']} xTB frames",
    )
    print(f"wrote {path} and {out}.png")


def main() -> None:
    args = parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    q, name, n_test_md, n_test_dist = args.quick, args.out, args.test_md, args.test_distorted
    overrides = {
        k: v
        for k, v in (("max_steps", args.max_steps), ("max_epochs", args.epochs))
        if v is not None
    }
    tset = TrainerSettings(**overrides)

    t_all = time.perf_counter()
    system = load_system(args.system)
    n_gen = len(system.frames)
    expected = (args.counts[-1] - min(args.bootstrap, args.counts[-1])) / (1 - args.quantile)
    ramp = args.ramp_steps or max(20, round(expected / n_gen))
    al = ALSettings(
        bootstrap=args.bootstrap,
        t_end=args.t_end,
        ramp_steps=ramp,
        selection=args.selection,
        quantile=args.quantile,
        lower=args.lower,
        upper=args.upper,
    )
    print(
        f"system {args.system}: {', '.join(system.describe())}; seeds {args.seeds}; "
        f"counts {args.counts}; trainer overrides {overrides or 'none (defaults)'}; "
        f"load {load()}",
        flush=True,
    )
    t0 = time.perf_counter()
    test, test_path = make_test_set(
        system,
        temperatures=tuple(args.test_temperatures),
        md_per_temperature=n_test_md,
        distorted_per_frame=n_test_dist,
        cache=args.cache,
    )
    test_s = time.perf_counter() - t0
    cats = {
        c: sum(a.info["category"] == c for a in test)
        for c in sorted({a.info["category"] for a in test})
    }
    print(f"test set: {len(test)} frames {cats} ({test_s:.0f} s, {test_path})", flush=True)

    result: dict[str, Any] = {
        "system": args.system,
        "frames": system.describe(),
        "quick": q,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seeds": args.seeds,
        "counts": args.counts,
        "committee": {"backend": "mace", "members": args.members, "device": "cpu"},
        "trainer_overrides": overrides,
        "trainer_settings": asdict(tset),
        "min_epochs": args.min_epochs,
        "al_settings": asdict(al),
        "random_temperatures_K": args.random_temperatures,
        "test_set": {
            "n": len(test),
            "categories": cats,
            "temperatures_K": args.test_temperatures,
            "md_per_frame_and_temperature": n_test_md,
            "distorted_per_frame": n_test_dist,
            "cache": str(test_path),
            "make_s": round(test_s, 1),
        },
        "threads": args.threads,
        "torch": torch.__version__,
        "load_start": load(),
        "per_seed": {},
    }
    for seed in args.seeds:
        t0 = time.perf_counter()
        res = run_seed(seed, args=args, system=system, test=test, tset=tset, al=al)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        result["per_seed"][str(seed)] = res
        result["summary"] = summarise(result["per_seed"])
        result["complete"] = seed == args.seeds[-1]
        result["wall_s"] = round(time.perf_counter() - t_all, 1)
        result["load_end"] = load()
        path = write_json(name, result)
        print(f"seed {seed} done in {res['wall_s']:.0f} s; wrote {path}", flush=True)
    print(report(result["summary"]))
    png = RESULTS / f"{name}.png"
    plot(
        result["summary"],
        png,
        f"{args.system}: fresh {args.members}-member MACE committee per point, "
        f"{len(args.seeds)} seed(s), test {len(test)} xTB frames",
    )
    print(f"wrote {png}; total {time.perf_counter() - t_all:.0f} s; load {load()}")


if __name__ == "__main__":
    main()
