"""Barrier error against the expensive oracle vs expensive labels, with and without xTB.

The ``pal-atoms reaction`` workflow on a radical H transfer (``examples/hat_methyl.xyz``
by default; ``--system examples/hat_glycine.xyz`` for the peptide):

1. the cheap level as the job runs it: active learning on steered MD with GFN2-xTB
   (``--cheap-time`` s), giving the cheap committee and the cheap labels;
2. a fixed reference path: adiabatic mapping on xTB (``--images`` images), labelled by
   the expensive oracle (PySCF UKS, ``--functional``/``--basis``): the reference barrier
   and forces on the same geometries for every method;
3. for each expensive budget N (``--budgets``), the structures the job would pick
   (:func:`~pal_atoms.jobs.levels.select_high`: the path's highest and first images,
   further images, then the most uncertain cheap-level structures), labelled by the
   expensive oracle, and three committees trained on them with the same optimizer
   steps (``--steps``):

   - ``expensive only``: a fresh committee on the N expensive labels (case (a) of the
     issue; the same selected structures, so the comparison is at equal labels);
   - ``fine-tune``: the cheap committee trained further on them (case (b));
   - ``delta``: a committee on expensive - xTB, used as xTB + correction (case (b)).

Errors, as the job reports them: each committee's own path (``--eval-images`` images, a
different count from the training path's, so most of its centres are new), labelled by
the expensive oracle; the committee's barrier (highest image less the first) against the
expensive oracle's on those same geometries, the force MAE there and, as the job's
``path_check``, the observed force RMSE over the predicted spread and Spearman of
``max_force_std`` against the largest force error per image. ``expensive only``
gets the structures that the cheap level chose, so this measures how each committee
learns from them, not a selection made without the cheap level. Target (issue): within
0.043 eV with at most 1/3 of the expensive labels that ``expensive only`` needs.

    python bench/reaction.py --quick    # budgets 4 8, 300 steps, 90 s cheap run
    python bench/reaction.py            # budgets 4 8 16 32, 600 steps, 240 s

Writes ``bench/results/reaction[_quick][_<system>].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from _common import table, write_json

ROOT = Path(__file__).resolve().parents[1]
TARGET_EV = 0.043


def _label(args: tuple[Any, str, str]) -> Any:
    from pal_atoms.oracles import label, make_oracle

    atoms, functional, basis = args
    lab = label(atoms, make_oracle("pyscf", functional=functional, basis=basis))
    return lab.to_atoms() if lab.ok else None


def _key(atoms: Any) -> bytes:
    return np.round(atoms.positions, 6).tobytes()


def _errors(calc: Any, ref: list[Any]) -> dict[str, float]:
    from pal_atoms.dynamics import barrier

    energies, forces = [], []
    for a in ref:
        b = a.copy()
        b.info = dict(a.info)
        b.calc = calc
        energies.append(b.get_potential_energy())
        forces.append(b.get_forces())
    ref_e = [a.get_potential_energy() for a in ref]
    ref_f = np.array([a.get_forces() for a in ref])
    return {
        "barrier_eV": barrier(energies),
        "barrier_error_eV": barrier(energies) - barrier(ref_e),
        "force_mae_eV_A": float(np.mean(np.abs(np.array(forces) - ref_f))),
    }


def main() -> None:  # noqa: PLR0915  (one linear script)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--system", type=Path, default=ROOT / "examples" / "hat_methyl.xyz")
    p.add_argument("--functional", default="PBE")
    p.add_argument("--basis", default="6-31G")
    p.add_argument("--budgets", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per training")
    p.add_argument("--cheap-time", type=float, default=None, help="cheap-level loop, s")
    p.add_argument("--images", type=int, default=9, help="images of the xTB path")
    p.add_argument("--eval-images", type=int, default=12, help="images of a committee's path")
    p.add_argument("--committee", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    budgets = args.budgets or ([4, 8] if args.quick else [4, 8, 16, 32])
    steps = args.steps or (300 if args.quick else 600)
    cheap_time = args.cheap_time or (90.0 if args.quick else 240.0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    import torch
    from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings
    from pal_atoms.dynamics import DistanceCV, PathSettings, transfer_path
    from pal_atoms.oracles import make_oracle

    from pal_atoms.jobs.levels import HighLevelLearning, learn_high, select_high
    from pal_atoms.jobs.md import run_md
    from pal_atoms.jobs.plot_calibration import calibration_report
    from pal_atoms.jobs.reaction import ReactionRunConfig, check_transfers
    from pal_atoms.store import LabelStore

    torch.set_num_threads(2)
    out = Path(tempfile.mkdtemp(prefix="pal-reaction-bench-")) / "run"
    config = ReactionRunConfig(
        system=args.system, out=out, np=1, committee=args.committee, time_limit_s=cheap_time,
        final_check_ps=0.0, seed=args.seed,
    )  # fmt: skip
    t0 = time.monotonic()
    summary = run_md(config)  # step 1 of the job: the cheap level
    assert summary is not None
    cheap_s = time.monotonic() - t0
    cheap = make_oracle("xtb")
    frame = ase.io.read(args.system)
    frame.info.setdefault("multiplicity", 2)
    cv = DistanceCV.transfer(*check_transfers(config, [frame])[0])
    xtb_path = transfer_path(cheap, frame, cv, settings=PathSettings(images=args.images))
    committee = CommitteeCalculator.load(out / "committee", device="cpu")
    with LabelStore(out / "labels.h5", mode="r") as store:
        pool = list(store.read(status="ok"))
    picks = {n: select_high(committee, [xtb_path], pool, n) for n in budgets}
    todo: dict[bytes, Any] = {_key(a): a for a in xtb_path}
    for chosen in picks.values():
        todo.update({_key(a): a for a in chosen})
    t = time.monotonic()
    with get_context("spawn").Pool(2) as workers:
        done = workers.map(_label, [(a, args.functional, args.basis) for a in todo.values()])
    expensive_s = time.monotonic() - t
    labelled = {k: v for k, v in zip(todo, done, strict=True) if v is not None}
    ref = [labelled[_key(a)] for a in xtb_path]
    eval_settings = PathSettings(images=args.eval_images)
    t_eval = 0.0

    def on_own_path(calc: Any) -> dict[str, float]:
        """Errors on ``calc``'s own path, labelled by the expensive oracle."""
        nonlocal t_eval
        own = transfer_path(calc, frame, cv, settings=eval_settings)
        t = time.monotonic()
        with get_context("spawn").Pool(2) as workers:
            done = workers.map(_label, [(a, args.functional, args.basis) for a in own])
        t_eval += time.monotonic() - t
        if any(d is None for d in done):
            return {"barrier_eV": float("nan"), "barrier_error_eV": float("nan"),
                    "force_mae_eV_A": float("nan"), "rmse_over_std": float("nan"),
                    "spearman_max_force_std": float("nan")}  # fmt: skip
        err = _errors(calc, done)
        err["expensive_barrier_eV"] = err["barrier_eV"] - err["barrier_error_eV"]
        if hasattr(calc, "predict_batch"):  # the job's path_check: is the spread calibrated?
            check = calibration_report(calc, done)
            err.update({k: check[k] for k in ("rmse_over_std", "spearman_max_force_std")})
        return err

    results: dict[str, Any] = {
        "xtb": _errors(cheap, ref),
        "cheap committee": on_own_path(committee),
    }
    rows = []
    for n, chosen in picks.items():
        labels = [labelled[_key(a)] for a in chosen if _key(a) in labelled]
        fresh = CommitteeCalculator.load(out / "committee", device="cpu")
        CommitteeTrainer(
            fresh,
            TrainerSettings(max_steps=steps, validation_fraction=0.0, refit_e0=True,
                            reinitialise=True, seed=args.seed),
        ).train(labels)  # fmt: skip
        runs = {"expensive only": fresh}
        for how in HighLevelLearning:
            runs[how.value] = learn_high(
                how, labels, cheap_committee_dir=out / "committee",
                out_dir=out.parent / f"{how.value}_{n}", cheap_oracle=cheap, steps=steps,
                seed=args.seed, device="cpu",
            )  # fmt: skip
        for name, calc in runs.items():
            err = on_own_path(calc)
            results[f"{name} N={n}"] = {**err, "labels": len(labels)}
            rows.append([name, len(labels), err["barrier_error_eV"], err["force_mae_eV_A"],
                         err["rmse_over_std"], err["spearman_max_force_std"]])  # fmt: skip
    for name in ("xtb", "cheap committee"):
        r = results[name]
        rows.append([name, 0, r["barrier_error_eV"], r["force_mae_eV_A"],
                     r.get("rmse_over_std"), r.get("spearman_max_force_std")])  # fmt: skip
    rows = [["-" if v is None else v for v in row] for row in rows]
    print(table(["method", "expensive labels", "barrier err eV", "force MAE eV/Å",
                 "RMSE/spread", "Spearman"], rows))  # fmt: skip

    def needed(name: str) -> int | None:
        ok = [n for n in budgets if abs(results[f"{name} N={n}"]["barrier_error_eV"]) <= TARGET_EV]
        return min(ok) if ok else None

    verdict = {
        name: needed(name) for name in ("expensive only", *(h.value for h in HighLevelLearning))
    }
    ref_barrier = results["xtb"]["barrier_eV"] - results["xtb"]["barrier_error_eV"]
    print(
        f"reference barrier ({args.functional}/{args.basis}) {ref_barrier:.3f} eV, xTB "
        f"{results['xtb']['barrier_eV']:.3f} eV; {summary.labels_ok} cheap labels in "
        f"{cheap_s:.0f} s; {len(labelled)} expensive training/reference labels in "
        f"{expensive_s:.0f} s, evaluation labels in {t_eval:.0f} s"
    )
    print(f"fewest expensive labels within {TARGET_EV} eV: {verdict}")
    name = ("reaction_quick" if args.quick else "reaction") + (
        "" if args.system.stem == "hat_methyl" else f"_{args.system.stem}"
    )
    path = write_json(
        name,
        {"args": {k: str(v) for k, v in vars(args).items()}, "budgets": budgets, "steps": steps,
         "cheap_labels": summary.labels_ok, "cheap_s": cheap_s, "expensive_s": expensive_s,
         "reference_barrier_eV": ref_barrier, "results": results, "fewest_within_target": verdict},
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
