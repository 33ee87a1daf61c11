"""Label-store throughput: appends/s and reads/s for Bi8-sized records, bytes per label.

Run: ``.venv/bin/python bench/store.py [--quick]``. Prints a table, writes
``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_json

from pal_atoms.store import LabelStore


def bi8(rng: np.random.Generator) -> Atoms:
    atoms = Atoms("Bi8", positions=rng.normal(size=(8, 3)) * 3.0)
    atoms.info["charge"] = 0
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(rng.normal()), forces=rng.normal(size=(8, 3))
    )
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records (~10 s)")
    args = parser.parse_args()
    n = 1000 if args.quick else 10000
    rng = np.random.default_rng(0)
    frames = [bi8(rng) for _ in range(n)]
    settings = {"method": "GFN2-xTB", "electronic_temperature_K": 300.0, "accuracy": 1.0}
    # Raw label payload: positions + numbers + energy + forces (float64, uint8).
    raw = 8 * 3 * 8 + 8 * 1 + 8 + 8 * 3 * 8
    rows = []
    results: dict[str, object] = {"n_records": n, "raw_bytes_per_label": raw}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, kwargs in (("append (flush each)", {}), ("append (fsync each)", {"fsync": True})):
            path = Path(tmp) / f"{mode.split()[1][1:]}.h5"
            m = n if not kwargs else max(100, n // 10)
            with LabelStore(path, **kwargs) as store:
                t0 = time.perf_counter()
                for i, a in enumerate(frames[:m]):
                    store.append(
                        a,
                        oracle="xtb",
                        method="GFN2-xTB",
                        settings=settings,
                        generator_id=i % 89,
                        generator_step=i,
                        uncertainty=0.1,
                        wall_time_s=0.01,
                    )
                dt = time.perf_counter() - t0
            rows.append([mode, m, m / dt, dt / m * 1e3])
            results[mode] = {"records": m, "per_s": m / dt, "ms_per_record": dt / m * 1e3}
        # Batches: what the MPI controller writes per pass of its loop (every label that
        # arrived since the last pass), and append_many of everything at once.
        for size in (8, 64, n):
            path = Path(tmp) / f"batch{size}.h5"
            with LabelStore(path) as store:
                t0 = time.perf_counter()
                for start in range(0, n, size):
                    store.append_batch(
                        (a, {"oracle": "xtb", "method": "GFN2-xTB", "settings": settings})
                        for a in frames[start : start + size]
                    )
                dt = time.perf_counter() - t0
            name = "append_many (all at once)" if size == n else f"append_batch of {size}"
            rows.append([name, n, n / dt, dt / n * 1e3])
            key = "append_many" if size == n else f"append_batch_{size}"
            results[key] = {"records": n, "per_s": n / dt, "ms_per_record": dt / n * 1e3}
        path = Path(tmp) / "flush.h5"
        with LabelStore(path, mode="r") as store:
            t0 = time.perf_counter()
            back = store.read()
            dt = time.perf_counter() - t0
        rows.append(["read(status='ok') -> Atoms", len(back), len(back) / dt, dt / len(back) * 1e3])
        results["read"] = {
            "records": len(back),
            "per_s": len(back) / dt,
            "ms_per_record": dt / len(back) * 1e3,
        }
        size = path.stat().st_size
        per_label = size / n
        results["file_bytes"] = size
        results["bytes_per_label"] = per_label
        results["overhead_vs_raw"] = per_label / raw
    print(table(["operation", "records", "records/s", "ms/record"], rows))
    print(
        f"\nfile: {size / 1e6:.2f} MB for {n} Bi8 labels = {per_label:.0f} B/label; raw arrays "
        f"{raw} B/label; ratio {per_label / raw:.2f} (provenance + offsets + chunk slack)"
    )
    print(f"wrote {write_json('store', results)}")


if __name__ == "__main__":
    main()
