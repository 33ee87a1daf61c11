"""Build ``hat_glycine.xyz``: a methyl radical abstracting the Cα-H of capped glycine.

Ac-Gly-NHMe (the glycine dipeptide: CH3-CO-NH-CH2-CO-NH-CH3, extended backbone, trans
peptide bonds) with a methyl radical 2.4 Å from one of its Cα hydrogens, on the Cα-H axis.
The H moves from Cα (donor) to the methyl carbon (acceptor): the Cα radical that forms is
the one that, in collagen, starts the hydrogen-atom transfers of PAL's section 3.2. 23
atoms, neutral doublet. The geometry is then relaxed with GFN2-xTB under a restraint that
holds the transfer coordinate ``d(Cα-H) - d(C-H)`` at its start, so the methyl stays in
place, and written with ``transfer=Cα,H,C`` in the comment line.

Run::

    python examples/build_hat_glycine.py                 # writes examples/hat_glycine.xyz
    python examples/build_hat_glycine.py --out x.xyz     # elsewhere
    python examples/build_hat_glycine.py --quick         # built geometry, not relaxed
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms


def _place(  # noqa: PLR0917  (a z-matrix row)
    a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, dihedral: float
) -> np.ndarray:
    """Position of D with |CD| = bond, angle BCD and dihedral ABCD in degrees (NeRF)."""
    theta, phi = np.radians(angle), np.radians(dihedral)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = np.array(
        [
            -bond * np.cos(theta),
            bond * np.sin(theta) * np.cos(phi),
            bond * np.sin(theta) * np.sin(phi),
        ]
    )
    return c + d[0] * bc + d[1] * m + d[2] * n


def dipeptide() -> tuple[Atoms, int, int]:
    """Ac-Gly-NHMe; returns it, the index of Cα and of the Cα hydrogen to transfer."""
    pos: dict[str, np.ndarray] = {
        "C1": np.array([0.0, 0.0, 0.0]),
        "C2": np.array([1.52, 0.0, 0.0]),
    }
    pos["O2"] = pos["C2"] + 1.23 * np.array([np.cos(np.radians(59)), np.sin(np.radians(59)), 0.0])
    z = [  # name, (a, b, c), bond Å, angle, dihedral
        ("N3", ("O2", "C1", "C2"), 1.33, 115.0, 180.0),
        ("HN", ("C1", "C2", "N3"), 1.01, 119.0, 0.0),
        ("CA", ("C1", "C2", "N3"), 1.45, 122.0, 180.0),
        ("C4", ("C2", "N3", "CA"), 1.52, 110.0, 180.0),
        ("O4", ("N3", "CA", "C4"), 1.23, 121.0, 0.0),
        ("N5", ("N3", "CA", "C4"), 1.33, 116.0, 180.0),
        ("HN5", ("CA", "C4", "N5"), 1.01, 119.0, 0.0),
        ("C6", ("CA", "C4", "N5"), 1.45, 122.0, 180.0),
        ("HA1", ("C4", "N3", "CA"), 1.09, 109.5, 120.0),
        ("HA2", ("C4", "N3", "CA"), 1.09, 109.5, -120.0),
        ("H11", ("O2", "C2", "C1"), 1.09, 109.5, 0.0),
        ("H12", ("O2", "C2", "C1"), 1.09, 109.5, 120.0),
        ("H13", ("O2", "C2", "C1"), 1.09, 109.5, 240.0),
        ("H61", ("C4", "N5", "C6"), 1.09, 109.5, 60.0),
        ("H62", ("C4", "N5", "C6"), 1.09, 109.5, 180.0),
        ("H63", ("C4", "N5", "C6"), 1.09, 109.5, 300.0),
    ]
    for name, (a, b, c), bond, angle, dihedral in z:
        pos[name] = _place(pos[a], pos[b], pos[c], bond, angle, dihedral)
    names = list(pos)
    symbols = [n[0] if n[0] != "H" else "H" for n in names]
    atoms = Atoms(symbols, positions=[pos[n] for n in names])
    return atoms, names.index("CA"), names.index("HA1")


def complex_with_methyl(distance_A: float = 2.4) -> Atoms:
    """The dipeptide plus CH3 on the Cα-H axis, ``distance_A`` from the H."""
    atoms, ca, h = dipeptide()
    axis = atoms.positions[h] - atoms.positions[ca]
    axis /= np.linalg.norm(axis)
    c = atoms.positions[h] + distance_A * axis
    # Planar methyl perpendicular to the axis, C-H 1.08 Å.
    u = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    hs = [c + 1.08 * (np.cos(t) * u + np.sin(t) * v) for t in np.radians([0.0, 120.0, 240.0])]
    full = atoms + Atoms("CH3", positions=[c, *hs])
    full.info.update(charge=0, multiplicity=2, transfer=f"{ca},{h},{len(atoms)}")
    return full


def main() -> None:
    import argparse

    import ase.io
    from ase.optimize import BFGS
    from pal_atoms.dynamics import BiasCalculator, DistanceCV, UmbrellaBias
    from tblite.ase import TBLite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("hat_glycine.xyz"))
    parser.add_argument("--quick", action="store_true", help="skip the xTB relaxation")
    args = parser.parse_args()
    atoms = complex_with_methyl()
    ca, h, c = (int(i) for i in atoms.info["transfer"].split(","))
    cv = DistanceCV.transfer(ca, h, c)
    bias = UmbrellaBias(cv=cv, k_eV_A2=20.0, center_A=cv(atoms))
    atoms.calc = BiasCalculator(TBLite(method="GFN2-xTB", multiplicity=2, verbosity=0), bias)
    if not args.quick and not BFGS(atoms, logfile=None).run(fmax=0.01, steps=3000):
        raise SystemExit("the restrained relaxation did not converge")
    info = dict(atoms.info)
    out = Atoms(atoms.numbers, atoms.positions)
    out.info.update(info)
    path = args.out
    ase.io.write(path, out, format="extxyz")
    print(f"wrote {path}: s = {cv(out):.3f} Å, d(Ca-H) {out.get_distance(ca, h):.3f} Å")


if __name__ == "__main__":
    main()
