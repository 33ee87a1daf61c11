"""Drop-in MD: a saved committee is an ordinary ASE calculator that also reports uncertainty.

Shows: ``CommitteeCalculator.load(DIR)`` attached to atoms like any ASE calculator, a
plain ``Langevin`` run, and the committee's ``energy_std`` (eV) and ``max_force_std``
(eV/Å) printed every N steps through ``get_property``. No oracle runs during the MD.

Run::

    python examples/drop_in_md.py --committee RUN/committee      # a saved committee
    python examples/drop_in_md.py --quick                          # CI: tiny committee

Without ``--committee`` the script first builds a tiny MACE committee and trains it for
a few seconds on GFN2-xTB (tblite) labels of rattled copies of the structure; it says so
in its output. ``--save DIR`` keeps that committee for later runs.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution as thermalize_momenta,  # noqa: N813
    )

from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings
from pal_atoms.dynamics import rattle_sample
from pal_atoms.oracles import XTB, label

HERE = Path(__file__).resolve().parent


def quick_committee(atoms: Atoms, *, n_labels: int, max_steps: int) -> CommitteeCalculator:
    """Tiny MACE committee trained briefly on tblite labels of rattled ``atoms``."""
    elements = sorted(set(atoms.get_chemical_symbols()))
    committee = CommitteeCalculator.create(
        "mace",
        elements=elements,
        charges=[int(atoms.info.get("charge", 0))],
        n_members=3,
        hidden_irreps="8x0e",
        num_interactions=1,
        device="cpu",
    )
    oracle = XTB()
    frames = rattle_sample(atoms, n_labels, rattle_std_A=0.08, seed=1)
    labelled = [lab.to_atoms() for lab in (label(a, oracle) for a in frames) if lab.ok]
    settings = TrainerSettings(max_epochs=200, max_steps=max_steps, lr=1e-2, batch_size=4)
    CommitteeTrainer(committee, settings).train(labelled)
    return committee


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--committee", type=Path, help="folder of a saved committee")
    p.add_argument("--structure", type=Path, default=HERE / "bi_cluster.xyz")
    p.add_argument("--index", type=int, default=0, help="frame of --structure to run")
    p.add_argument("--steps", type=int, default=500, help="MD steps")
    p.add_argument("--interval", type=int, default=50, help="print every N steps")
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--timestep-fs", type=float, default=2.0)
    p.add_argument("--save", type=Path, help="save the quickly trained committee here")
    p.add_argument("--quick", action="store_true", help="short settings (CI)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.interval = 40, 10

    atoms = ase.io.read(args.structure, index=args.index)
    assert isinstance(atoms, Atoms)
    t0 = time.perf_counter()
    if args.committee is not None:
        committee = CommitteeCalculator.load(args.committee, device="cpu")
        print(f"loaded a {committee.n_members}-member committee from {args.committee}")
    else:
        n_labels, max_steps = (12, 30) if args.quick else (32, 300)
        print(
            f"no --committee given: training a tiny MACE committee on {n_labels} tblite "
            f"labels of rattled {atoms.get_chemical_formula()} ({max_steps} steps) ..."
        )
        committee = quick_committee(atoms, n_labels=n_labels, max_steps=max_steps)
        print(f"  done in {time.perf_counter() - t0:.1f} s (a demo model, not a good one)")
        if args.save is not None:
            committee.save(args.save)
            print(f"  saved to {args.save}")

    # From here on: an ordinary ASE MD script.
    atoms.calc = committee
    rng = np.random.default_rng(0)
    thermalize_momenta(atoms, temperature_K=args.temperature_K, rng=rng)
    dyn = Langevin(
        atoms,
        timestep=args.timestep_fs * units.fs,
        temperature_K=args.temperature_K,
        friction=0.02 / units.fs,
        fixcm=False,
        rng=rng,
    )

    def report() -> None:
        calc = atoms.calc
        assert calc is not None
        print(
            f"step {dyn.nsteps:5d}  E = {atoms.get_potential_energy():12.4f} eV  "
            f"energy_std = {calc.get_property('energy_std', atoms):.4f} eV  "
            f"max_force_std = {calc.get_property('max_force_std', atoms):.4f} eV/Å  "
            f"T = {atoms.get_temperature():6.1f} K"
        )

    dyn.attach(report, interval=args.interval)
    t1 = time.perf_counter()
    dyn.run(args.steps)
    print(f"{args.steps} MD steps in {time.perf_counter() - t1:.1f} s")


if __name__ == "__main__":
    main()
