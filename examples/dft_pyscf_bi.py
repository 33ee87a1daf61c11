"""DFT labels for a small Bi cluster with PySCF (def2-SVP basis + def2 ECP), into a store.

Shows: the :class:`pal_atoms.oracles.PySCF` oracle (the def2 ECP on Bi is picked
automatically with a def2 basis: 60 core electrons per Bi atom replaced), labelling with
:func:`pal_atoms.oracles.label`, and what the store keeps for each record: status,
energy and forces for ``ok`` records, the error text otherwise, the oracle settings
(hashed) and metadata such as the ECP. A label whose SCF does not converge is stored as
``unconverged``, never as data; ``--quick`` adds one deliberately short SCF to show that.

Run::

    python examples/dft_pyscf_bi.py --quick           # CI: Bi2, LDA, < 60 s on 2 cores
    python examples/dft_pyscf_bi.py --size 3 --functional PBE --store bi-dft.h5
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from pal_atoms.dynamics import build_bi_clusters
from pal_atoms.oracles import PySCF, label

from pal_atoms.store import LabelStore


def bi2(bond_A: float) -> Atoms:
    """Bi2 dimer with bond length ``bond_A`` (Å), closed shell."""
    atoms = Atoms("Bi2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, bond_A]])
    atoms.info.update(charge=0, multiplicity=1)
    return atoms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2, help="Bi_n cluster size (2: dimer)")
    p.add_argument("--functional", default="PBE")
    p.add_argument("--basis", default="def2-SVP")
    p.add_argument("--max-cycle", type=int, default=100, help="SCF cycles before unconverged")
    p.add_argument("--store", type=Path, default=Path("bi-dft.h5"))
    p.add_argument("--quick", action="store_true", help="LDA, coarse grid, Bi2 (CI)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = {
        "functional": args.functional,
        "basis": args.basis,
        "max_cycle": args.max_cycle,
        "use_gpu": "auto",
    }
    if args.quick:
        args.size = 2
        settings.update(functional="LDA", grid_level=1, conv_tol_Eh=1e-7, max_cycle=50)
    if args.size == 2:
        structures = [bi2(2.66), bi2(2.80)]
    else:
        structures = build_bi_clusters([args.size], shapes_per_size=2, seed=args.size)
    oracle = PySCF(**settings)
    runs: list[tuple[Atoms, PySCF]] = [(a, oracle) for a in structures]
    if args.quick:
        # Two SCF cycles cannot converge: the label must come back "unconverged".
        runs.append((structures[0], PySCF(**{**settings, "max_cycle": 2})))

    print(f"oracle {oracle.method}, settings {oracle.settings}")
    with LabelStore(args.store) as store:
        for atoms, orc in runs:
            t0 = time.perf_counter()
            lab = label(atoms, orc)
            store.append_label(lab)
            formula = atoms.get_chemical_formula()
            if lab.ok:
                assert lab.forces is not None
                fmax = float(np.linalg.norm(lab.forces, axis=1).max())
                print(
                    f"{formula}: {lab.status}  E = {lab.energy:.6f} eV  max|F| = "
                    f"{fmax:.4f} eV/Å  ({time.perf_counter() - t0:.1f} s)"
                )
            else:
                print(f"{formula}: {lab.status} (kept without numbers): {lab.error}")
        print(f"\nstore {args.store}: {len(store)} records, {store.counts()}")
        for rec in store.read(status=None, start=len(store) - len(runs)):
            info = rec.info
            print(
                f"  record {info['record_index']}: status={info['status']} "
                f"method={info['method']} ecp={info.get('ecp')} "
                f"core_electrons={info.get('ecp_core_electrons')} "
                f"backend={info.get('backend')} settings_hash={info['settings_hash']} "
                f"wall={info['oracle_wall_time_s']:.1f} s"
            )


if __name__ == "__main__":
    main()
