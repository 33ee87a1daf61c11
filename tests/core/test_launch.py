"""How a run gets its processes (pal_atoms.jobs.launch) and one writer per run folder.

The environments are the ones measured on Slurm 22.05 with the pip MPICH: an ``sbatch``
script's shell has ``SLURM_JOB_ID``/``SLURM_NTASKS`` but no step; ``srun --mpi=none``
adds ``SLURM_STEP_ID``/``SLURM_STEP_NUM_TASKS`` and nothing else; ``srun --mpi=pmi2`` and
MPICH's ``mpiexec`` add ``PMI_FD``/``PMI_RANK``/``PMI_SIZE``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pal_atoms.core.errors import ConfigError, InputError, LaunchError
from pal_atoms.jobs.launch import STARTED_BY, Launch, LaunchKind, decide_launch
from pal_atoms.store.run_lock import LOCK_NAME, RunLock

SBATCH_SHELL = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "5", "SLURM_NPROCS": "5"}
SRUN_STEP = {**SBATCH_SHELL, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "3"}
PMI = {"PMI_FD": "9", "PMI_RANK": "0", "PMI_SIZE": "5"}


def _decide(env, *, np=None, size=1, srun=True, auto=6):
    def comm_size():
        assert any(k.startswith(("PMI", "OMPI")) for k in env), "MPI initialised needlessly"
        return size

    return decide_launch(
        env, requested_np=np, auto_np=lambda: auto, comm_size=comm_size, have_srun=srun
    )


def test_laptop_starts_its_own_mpiexec_ranks_or_runs_in_one_process():
    assert _decide({}) == Launch(kind=LaunchKind.STARTED, n_ranks=6, launcher="mpiexec")
    assert _decide({}, auto=1).kind is LaunchKind.ONE_PROCESS  # no mpiexec installed
    assert _decide({}, np=1).kind is LaunchKind.ONE_PROCESS
    assert _decide({}, np=9).n_ranks == 9


def test_ranks_from_mpiexec_or_srun_pmi2_use_the_communicator():
    got = _decide(PMI, size=5)
    assert got == Launch(kind=LaunchKind.LAUNCHER, n_ranks=5, launcher="mpiexec")
    srun = {**SRUN_STEP, "SLURM_STEP_NUM_TASKS": "5", **PMI}
    assert _decide(srun, size=5).launcher == "srun"
    assert _decide(srun, size=5, np=99).n_ranks == 5  # --np is ignored under a launcher
    # Ranks that pal-atoms started say so.
    assert _decide({**PMI, STARTED_BY: "srun"}, size=5).launcher == "srun"


def test_an_sbatch_shell_starts_ranks_with_srun_within_the_allocation():
    assert _decide(SBATCH_SHELL) == Launch(kind=LaunchKind.STARTED, n_ranks=5, launcher="srun")
    assert _decide(SBATCH_SHELL, np=4).n_ranks == 4  # --np still overrides
    # More ranks than tasks, or no srun: mpiexec on the batch node.
    assert _decide(SBATCH_SHELL, np=7).launcher == "mpiexec"
    assert _decide(SBATCH_SHELL, srun=False) == Launch(
        kind=LaunchKind.STARTED, n_ranks=6, launcher="mpiexec"
    )
    one_task = {**SBATCH_SHELL, "SLURM_NTASKS": "1"}
    assert _decide(one_task).launcher == "mpiexec"  # nothing to share: as on a laptop


def test_siblings_without_a_connection_are_refused_with_the_fix():
    with pytest.raises(LaunchError, match=r"srun started 3 copies.*--mpi=pmi2"):
        _decide(SRUN_STEP)
    # An MPI whose mpi4py does not match the launcher: connected, yet size 1 of 5.
    with pytest.raises(LaunchError, match="5 copies"):
        _decide(PMI, size=1)
    assert isinstance(LaunchError("x"), InputError)  # exit code 2 on the command line


def test_one_rank_from_a_launcher_is_one_process():
    assert _decide({"PMI_FD": "3", "PMI_RANK": "0", "PMI_SIZE": "1"}).kind is (
        LaunchKind.ONE_PROCESS
    )
    # One srun task without PMI: its own ranks within its cores, as on a laptop.
    one_step = {**SRUN_STEP, "SLURM_STEP_NUM_TASKS": "1"}
    assert _decide(one_step) == Launch(kind=LaunchKind.STARTED, n_ranks=6, launcher="mpiexec")


def test_the_log_line_says_how_the_run_runs():
    assert "one process" in Launch(kind=LaunchKind.ONE_PROCESS, n_ranks=1).describe()
    line = Launch(kind=LaunchKind.STARTED, n_ranks=6, launcher="srun").describe(
        {"controller": 1, "generator": 2}
    )
    assert (
        line == "running on 6 MPI ranks started by pal-atoms with srun: 1 controller, 2 generator"
    )
    with pytest.raises(ConfigError):
        Launch(kind=LaunchKind.ONE_PROCESS, n_ranks=3)


def test_a_second_writer_on_a_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    RunLock(run).ensure_free()
    assert not run.exists()  # checking creates nothing
    with RunLock(run) as lock:
        assert lock.held and (run / LOCK_NAME).is_file()
        # Another process (flock is per open file, so a child is a true second writer).
        code = (
            "import sys; from pal_atoms.store.run_lock import RunLock\n"
            "try:\n    RunLock(sys.argv[1]).acquire()\n"
            "except ValueError as e:\n    print(e); sys.exit(2)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(run)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 2, proc.stderr
        assert "in use by a running pal-atoms (pid" in proc.stdout
    RunLock(run).acquire().release()  # free again once released


def test_pal_atoms_md_on_a_folder_in_use_is_one_line_and_exit_2(tmp_path, capsys):
    from pal_atoms.cli import main

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pal_atoms.store.run_lock import RunLock\n"
         "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        system = tmp_path / "bi4.xyz"
        system.write_text("4\n\nBi 0 0 0\nBi 3 0 0\nBi 0 3 0\nBi 0 0 3\n")
        code = main(["md", "--system", str(system), "--out", str(run), "--np", "1"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "in use by a running pal-atoms" in err[0], err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing else was written
