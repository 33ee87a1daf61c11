"""Generator step overhead: everything except the model call, per step.

For each case the generator runs on a ``LocalClient`` wrapped in a timer; overhead per
step = (wall time - time inside ``client.evaluate``) / steps, i.e. the integrator or
optimizer, the forwarding calculator, the geometry guard, the patience policy and the
event bookkeeping. A bare ASE Langevin run with the same calculator (no generator, no
client) is the baseline. The client's own cost (copy + selection rule) is reported apart.

Usage: python bench/generators.py [--quick]   (writes bench/results/generators.json)
"""

from __future__ import annotations

import argparse
import os
import time

import ase
import numpy as np
from _common import table, write_json
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.lj import LennardJones
from ase.md.langevin import Langevin
from pal_atoms.dynamics import (
    LocalClient,
    MDGenerator,
    MDSettings,
    NEBGenerator,
    NEBSettings,
    SellaGenerator,
    SellaSettings,
    build_bi_clusters,
    local_comm,
)

from pal_atoms.core.protocols import Verdict
from pal_atoms.workflow.selection import TrustWindow


def trusted(atoms, results):
    return Verdict.TRUSTED


class TimedClient:
    """Times ``evaluate`` (client total) and the calculator inside it (model)."""

    def __init__(self, inner: LocalClient) -> None:
        self.inner = inner
        self.client_s = 0.0
        self.calls = 0

    def evaluate(self, atoms, *, generator_id=0, step=0):
        t0 = time.perf_counter()
        out = self.inner.evaluate(atoms, generator_id=generator_id, step=step)
        self.client_s += time.perf_counter() - t0
        self.calls += 1
        return out


class LJWithStd(LennardJones):
    """Lennard-Jones plus a zero ``max_force_std``, so a real TrustWindow can judge it."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["max_force_std"] = 0.0


def tblite():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def lj_cluster(n: int, seed: int = 0) -> Atoms:
    """Ar_n on a jittered simple-cubic grid (3.8 Å spacing)."""
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)])
    pos = 3.8 * grid[:n] + np.random.default_rng(seed).normal(0, 0.05, (n, 3))
    return Atoms(f"Ar{n}", positions=pos)


def run_case(name, make_gen, calc, rule, steps):
    inner = LocalClient(calculator=calc, rule=rule)
    client = TimedClient(inner)
    gen = make_gen()
    gen.run(client, max_steps=2)  # warm-up (imports, first evaluation)
    inner.model_time_s, client.client_s, client.calls = 0.0, 0.0, 0
    t0 = time.perf_counter()
    events = gen.run(client, max_steps=steps)
    wall = time.perf_counter() - t0
    n = len(events)
    return {
        "case": name,
        "n_atoms": len(getattr(gen, "atoms", None) or gen.images[0]),
        "steps": n,
        "evaluations": client.calls,
        "wall_ms_per_step": 1e3 * wall / n,
        "model_ms_per_step": 1e3 * inner.model_time_s / n,
        "client_overhead_us_per_step": 1e6 * (client.client_s - inner.model_time_s) / n,
        "generator_overhead_us_per_step": 1e6 * (wall - client.client_s) / n,
    }


def bare_langevin(name, atoms, calc, steps):
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = Langevin(
        atoms,
        1 * units.fs,
        temperature_K=300,
        friction=0.01 / units.fs,
        fixcm=False,
        logfile=None,
        comm=local_comm(),
        rng=np.random.default_rng(0),
    )
    dyn.run(2)
    model = 0.0
    orig = calc.calculate

    def timed(*args, **kwargs):
        nonlocal model
        t = time.perf_counter()
        orig(*args, **kwargs)
        model += time.perf_counter() - t

    calc.calculate = timed
    t0 = time.perf_counter()
    for _ in range(steps):
        dyn.step()
    wall = time.perf_counter() - t0
    calc.calculate = orig
    return {
        "case": name,
        "n_atoms": len(atoms),
        "steps": steps,
        "evaluations": steps,
        "wall_ms_per_step": 1e3 * wall / steps,
        "model_ms_per_step": 1e3 * model / steps,
        "client_overhead_us_per_step": 0.0,
        "generator_overhead_us_per_step": 1e6 * (wall - model) / steps,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps (CI smoke run)")
    args = parser.parse_args(argv)
    steps = 30 if args.quick else 300
    bi8, bi16 = (build_bi_clusters([n], shapes_per_size=1, seed=n)[0] for n in (8, 16))
    window = TrustWindow()  # the default rule on max_force_std
    rows = []
    for integ in ("langevin", "verlet", "bussi", "nose_hoover"):
        rows.append(
            run_case(
                f"MD {integ}, tblite",
                lambda i=integ: MDGenerator(
                    bi8, settings=MDSettings(integrator=i, temperature_K=300)
                ),
                tblite(),
                trusted,
                steps,
            )
        )
    rows.append(bare_langevin("bare ASE Langevin, tblite", bi8, tblite(), steps))
    rows.append(
        run_case("MD langevin, tblite", lambda: MDGenerator(bi16), tblite(), trusted, steps)
    )
    rows.append(bare_langevin("bare ASE Langevin, tblite", bi16, tblite(), steps))
    for n in (64, 512):
        ar = lj_cluster(n)
        lj = LJWithStd(sigma=3.4, epsilon=0.0104, rc=8.0)
        rows.append(
            run_case(
                "MD langevin + TrustWindow, LJ",
                lambda a=ar: MDGenerator(
                    a, settings=MDSettings(temperature_K=50, max_distance_A=6.0)
                ),
                lj,
                window,
                steps,
            )
        )
        rows.append(
            bare_langevin(
                "bare ASE Langevin, LJ", ar, LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0), steps
            )
        )
    ts_steps = 8 if args.quick else 40
    rows.append(
        run_case(
            "Sella (ethane), tblite",
            lambda: SellaGenerator(molecule("C2H6"), settings=SellaSettings(fmax_eV_A=1e-4)),
            tblite(),
            trusted,
            ts_steps,
        )
    )
    e0 = molecule("C2H6")
    e1 = e0.copy()
    e1.set_dihedral(2, 0, 1, 5, 300.0, indices=[1, 5, 6, 7])
    rows.append(
        run_case(
            "CI-NEB 5 images (ethane), tblite",
            lambda: NEBGenerator(e0, e1, settings=NEBSettings(fmax_eV_A=1e-4, max_iterations=1000)),
            tblite(),
            trusted,
            ts_steps,
        )
    )
    keys = [
        "case",
        "n_atoms",
        "steps",
        "evaluations",
        "wall_ms_per_step",
        "model_ms_per_step",
        "client_overhead_us_per_step",
        "generator_overhead_us_per_step",
    ]
    headers = [
        "case",
        "atoms",
        "steps",
        "evals",
        "wall ms/step",
        "model ms/step",
        "client us/step",
        "generator us/step",
    ]
    print(table(headers, [[r[k] for k in keys] for r in rows]))
    path = write_json(
        "generators",
        {
            "quick": args.quick,
            "ase": ase.__version__,
            "numpy": np.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "note": "per step; generator = wall - time inside client.evaluate; client = "
            "client.evaluate - calculator (copy + selection rule)",
            "rows": rows,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
