"""Oracle cost per label (Bi4, Bi8, ethanol) and the overhead of child-process isolation.

Run: ``.venv/bin/python bench/oracles.py [--quick]``. Prints two tables and writes
``bench/results/oracles.json``. Everything runs on one thread (``OMP_NUM_THREADS=1``).

* Cost per label: ``label()`` wall time (energy + forces, checks included) for tblite
  GFN2-xTB, xtb-python GFN2-xTB, PySCF PBE/def2-SVP (def2 ECP on Bi; Bi only without
  ``--quick``: tens of seconds to minutes each) and Turbomole when installed.
* Isolation: the same label in process and in a persistent
  :class:`~pal_atoms.oracles.OracleWorker`, interleaved, for labels of ~0 ms (Lennard-Jones),
  ~10 ms (tblite Bi8) and ~100 ms (tblite Bi16); plus the one-off worker start-up.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/tblite/pyscf load their pools

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.lj import LennardJones

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_json
from pal_atoms.oracles import (
    XTB,
    OracleWorker,
    PySCF,
    Turbomole,
    Wrapped,
    XTBPython,
    label,
)
from pal_atoms.oracles.turbomole import missing_executables


def bi_cluster(n: int, *, seed: int = 0, spacing_A: float = 3.1) -> Atoms:
    """Compact Bi_n: the n grid points nearest the centre of a 4x4x4 grid, jittered."""
    rng = np.random.default_rng(seed)
    grid = np.array([(i, j, k) for i in range(4) for j in range(4) for k in range(4)], float)
    grid = grid[np.argsort(np.linalg.norm(grid - 1.5, axis=1), kind="stable")][:n]
    pos = grid * spacing_A + rng.normal(scale=0.05, size=(n, 3))
    atoms = Atoms(f"Bi{n}", positions=pos - pos.mean(axis=0))
    atoms.info["charge"] = 0
    return atoms


def timed_labels(atoms: Atoms, oracle: Any, repeats: int) -> tuple[float, str]:
    """Median wall time (s) of ``repeats`` labels after one warm-up, and the status."""
    status = str(label(atoms, oracle).status)  # warm-up: imports, parameter files
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lab = label(atoms, oracle)
        times.append(time.perf_counter() - t0)
        status = str(lab.status)
    return statistics.median(times), status


def cost_per_label(quick: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    systems = {"Bi4": bi_cluster(4), "Bi8": bi_cluster(8), "ethanol": molecule("CH3CH2OH")}
    oracles: list[tuple[str, Any, int]] = [
        ("xtb (tblite)", XTB(), 10 if quick else 50),
        ("xtb-python", XTBPython(), 10 if quick else 50),
        ("pyscf PBE/def2-SVP", PySCF(functional="PBE", basis="def2-SVP"), 1),
    ]
    if not missing_executables(Turbomole().config.executables):
        oracles.append(("turbomole pbe/def2-SVP", Turbomole(), 1))
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for name, oracle, repeats in oracles:
        results[name] = {"method": oracle.method}
        for system, atoms in systems.items():
            if quick and name.startswith("pyscf") and system.startswith("Bi"):
                rows.append([name, system, "skipped (--quick)", "", ""])
                continue
            try:
                oracle.check(atoms)
            except ValueError as exc:  # e.g. xtb-python not installed
                rows.append([name, system, f"skipped: {exc}", "", ""])
                continue
            if name.startswith("pyscf"):  # the warm-up would double a long run
                t0 = time.perf_counter()
                status = str(label(atoms, oracle).status)
                median_s = time.perf_counter() - t0
            else:
                median_s, status = timed_labels(atoms, oracle, repeats)
            rows.append([name, system, status, median_s * 1e3, repeats])
            results[name][system] = {
                "ms_per_label": median_s * 1e3,
                "status": status,
                "repeats": repeats,
            }
    if len(oracles) == 3:
        rows.append(["turbomole", "-", "not installed", "", ""])
        results["turbomole"] = "not installed"
    return rows, results


def isolation(quick: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    ethanol = molecule("CH3CH2OH")
    cases = [
        (
            "LJ ethanol (~0 ms)",
            ethanol,
            Wrapped(factory=LennardJones, name="lj"),
            50 if quick else 300,
        ),
        ("tblite Bi8 (~10 ms)", bi_cluster(8), XTB(), 30 if quick else 200),
        ("tblite Bi16 (~100 ms)", bi_cluster(16), XTB(), 10 if quick else 50),
    ]
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    worker = OracleWorker(threads=1)
    worker.start()
    startup_s = time.perf_counter() - t0
    with worker:
        for name, atoms, oracle, rounds in cases:
            label(atoms, oracle)
            worker.label(atoms, oracle)  # warm both sides (imports, parameters)
            inproc, isolated = [], []
            for _ in range(rounds):  # interleaved, so drifts of a shared machine cancel
                t = time.perf_counter()
                label(atoms, oracle)
                inproc.append(time.perf_counter() - t)
                t = time.perf_counter()
                lab = worker.label(atoms, oracle, timeout_s=600)
                isolated.append(time.perf_counter() - t)
            if not lab.ok:
                raise RuntimeError(f"{name}: {lab.status} {lab.error}")
            a, b = statistics.median(inproc) * 1e3, statistics.median(isolated) * 1e3
            rows.append([name, rounds, a, b, b - a, (b - a) / a * 100])
            results[name] = {
                "rounds": rounds,
                "in_process_ms": a,
                "worker_ms": b,
                "overhead_ms": b - a,
                "overhead_percent": (b - a) / a * 100,
            }
    results["worker_startup_s"] = startup_s
    return rows, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="xTB and PySCF-ethanol only (~30 s)")
    args = parser.parse_args()
    cost_rows, cost = cost_per_label(args.quick)
    print("Cost per label (median wall time, energy + forces, 1 thread)")
    print(table(["oracle", "system", "status", "ms/label", "repeats"], cost_rows))
    iso_rows, iso = isolation(args.quick)
    print("\nChild-process isolation (persistent OracleWorker, median of interleaved rounds)")
    print(
        table(
            ["label", "rounds", "in-process ms", "worker ms", "overhead ms", "overhead %"], iso_rows
        )
    )
    print(
        f"\nworker start-up (fresh interpreter + numpy/ASE, paid once and after each "
        f"kill/crash): {iso['worker_startup_s']:.2f} s"
    )
    path = write_json(
        "oracles", {"quick": args.quick, "threads": 1, "cost_per_label": cost, "isolation": iso}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
