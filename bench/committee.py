"""Committee kernel benchmark: cost of uncertainty, batched prediction, accuracy vs labels.

Usage: python bench/committee.py [--quick] [--cost-only] [--threads N]
           [--out bench/results/committee.json]
       python bench/committee.py --accuracy-only [--hyper KEY=VALUE ...] [--steps N]
           [--counts N ...] [--no-bootstrap] --out bench/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.build import molecule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "calculators"))
from calc_clusters import bi_cluster, md_frames, relax
from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings


def timeit(fn, repeat: int) -> float:
    for _ in range(5):  # warm-up: first calls pay allocator and autograd set-up
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def mace_reference(structure, repeat):
    """mace's own MACECalculator with 1 and 4 model files of the same architecture."""
    from pal_atoms.core.compat import import_mace

    import_mace()
    from mace.calculators import MACECalculator
    from pal_atoms.calculators.mace_backend import MaceBackend, _build_mace

    hyper = MaceBackend().hyperparameters({})
    z = sorted(set(structure.numbers.tolist()))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for m in range(4):
            torch.manual_seed(m)
            model = _build_mace(len(z), hyper)
            model.atomic_numbers = torch.tensor(z)
            path = Path(tmp) / f"m{m}.model"
            torch.save(model, path)
            paths.append(str(path))
        for n in (1, 4):
            calc = MACECalculator(model_paths=paths[:n], device="cpu", default_dtype="float32")
            atoms = structure.copy()
            atoms.calc = calc

            def run(atoms=atoms):
                atoms.positions[0, 0] += 1e-4
                atoms.get_forces()

            out[n] = timeit(run, repeat)
    return out


def cost_table(repeat: int) -> dict:
    rows = {}
    for name, structure, elements in [
        ("ethanol", molecule("CH3CH2OH"), ["H", "C", "O"]),
        ("Bi8", bi_cluster(8), ["Bi"]),
    ]:
        calcs = {}
        for label, mode, n, batched in [
            ("1 member", "full", 1, True),
            ("full, member-batched (vmap)", "full", 4, True),
            ("full, sequential", "full", 4, False),
            ("shared backbone, 4 heads", "shared", 4, True),
        ]:
            calc = CommitteeCalculator.create(
                "mace", elements=elements, n_members=n, mode=mode, device="cpu"
            )
            calc.model.batched = batched
            calcs[label] = calc
        # Interleaved (one call of each in turn, median per mode): slow drifts of the
        # machine (clock, caches, other jobs) hit every mode alike, so ratios hold.
        times: dict[str, list[float]] = {label: [] for label in calcs}
        for calc in calcs.values():
            for _ in range(5):  # warm-up: allocator and autograd set-up
                calc.predict_batch([structure])
        for _ in range(repeat):
            for label, calc in calcs.items():
                t = time.perf_counter()
                calc.predict_batch([structure])
                times[label].append(time.perf_counter() - t)
        row = {label: statistics.median(v) * 1000 for label, v in times.items()}
        try:
            ref = mace_reference(structure, repeat)
            row["mace MACECalculator 1 model"] = ref[1]
            row["mace MACECalculator 4 models"] = ref[4]
        except Exception as exc:
            row["mace MACECalculator error"] = str(exc)
        rows[name] = row
    return rows


