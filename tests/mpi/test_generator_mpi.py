"""Generators on MPI ranks run their own MD without talking to each other (no deadlock).

Once mpi4py is imported, ASE's ``world`` is COMM_WORLD: Langevin and Bussi broadcast
their random numbers over it and ``ase.io.write``/``Trajectory`` write on rank 0 only.
Here every rank runs a different number of MD steps and writes its own files; with any
collective left inside the generator the ranks would hang (caught by the hard timeout)
or files would be missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

N_RANKS = 3

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py not installed"),
    pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed"),
]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from mpi4py import MPI  # first: makes ase.parallel.world COMM_WORLD
    import ase.parallel
    import numpy as np
    from ase.io import read
    from tblite.ase import TBLite

    from pal_atoms.dynamics import LocalClient, MDGenerator, MDSettings, write_frames
    from pal_atoms.core.protocols import Verdict

    comm = MPI.COMM_WORLD
    rank = comm.rank
    out = Path(sys.argv[1])
    assert ase.parallel.world.size == comm.size > 1  # the trap is armed
    atoms = read(sys.argv[2], index=rank % 3)
    integrator = ("langevin", "bussi", "nose_hoover")[rank % 3]
    n_steps = 4 + 5 * rank  # different on every rank: a stray collective would hang
    calc = TBLite(charge=atoms.info["charge"], multiplicity=atoms.info["multiplicity"],
                  verbosity=0)
    client = LocalClient(calculator=calc, rule=lambda a, r: Verdict.TRUSTED)
    settings = MDSettings(integrator=integrator, temperature_K=300, seed=rank,
                          n_steps=n_steps, max_distance_A=8.0)
    gen = MDGenerator(atoms, settings=settings, generator_id=rank,
                      trajectory=out / f"rank{rank}.traj")
    events = gen.run(client)
    write_frames(out / f"rank{rank}.xyz", [gen.atoms, gen.last_trusted])
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "n_events": len(events), "last": events[-1].action.value,
        "momenta": gen.atoms.get_momenta().tolist()}))
    comm.Barrier()
    """
)


def test_generators_on_mpi_ranks_do_not_deadlock(tmp_path):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec"
    )
    if mpiexec is None:
        pytest.skip("mpiexec not found (install the 'mpi' extra: mpich)")
    example = Path(__file__).resolve().parents[2] / "examples" / "bi_cluster.xyz"
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        mpiexec,
        "-n",
        str(N_RANKS),
        sys.executable,
        "-m",
        "mpi4py",
        str(script),
        str(tmp_path),
        str(example),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"MPI generators deadlocked (no exit in 120 s): {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ase.io import read

    momenta = []
    for rank in range(N_RANKS):
        info = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert info["n_events"] == 4 + 5 * rank
        assert info["last"] == "finished"
        assert len(read(tmp_path / f"rank{rank}.traj", ":")) == 4 + 5 * rank
        assert len(read(tmp_path / f"rank{rank}.xyz", ":")) == 2
        momenta.append(info["momenta"])
    assert momenta[0] != momenta[1]  # each rank drew its own random numbers
