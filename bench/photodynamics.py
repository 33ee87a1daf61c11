"""Photodynamics benchmark: cost per excited-state label, and what surface hopping labels buy.

Usage:
    python bench/photodynamics.py cost [--out bench/results/photodynamics_cost.json]
    python bench/photodynamics.py accuracy --sh-run RUN_DIR [--steps 1500]
        [--trajectory-test 4 --trajectory-stride 5 --duration-fs 15]
        [--out bench/results/photodynamics_accuracy.json]
    python bench/photodynamics.py populations --sh-run RUN_DIR [--trajectories 6]
        [--duration-fs 15] [--out bench/results/photodynamics_populations.json]

``cost``: wall time of one label (S0-S2 energies and forces of every state) of the shipped
formaldehyde (``examples/formaldehyde.xyz``), median over three rattled geometries after a
warm-up, for several functional/basis pairs.

``accuracy``: held-out force MAE of every state for two committees trained with the same
budget (fresh weights, same seed, same number of labels): one on the labels of a
``pal-atoms sh`` run (``--sh-run``: its bootstrap Wigner samples and the geometries its
surface-hopping trajectories sent to the oracle), one on random frames of ground-state
Langevin MD at 600 K (labelled by the same oracle). Two test sets, which neither training
set contains: Wigner samples of the ground-state minimum at 300 K, and (``--trajectory-test
N``) every ``--trajectory-stride``-th frame of N surface-hopping trajectories run directly on
the oracle from fresh Wigner draws on the highest state, i.e. the geometries the
photodynamics visits.

``populations``: the same Wigner initial conditions propagated by Landau-Zener surface
hopping twice, on the run's final committee and directly on the oracle (every step an
oracle call); the populations at the end, with their binomial standard errors.

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _oracle(functional: str, basis: str) -> Any:
    from pal_atoms.oracles import make_oracle

    return make_oracle("pyscf-excited", functional=functional, basis=basis, n_states=3)


def cost(args: argparse.Namespace) -> dict[str, Any]:
    import ase.io
    from pal_atoms.oracles import label

    base = ase.io.read(ROOT / "examples" / "formaldehyde.xyz")
    rows = []
    for functional, basis in [("B3LYP", "6-31G*"), ("B3LYP", "sto-3g"), ("PBE0", "6-31G")]:
        oracle = _oracle(functional, basis)
        label(base, oracle)  # warm-up: imports, grids
        times = []
        for seed in range(3):
            atoms = base.copy()
            atoms.rattle(0.03, seed=seed)
            t0 = time.perf_counter()
            lab = label(atoms, oracle)
            times.append(time.perf_counter() - t0)
            assert lab.ok, lab.error
        rows.append(
            {
                "method": f"{functional}/{basis}",
                "label_s": statistics.median(times),
                "excitation_eV": (lab.state_energies - lab.state_energies[0]).tolist(),
            }
        )
        print(f"{functional}/{basis:8s} {statistics.median(times):6.2f} s per label", flush=True)
    return {"cost": rows}


def _train(labels: list[Any], steps: int, seed: int) -> Any:
    from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings

    committee = CommitteeCalculator.create(
        "mace", elements=["H", "C", "O"], n_members=4, n_states=3, seed=seed, device="cpu"
    )
    settings = TrainerSettings(max_steps=steps, max_epochs=100_000, patience_steps=steps, seed=seed)
    CommitteeTrainer(committee, settings).train(labels)
    return committee


def _oracle_sh_settings(
    config: dict[str, Any], n_states: int, duration_fs: float, n: int, seed: int
) -> Any:
    """Surface hopping from the highest state, at the run's time step, never aborted."""
    from pal_atoms.dynamics.surface_hopping import SurfaceHoppingSettings

    return SurfaceHoppingSettings(
        initial_state=n_states - 1,
        timestep_fs=config["timestep_fs"],
        duration_fs=duration_fs,
        n_trajectories=n,
        patience=10**9,
        seed=seed,
    )


