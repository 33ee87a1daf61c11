"""Rank-local ASE helpers (the multi-rank check lives in tests/mpi/test_generator_mpi.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ase.io import read
from dynamics_helpers import bi4
from pal_atoms.dynamics import local_comm, open_trajectory, write_frames


def test_local_comm_is_serial():
    comm = local_comm()
    assert (comm.rank, comm.size) == (0, 1)
    comm.barrier()


def test_write_frames_and_trajectory_are_written_by_the_caller(tmp_path):
    a = bi4()
    a.info.update(charge=-2, multiplicity=1)
    write_frames(tmp_path / "one.xyz", a)
    write_frames(tmp_path / "one.xyz", [a, a], append=True)
    frames = read(tmp_path / "one.xyz", ":")
    assert len(frames) == 3
    assert frames[0].info["charge"] == -2
    with open_trajectory(tmp_path / "t.traj") as traj:
        traj.write(a)
        traj.write(a)
    assert len(read(tmp_path / "t.traj", ":")) == 2
    with pytest.raises(ValueError, match="mode"):
        open_trajectory(tmp_path / "t.traj", "r")


def test_importing_the_generators_does_not_import_mpi4py():
    code = "import sys, pal_atoms.dynamics; print('mpi4py' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
