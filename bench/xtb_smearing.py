"""How sharp is each shipped Bi cluster's xTB surface? Forces against electronic smearing.

GFN2-xTB (tblite) smears the occupations at ``electronic_temperature_K`` (300 K by
default). Where frontier levels are near-degenerate, the forces change with that
temperature and the 300 K surface has sharp features (level crossings smoothed over only
~26 meV), which a smooth potential learns slowly. For each starting frame of
``examples/bi_cluster.xyz`` this runs short Langevin MD on xTB at 600 K (the ``make md``
temperature) and compares the forces at 300 K smearing with those at 1000 K.

    python bench/xtb_smearing.py            # 20 frames per system

Writes ``bench/results/xtb_smearing.json`` and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import table, write_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", type=Path, default=ROOT / "examples" / "bi_cluster.xyz")
    p.add_argument("--frames", type=int, default=20, help="MD frames per system")
    p.add_argument("--hot-K", type=float, default=1000.0, help="the second smearing, K")
    args = p.parse_args()

    from ase.io import read
    from pal_atoms.dynamics import reference_md_frames
    from pal_atoms.oracles import XTB

    starts = read(args.system, ":")
    cold, hot = XTB(), XTB(electronic_temperature_K=args.hot_K)
    rows, out = [], []
    for start in starts:
        frames = reference_md_frames(
            cold, [start], n_per_frame=args.frames, temperature_K=600.0, timestep_fs=2.0, seed=1
        )
        f_cold = [a.get_forces() for a in frames]
        f_hot = []
        for a in frames:
            b = a.copy()
            b.calc = hot
            f_hot.append(b.get_forces())
        diff = float(np.mean([np.abs(h - c).mean() for h, c in zip(f_hot, f_cold, strict=True)]))
        size = float(np.mean([np.abs(c).mean() for c in f_cold]))
        name = f"Bi{len(start)}({int(start.info.get('charge', 0)):+d})"
        rows.append([name, size, diff, diff / size])
        out.append({"system": name, "mean_abs_force": size, "mean_abs_change": diff})
    heads = ["system", "mean |F| eV/Å", f"mean |F(300 K) - F({args.hot_K:g} K)| eV/Å", "ratio"]
    print(table(heads, rows))
    payload = {"args": {**vars(args), "system": str(args.system)}, "systems": out}
    print("wrote", write_json("xtb_smearing", payload))


if __name__ == "__main__":
    main()