def _trajectory_frames(
    modes: Any, oracle: Any, args: argparse.Namespace, config: dict[str, Any]
) -> list[Any]:
    """Labelled frames of surface-hopping trajectories propagated on the oracle itself."""
    from pal_atoms.dynamics.surface_hopping import SurfaceHoppingGenerator
    from pal_atoms.oracles import label

    from pal_atoms.core.protocols import Verdict
    from pal_atoms.workflow.local_client import LocalClient

    seen: list[Any] = []

    def keep(atoms: Any, results: Any) -> Verdict:
        seen.append(atoms.copy())
        return Verdict.TRUSTED

    # Seed 23: not the populations part's draws (11) nor a run's (its --seed).
    settings = _oracle_sh_settings(
        config, oracle.n_states, args.duration_fs, args.trajectory_test, seed=23
    )
    SurfaceHoppingGenerator(modes, settings=settings).run(LocalClient(oracle, rule=keep))
    picked = seen[args.trajectory_stride :: args.trajectory_stride]
    labels = [label(a, oracle) for a in picked]
    return [lab.to_atoms() for lab in labels if lab.ok]


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from pal_atoms.dynamics.wigner import NormalModes, wigner_sample
    from pal_atoms.oracles import label

    from pal_atoms.jobs.sh import state_force_mae
    from pal_atoms.store import LabelStore

    run = Path(args.sh_run)
    config = json.loads((run / "config.json").read_text())
    functional = config.get("method") or "B3LYP"
    basis = config.get("basis") or "6-31G*"
    oracle = _oracle(functional, basis)
    modes = NormalModes.from_dict(json.loads((run / "normal_modes.json").read_text()))
    with LabelStore(run / "labels.h5", mode="r") as store:
        al = store.read()
    n = len(al)
    rng = np.random.default_rng(7)
    print(f"labelling {args.test} held-out Wigner samples at 300 K", flush=True)
    test = []
    for _ in range(args.test):
        lab = label(wigner_sample(modes, rng, temperature_K=300.0), oracle)
        if lab.ok:
            test.append(lab.to_atoms())
    tests = {"Wigner 300 K": test}
    if args.trajectory_test:
        print(f"{args.trajectory_test} surface-hopping trajectories on the oracle", flush=True)
        tests["oracle SH trajectories"] = _trajectory_frames(modes, oracle, args, config)
    # Random frames of ground-state MD (the usual cheap alternative), same count as AL.
    md = modes.atoms.copy()
    md.calc = oracle.ground_state()
    MaxwellBoltzmannDistribution(md, temperature_K=600, rng=np.random.default_rng(3))
    dyn = Langevin(md, 0.5 * units.fs, temperature_K=600, friction=0.02 / units.fs)
    frames = []
    stride = 4
    print(f"ground-state MD: {n * stride} steps, every {stride}th frame labelled", flush=True)
    for _ in range(n):
        dyn.run(stride)
        lab = label(md, oracle)
        if lab.ok:
            frames.append(lab.to_atoms())
    rows = []
    for name, labels in (("surface hopping (AL)", al), ("ground-state MD (random)", frames)):
        committee = _train(labels, args.steps, seed=0)
        for test_name, frames_ in tests.items():
            maes = state_force_mae(committee, frames_)
            assert maes is not None
            rows.append(
                {"labels": name, "n": len(labels), "test": test_name, "state_force_mae_eV_A": maes}
            )
            print(
                f"{name:26s} n={len(labels):4d}  {test_name:24s}"
                + "  ".join(f"S{i} {m:.3f}" for i, m in enumerate(maes)),
                flush=True,
            )
    return {
        "accuracy": rows,
        "method": f"{functional}/{basis}",
        "n_test": {k: len(v) for k, v in tests.items()},
        "train_steps": args.steps,
    }


def populations(args: argparse.Namespace) -> dict[str, Any]:
    from pal_atoms.calculators import CommitteeCalculator
    from pal_atoms.dynamics.surface_hopping import (
        SurfaceHoppingGenerator,
    )
    from pal_atoms.dynamics.surface_hopping import (
        populations as average,
    )
    from pal_atoms.dynamics.wigner import NormalModes

    from pal_atoms.core.protocols import Verdict
    from pal_atoms.workflow.local_client import LocalClient

    run = Path(args.sh_run)
    config = json.loads((run / "config.json").read_text())
    oracle = _oracle(config.get("method") or "B3LYP", config.get("basis") or "6-31G*")
    modes = NormalModes.from_dict(json.loads((run / "normal_modes.json").read_text()))
    committee = CommitteeCalculator.load(run / "committee", device="cpu")
    n_states = committee.n_states
    settings = _oracle_sh_settings(config, n_states, args.duration_fs, args.trajectories, seed=11)
    out: dict[str, Any] = {"trajectories": args.trajectories, "duration_fs": args.duration_fs}
    for name, calc in (("committee", committee), ("oracle", oracle)):
        client = LocalClient(calc, rule=lambda atoms, results: Verdict.TRUSTED)
        gen = SurfaceHoppingGenerator(modes, settings=settings)
        t0 = time.perf_counter()
        gen.run(client)
        counts, pops = average(gen.trajectories, n_states)
        final = pops[-1]
        stderr = np.sqrt(final * (1 - final) / max(1, counts[-1]))
        out[name] = {
            "final_populations": final.tolist(),
            "standard_error": stderr.tolist(),
            "hops": sum(not h["frustrated"] for h in gen.hops),
            "wall_s": time.perf_counter() - t0,
        }
        print(
            f"{name:10s} "
            + "  ".join(
                f"S{i} {p:.2f}±{e:.2f}" for i, (p, e) in enumerate(zip(final, stderr, strict=True))
            )
            + f"  ({out[name]['hops']} hops, {out[name]['wall_s']:.0f} s)",
            flush=True,
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--out", type=Path, default=ROOT / "bench/results/photodynamics_cost.json")
    a = sub.add_parser("accuracy")
    a.add_argument("--sh-run", required=True)
    a.add_argument("--test", type=int, default=16)
    a.add_argument("--steps", type=int, default=1500)
    a.add_argument(
        "--trajectory-test", type=int, default=0, help="oracle SH trajectories for a test set"
    )
    a.add_argument("--trajectory-stride", type=int, default=5, help="every k-th step of those")
    a.add_argument("--duration-fs", type=float, default=15.0)
    a.add_argument("--out", type=Path, default=ROOT / "bench/results/photodynamics_accuracy.json")
    q = sub.add_parser("populations")
    q.add_argument("--sh-run", required=True)
    q.add_argument("--trajectories", type=int, default=6)
    q.add_argument("--duration-fs", type=float, default=15.0)
    q.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/photodynamics_populations.json"
    )
    args = p.parse_args()
    result = {"cost": cost, "accuracy": accuracy, "populations": populations}[args.part](args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
