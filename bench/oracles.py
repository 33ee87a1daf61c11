"""Oracle cost per label (Bi4, Bi4(2-), Bi8, ethanol) and the overhead of child-process isolation.

Run: ``.venv/bin/python bench/oracles.py [--quick | --pyscf-only]``. Prints two tables and
writes ``bench/results/oracles.json``. Everything runs on one thread (``OMP_NUM_THREADS=1``).

* Cost per label: ``label()`` wall and CPU time (energy + forces, checks included) for
  tblite GFN2-xTB, xtb-python GFN2-xTB, PySCF PBE/def2-SVP (def2 ECP on Bi; Bi only
  without ``--quick``: tens of seconds to minutes each, with the SCF cycles of each label)
  and Turbomole when installed. The Bi clusters are the shipped
  ``examples/bi_cluster.xyz`` frames (Bi4, Bi4 with charge -2, Bi8).
* Isolation: the same label in process and in a persistent
  :class:`~pal_atoms.oracles.OracleWorker`, interleaved, for labels of ~0 ms (Lennard-Jones),
  ~10 ms (tblite Bi8) and ~100 ms (tblite Bi16); plus the one-off worker start-up.

``--pyscf-only`` runs just the PySCF rows (all four systems) and merges them into the
existing JSON, keeping the other rows. The machine is shared, so the load average at the
start and end of each run is recorded; CPU time is the number to compare across runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/tblite/pyscf load their pools

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.lj import LennardJones
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, table, write_json
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

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bi_cluster.xyz"
PYSCF_NAME = "pyscf PBE/def2-SVP"


def bi_cluster(n: int, *, seed: int = 0, spacing_A: float = 3.1) -> Atoms:
    """Compact Bi_n: the n grid points nearest the centre of a 4x4x4 grid, jittered."""
    rng = np.random.default_rng(seed)
    grid = np.array([(i, j, k) for i in range(4) for j in range(4) for k in range(4)], float)
    grid = grid[np.argsort(np.linalg.norm(grid - 1.5, axis=1), kind="stable")][:n]
    pos = grid * spacing_A + rng.normal(scale=0.05, size=(n, 3))
    atoms = Atoms(f"Bi{n}", positions=pos - pos.mean(axis=0))
    atoms.info["charge"] = 0
    return atoms


def example_cluster(size: int, charge: int) -> Atoms:
    """The first frame of ``examples/bi_cluster.xyz`` with this size and charge."""
    for atoms in read(EXAMPLE, index=":"):
        if len(atoms) == size and atoms.info.get("charge", 0) == charge:
            return atoms
    raise LookupError(f"no Bi{size} with charge {charge} in {EXAMPLE}")


def systems() -> dict[str, Atoms]:
    return {
        "Bi4": example_cluster(4, 0),
        "Bi4(2-)": example_cluster(4, -2),
        "Bi8": example_cluster(8, 0),
        "ethanol": molecule("CH3CH2OH"),
    }


def timed_labels(atoms: Atoms, oracle: Any, repeats: int) -> tuple[float, float, str]:
    """Median wall and CPU time (s) of ``repeats`` labels after one warm-up, and the status."""
    status = str(label(atoms, oracle).status)  # warm-up: imports, parameter files
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        lab = label(atoms, oracle)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        status = str(lab.status)
    return statistics.median(wall), statistics.median(cpu), status


def pyscf_row(atoms: Atoms, oracle: PySCF) -> dict[str, Any]:
    """One PySCF label (no warm-up: it would double a long run) with its SCF record."""
    t0, c0 = time.perf_counter(), time.process_time()
    lab = label(atoms, oracle)
    row: dict[str, Any] = {
        "ms_per_label": (time.perf_counter() - t0) * 1e3,
        "cpu_ms_per_label": (time.process_time() - c0) * 1e3,
        "status": str(lab.status),
        "repeats": 1,
    }
    scf = oracle.last_scf
    if scf is not None:
        row["scf"] = {
            "diis_cycles": scf.diis_cycles,
            "second_order_cycles": scf.second_order_cycles,
            "homo_lumo_gap_eV": None if scf.gap_Eh is None else scf.gap_Eh * 27.211386,
            "scf_s": scf.wall_s,
        }
    if not lab.ok:
        row["error"] = lab.error
    return row


def cycles_text(row: dict[str, Any]) -> str:
    scf = row.get("scf")
    return "" if scf is None else f"{scf['diis_cycles']}+{scf['second_order_cycles']}"


def cost_per_label(quick: bool, pyscf_only: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    oracles: list[tuple[str, Any, int]] = [
        (PYSCF_NAME, PySCF(functional="PBE", basis="def2-SVP"), 1),
    ]
    if not pyscf_only:
        oracles[:0] = [
            ("xtb (tblite)", XTB(), 10 if quick else 50),
            ("xtb-python", XTBPython(), 10 if quick else 50),
        ]
        if not missing_executables(Turbomole().config.executables):
            oracles.append(("turbomole pbe/def2-SVP", Turbomole(), 1))
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for name, oracle, repeats in oracles:
        results[name] = {"method": oracle.method}
        for system, atoms in systems().items():
            if quick and name == PYSCF_NAME and system.startswith("Bi"):
                rows.append([name, system, "skipped (--quick)", "", "", "", ""])
                continue
            try:
                oracle.check(atoms)
            except ValueError as exc:  # e.g. xtb-python not installed
                rows.append([name, system, f"skipped: {exc}", "", "", "", ""])
                continue
            if name == PYSCF_NAME:
                row = pyscf_row(atoms, oracle)
            else:
                wall_s, cpu_s, status = timed_labels(atoms, oracle, repeats)
                row = {
                    "ms_per_label": wall_s * 1e3,
                    "cpu_ms_per_label": cpu_s * 1e3,
                    "status": status,
                    "repeats": repeats,
                }
            results[name][system] = row
            rows.append(
                [
                    name,
                    system,
                    row["status"],
                    row["ms_per_label"],
                    row["cpu_ms_per_label"],
                    repeats,
                    cycles_text(row),
                ]
            )
            print(rows[-1], flush=True)  # long PySCF rows: show progress
    if not pyscf_only and len(oracles) == 3:
        rows.append(["turbomole", "-", "not installed", "", "", "", ""])
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
            label(atoms, oracle, worker=worker)  # warm both sides (imports, parameters)
            inproc, isolated = [], []
            for _ in range(rounds):  # interleaved, so drifts of a shared machine cancel
                t = time.perf_counter()
                label(atoms, oracle)
                inproc.append(time.perf_counter() - t)
                t = time.perf_counter()
                lab = label(atoms, oracle, timeout_s=600, worker=worker)
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


def merge_pyscf(cost: dict[str, Any], load: dict[str, Any]) -> Path:
    """Replace the PySCF rows of the existing JSON, keeping everything else."""
    path = RESULTS / "oracles.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.setdefault("cost_per_label", {})[PYSCF_NAME] = {**cost[PYSCF_NAME], "run": load}
    old["pyscf_machine"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=2, default=float) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="xTB and PySCF-ethanol only (~1 min)")
    mode.add_argument(
        "--pyscf-only",
        action="store_true",
        help="only the PySCF rows (all systems), merged into the existing JSON",
    )
    args = parser.parse_args()
    load: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    t0 = time.perf_counter()
    cost_rows, cost = cost_per_label(args.quick, args.pyscf_only)
    print("Cost per label (energy + forces, 1 thread; SCF cycles: DIIS+second-order)")
    print(
        table(
            ["oracle", "system", "status", "wall ms", "CPU ms", "repeats", "SCF cycles"],
            cost_rows,
        )
    )
    if args.pyscf_only:
        load.update(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0)
        print(f"load average {load['loadavg_start']} -> {load['loadavg_end']}")
        print(f"merged into {merge_pyscf(cost, load)}")
        return
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
    load.update(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0)
    print(f"load average {load['loadavg_start']} -> {load['loadavg_end']}")
    path = write_json(
        "oracles",
        {
            "quick": args.quick,
            "threads": 1,
            "run": load,
            "systems": {
                "Bi4, Bi4(2-), Bi8": "examples/bi_cluster.xyz (first frame of each)",
                "ethanol": "ase.build.molecule('CH3CH2OH')",
            },
            "cost_per_label": cost,
            "isolation": iso,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
