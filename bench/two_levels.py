"""Two oracle levels on a radical H transfer: how best to use cheap xTB labels for DFT?

System: the shipped CH4 + CH3 radical complex (doublet, ``examples/hat_methyl.xyz``).
Geometries: steered xTB MD along ``d(C0-H1) - d(C2-H1)`` across the transfer (several
seeds), every ``--every``-th frame. Every geometry gets an xTB label (GFN2, tblite); a
random subset gets DFT labels (PySCF UKS, ``--functional``/``--basis``) for training and
others for the test set. At equal DFT labels and equal optimizer steps, three committees:

- ``dft only``: trained on the DFT labels;
- ``pre-train + fine-tune``: trained on all xTB labels, then on the DFT labels (E0s and
  scale refitted);
- ``delta``: trained on DFT - xTB (:func:`~pal_atoms.calculators.delta_labels`) and used
  as xTB + correction (:class:`~pal_atoms.calculators.DeltaCalculator`).

plus xTB itself as the cheap baseline. Errors against DFT on the test geometries: force
MAE, energy MAE after removing the mean offset (energies relative along the path matter
for a barrier), and the error of the highest-energy test geometry relative to the lowest
(a barrier proxy).

    python bench/two_levels.py --quick   # 16 DFT training labels, 12 test, 600 steps
    python bench/two_levels.py           # 32 / 16, 1,500 steps

Writes ``bench/results/two_levels[_quick].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from _common import table, write_json

ROOT = Path(__file__).resolve().parents[1]
HAT = ROOT / "examples" / "hat_methyl.xyz"


def _tblite() -> Any:
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", multiplicity=2, verbosity=0)


def _pool(seeds: int, steps: int, every: int) -> list[Any]:
    """Geometries of steered xTB MD across the transfer, with xTB labels."""
    import ase.io
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from pal_atoms.dynamics import BiasCalculator, DistanceCV, UmbrellaBias

    out = []
    for seed in range(seeds):
        a = ase.io.read(HAT)
        cv = DistanceCV.transfer(0, 1, 2)
        s0 = cv(a)
        bias = UmbrellaBias(
            cv=cv, k_eV_A2=5.0, center_A=s0, end_center_A=-s0, steer_steps=int(0.8 * steps)
        )
        calc = BiasCalculator(_tblite(), bias)
        a.calc = calc
        rng = np.random.default_rng(seed)
        MaxwellBoltzmannDistribution(a, temperature_K=300.0, rng=rng)
        dyn = Langevin(a, 0.5 * units.fs, temperature_K=300.0, friction=0.02, rng=rng)
        for step in range(steps):
            calc.step = step
            dyn.run(1)
            if step % every == 0:
                b = a.copy()
                b.info = dict(a.info)
                b.info["cv"] = calc.results["cv"]
                b.calc = SinglePointCalculator(
                    b,
                    energy=calc.results["unbiased_energy"],
                    forces=calc.results["forces"] - bias.energy_and_forces(a.positions, step)[1],
                )
                out.append(b)
    return out


def _dft(args: tuple[Any, str, str]) -> Any:
    from pal_atoms.oracles import label, make_oracle

    atoms, functional, basis = args
    lab = label(atoms, make_oracle("pyscf", functional=functional, basis=basis))
    return lab if lab.ok else None


def _train(labels: list[Any], steps: int, seed: int, committee: Any = None) -> Any:
    from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings

    if committee is None:
        committee = CommitteeCalculator.create(
            "mace", elements=["C", "H"], multiplicities=[2], n_members=4, seed=seed, device="cpu"
        )
    settings = TrainerSettings(max_steps=steps, validation_fraction=0, refit_e0=True, seed=seed)
    CommitteeTrainer(committee, settings).train(labels)
    return committee


def _errors(calc: Any, test: list[Any]) -> dict[str, float]:
    pred_e, pred_f, ref_e, ref_f = [], [], [], []
    for a in test:
        b = a.copy()
        b.info = dict(a.info)
        b.calc = calc
        pred_e.append(b.get_potential_energy())
        pred_f.append(b.get_forces())
        ref_e.append(a.get_potential_energy())
        ref_f.append(a.get_forces())
    pe, re = np.array(pred_e), np.array(ref_e)
    de = (pe - pe.mean()) - (re - re.mean())
    hi, lo = int(np.argmax(re)), int(np.argmin(re))
    return {
        "force_mae": float(np.mean(np.abs(np.array(pred_f) - np.array(ref_f)))),
        "energy_mae_rel": float(np.mean(np.abs(de))),
        "barrier_error": float((pe[hi] - pe[lo]) - (re[hi] - re[lo])),
        "barrier_ref": float(re[hi] - re[lo]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--functional", default="PBE")
    p.add_argument("--basis", default="6-31G")
    p.add_argument("--train", type=int, default=None, help="DFT training labels")
    p.add_argument("--test", type=int, default=None, help="DFT test labels")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per training")
    p.add_argument("--every", type=int, default=10, help="MD frames between pool geometries")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    n_train = args.train or (16 if args.quick else 32)
    n_test = args.test or (12 if args.quick else 16)
    steps = args.steps or (600 if args.quick else 1500)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from pal_atoms.calculators import DeltaCalculator, delta_labels

    t0 = time.monotonic()
    pool = _pool(seeds=4, steps=300, every=args.every)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(pool))
    picked = [pool[i] for i in order[: n_train + n_test]]
    with get_context("spawn").Pool(2) as workers:
        dft = workers.map(_dft, [(a, args.functional, args.basis) for a in picked])
    dft_s = time.monotonic() - t0
    ok = [lab.to_atoms() for lab in dft if lab is not None]
    train, test = ok[:n_train], ok[n_train:]
    xtb_train = [pool[i] for i in order[n_train + n_test :]] + picked[:n_train]
    results: dict[str, Any] = {"pool": len(pool), "dft_failed": len(dft) - len(ok)}
    results["xtb"] = _errors(_tblite(), test)
    timings = {}
    t = time.monotonic()
    results["dft only"] = _errors(_train(train, steps, args.seed), test)
    timings["dft only"] = time.monotonic() - t
    t = time.monotonic()
    pre = _train(xtb_train, steps, args.seed)
    results["pre-train + fine-tune"] = _errors(_train(train, steps, args.seed, pre), test)
    timings["pre-train + fine-tune"] = time.monotonic() - t
    t = time.monotonic()
    delta = _train(delta_labels(train, _tblite()), steps, args.seed)
    results["delta"] = _errors(DeltaCalculator(_tblite(), delta), test)
    timings["delta"] = time.monotonic() - t
    rows = [
        [name, r["force_mae"], r["energy_mae_rel"], r["barrier_error"], timings.get(name, 0.0)]
        for name, r in results.items()
        if isinstance(r, dict)
    ]
    headers = ["method", "force MAE eV/Å", "rel. energy MAE eV", "barrier err eV", "train s"]
    print(table(headers, rows))
    print(
        f"{len(pool)} xTB geometries, {len(train)} DFT training / {len(test)} test labels "
        f"({args.functional}/{args.basis}, {dft_s:.0f} s incl. MD), barrier proxy "
        f"{results['xtb']['barrier_ref']:.3f} eV"
    )
    out = write_json(
        "two_levels_quick" if args.quick else "two_levels",
        {"args": vars(args), "n_train": len(train), "n_test": len(test), "steps": steps,
         "dft_s": dft_s, "results": results, "train_s": timings},
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
