"""On-the-fly active learning: a plain ASE Langevin script with one line changed.

Shows: ``atoms.calc = OnTheFlyCalculator(committee, XTB(), "labels.h5", ...)`` instead of
``atoms.calc = committee``. Trusted steps use the committee; untrusted ones are labelled
by GFN2-xTB (tblite), stored in the label store with their provenance, and used for the
step, so the trajectory stays on the reference surface. Every ``--retrain-size`` labels
the committee is retrained in a background thread and its new weights are swapped in.

Run::

    python examples/on_the_fly_md.py --quick                  # CI: 40 steps
    python examples/on_the_fly_md.py --steps 2000 --store labels.h5 --committee DIR

Without ``--committee`` it starts from an untrained tiny MACE committee (so the first
steps all go to the oracle). Afterwards ``pal-atoms status labels.h5`` lists the store.
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

from pal_atoms.calculators import (
    CommitteeCalculator,
    CommitteeTrainer,
    OnTheFlyCalculator,
    TrainerSettings,
)
from pal_atoms.oracles import XTB

from pal_atoms.store import LabelStore
from pal_atoms.workflow.selection import TrustWindow

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--structure", type=Path, default=HERE / "bi_cluster.xyz")
    p.add_argument("--index", type=int, default=0, help="frame of --structure to run")
    p.add_argument("--committee", type=Path, help="saved committee (default: untrained)")
    p.add_argument("--store", type=Path, default=Path("otf-labels.h5"), help="label store")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--energy-std", type=float, default=0.06, help="trust bound, eV")
    p.add_argument("--retrain-size", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="short settings (CI)")
    args = p.parse_args()
    if args.quick:
        args.steps, args.retrain_size = 40, 6
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("e3nn", "mace", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(1)

    atoms = ase.io.read(args.structure, index=args.index)
    assert isinstance(atoms, Atoms)
    if args.committee is not None:
        committee = CommitteeCalculator.load(args.committee, device="cpu")
    else:
        committee = CommitteeCalculator.create(
            "mace",
            elements=sorted(set(atoms.get_chemical_symbols())),
            charges=[int(atoms.info.get("charge", 0))],
            n_members=3,
            hidden_irreps="8x0e",
            num_interactions=1,
            device="cpu",
        )
    trainer = CommitteeTrainer(
        committee, TrainerSettings(max_epochs=40, max_steps=40, lr=1e-2, batch_size=4)
    )

    # --- the one changed line: atoms.calc = committee  ->  atoms.calc = OnTheFlyCalculator(...)
    atoms.calc = otf = OnTheFlyCalculator(
        committee,
        XTB(),
        args.store,
        # energy_std separates an untrained committee from a trained one better than
        # max_force_std, which can be small for an untrained model.
        selection=TrustWindow(key="energy_std", lower=args.energy_std, upper=1e3),
        trainer=trainer,
        retrain_size=args.retrain_size,
    )
    # --- the rest is an ordinary ASE Langevin script.
    rng = np.random.default_rng(0)
    thermalize_momenta(atoms, temperature_K=args.temperature_K, rng=rng)
    dyn = Langevin(
        atoms,
        timestep=2.0 * units.fs,
        temperature_K=args.temperature_K,
        friction=0.02 / units.fs,
        fixcm=False,
        rng=rng,
    )
    t0 = time.perf_counter()
    with otf:  # close(): waits for a running training round, closes the store
        dyn.run(args.steps)
    stats = otf.stats()
    print(
        f"{args.steps} MD steps in {time.perf_counter() - t0:.1f} s: {stats['trusted']} of "
        f"{stats['calls']} force calls trusted, {stats['labels']} labels stored "
        f"({stats['failed']} failed), {stats['training_rounds']} training rounds"
    )
    with LabelStore(args.store, mode="r") as store:
        print(f"store {args.store}: {len(store)} records, {store.counts()}")


if __name__ == "__main__":
    main()