def batch_table(repeat: int) -> dict:
    rows = {}
    for name, structure, elements in [
        ("ethanol", molecule("CH3CH2OH"), ["H", "C", "O"]),
        ("Bi8", bi_cluster(8), ["Bi"]),
    ]:
        calc = CommitteeCalculator.create("mace", elements=elements, n_members=4, device="cpu")
        row = {}
        for k in (1, 8, 89):
            batch = []
            for i in range(k):
                a = structure.copy()
                a.rattle(0.02, seed=i)
                batch.append(a)
            row[str(k)] = (
                timeit(lambda b=batch, c=calc: c.predict_batch(b), max(2, repeat // k)) / k
            )
        rows[name] = row
    return rows


def accuracy(
    quick: bool,
    *,
    hyper: dict[str, Any] | None = None,
    steps: int | None = None,
    bootstrap: bool = True,
    counts: tuple[int, ...] | None = None,
) -> dict:
    """Held-out force MAE of a 4-member committee trained incrementally on more labels.

    Args:
        quick: Smaller pool and test set, 600 steps per call, 16 and 64 labels.
        hyper: MACE hyperparameters that replace the backend's defaults.
        steps: Optimizer steps per call (default 600 quick, 2000 full).
        bootstrap: Each member on its own bootstrap resample (the library default).
        counts: Label counts (default 16, 64, 256; quick 16, 64).
    """
    sizes = (4, 5, 6, 7, 8)
    starts = {n: relax(bi_cluster(n, seed=n)) for n in sizes}
    temps = (300, 600, 900)
    per = 12 if quick else 60
    pool = []
    for n in sizes:
        for t in temps:
            pool += md_frames(starts[n], per, t, every=10, seed=n * 1000 + t)
    test = []
    for n in sizes:
        for t in temps:
            test += md_frames(starts[n], 4, t, every=10, seed=n * 7777 + t)
    rng = np.random.default_rng(0)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    label_counts = counts or ((16, 64) if quick else (16, 64, 256))
    calc = CommitteeCalculator.create(
        "mace", elements=["Bi"], n_members=4, device="cpu", **(hyper or {})
    )

    def mae():
        res = calc.predict_batch(test)
        return float(
            np.mean(
                [
                    np.abs(r["forces"] - a.get_forces()).mean()
                    for r, a in zip(res, test, strict=True)
                ]
            )
        )

    out = {"untrained_force_mae_eV_A": mae(), "n_test": len(test), "by_labels": {}}
    # Incremental, as in a run: each call continues from the last (warm start) with the
    # library's default recipe (cosine decay over a step budget) and a bigger budget.
    steps = steps or (600 if quick else 2000)
    trainer = CommitteeTrainer(calc, TrainerSettings(max_steps=steps, seed=0, bootstrap=bootstrap))
    out["steps_per_call"] = steps
    out["hyper"] = dict(calc.model.hyper)
    out["trainer_settings"] = asdict(trainer.settings)
    for n in label_counts:
        t = time.perf_counter()
        history = trainer.train(pool[:n])
        out["by_labels"][str(n)] = {
            "force_mae_eV_A": mae(),
            "epochs": len(history),
            "train_s": time.perf_counter() - t,
        }
        print(
            f"  {n} labels: force MAE {out['by_labels'][str(n)]['force_mae_eV_A']:.4f} eV/Å "
            f"({len(history)} epochs, {out['by_labels'][str(n)]['train_s']:.0f} s)"
        )
    return out


def _literal(text: str) -> Any:
    """A command-line value as a number or list where it reads as one, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--cost-only",
        action="store_true",
        help="skip the accuracy part; keep the accuracy already in --out",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "committee.json"))
    ap.add_argument(
        "--accuracy-only",
        action="store_true",
        help="only the accuracy part (e.g. with --hyper), written to --out",
    )
    ap.add_argument(
        "--hyper",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="MACE hyperparameters for the accuracy part, e.g. hidden_irreps=32x0e+32x1o",
    )
    ap.add_argument("--steps", type=int, help="optimizer steps per training call (accuracy)")
    ap.add_argument("--counts", type=int, nargs="+", help="label counts (accuracy)")
    ap.add_argument("--no-bootstrap", action="store_true", help="members on the same labels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hyper = {k: _literal(v) for k, v in (h.split("=", 1) for h in args.hyper)}
    acc_kwargs = {
        "hyper": hyper,
        "steps": args.steps,
        "bootstrap": not args.no_bootstrap,
        "counts": tuple(args.counts) if args.counts else None,
    }
    if args.accuracy_only:
        print("Accuracy on held-out 300-900 K xTB MD of Bi4-Bi8:")
        result = {
            "command": "python bench/committee.py" + "".join(f" {a}" for a in sys.argv[1:]),
            "torch": torch.__version__,
            "threads": args.threads,
            "accuracy": accuracy(args.quick, **acc_kwargs),
        }
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
        return
    repeat = 10 if args.quick else 40
    result = {"quick": args.quick, "threads": args.threads, "torch": torch.__version__}
    result["cost_ms"] = cost_table(repeat)
    print("Cost of one prediction (energy+forces, all members), ms; ratio to 1 member:")
    for name, row in result["cost_ms"].items():
        one = row["1 member"]
        ref1 = row.get("mace MACECalculator 1 model")
        for label, ms in row.items():
            if isinstance(ms, str):
                print(f"  {name:8s} {label:34s} {ms}")
                continue
            base = ref1 if label.startswith("mace") and ref1 else one
            print(f"  {name:8s} {label:34s} {ms:8.2f} ms  {ms / base:5.2f}x")
    result["predict_batch_ms_per_structure"] = batch_table(repeat)
    print("predict_batch, 4-member committee, ms per structure:")
    for name, row in result["predict_batch_ms_per_structure"].items():
        print(f"  {name:8s} " + "  ".join(f"{k:>3s}: {v:6.2f}" for k, v in row.items()))
    if args.cost_only:
        previous = Path(args.out)
        if previous.exists():
            result["accuracy"] = json.loads(previous.read_text()).get("accuracy")
    else:
        print("Accuracy on held-out 300-900 K xTB MD of Bi4-Bi8:")
        result["accuracy"] = accuracy(args.quick, **acc_kwargs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
