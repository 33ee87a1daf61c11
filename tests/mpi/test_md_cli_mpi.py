"""``pal-atoms md --np N`` starts its own MPI ranks and runs the whole job on them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from conftest import job_env, mpiexec
from pal_atoms.store import LabelStore

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]

CLI = [sys.executable, "-m", "pal_atoms.cli"]


def _system(tmp_path: Path) -> Path:
    pos = np.array([[0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3, 3, 0]])
    frames = [Atoms("Bi4", positions=pos[:4]), Atoms("Bi5", positions=pos)]
    frames[1].info["charge"] = -1
    path = tmp_path / "two.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.mark.slow
def test_md_starts_its_own_mpi_ranks_by_default(tmp_path):
    # No --np: the default starts the kernel ranks plus generator ranks (the README's
    # main command runs this way).
    mpiexec()  # skips with a reason when there is no MPI runtime
    out = tmp_path / "run"
    argv = [
        "md",
        "--system",
        str(_system(tmp_path)),
        "--out",
        str(out),
        "--max-labels",
        "6",
        "--time-limit",
        "200",
        "--train-steps",
        "10",
        "--committee",
        "2",
        "--bootstrap-per-frame",
        "2",
        "--test-per-frame",
        "1",
        "--retrain-size",
        "3",
        "--steps",
        "300",
        "--training",
        "rounds",
        "--final-check-ps",
        "0.2",
        "--generator-rate-hz",
        "1000",
    ]
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=500, env=job_env(), check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "run finished [max_labels] (reached max_labels=6)" in proc.stdout
    # The first log line says how the run runs, with the ranks per kernel.
    first = next(line for line in proc.stderr.splitlines() if " INFO " in line)
    assert re.search(
        r"running on [67] MPI ranks started by pal-atoms with mpiexec: 1 controller, "
        r"1 prediction, 2 training, 1 oracle, [12] generator$",
        first,
    ), first
    assert proc.stdout.count("run finished") == 1  # one rank reports
    assert "cuequivariance" not in proc.stdout + proc.stderr  # no per-rank import notice
    with LabelStore(out / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] >= 4 + 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_rounds"] >= 1 and np.isfinite(summary["final_test_force_mae"])


def test_md_with_a_layout_that_does_not_fit(tmp_path):
    argv = ["md", "--system", str(_system(tmp_path)), "--out", str(tmp_path / "r"), "--np", "4"]
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=120, env=job_env(), check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "4 MPI ranks cannot hold" in proc.stderr


def test_default_np_counts_kernels_generators_and_cores(tmp_path, monkeypatch):
    import pal_atoms.cli.run as cli_run
    from pal_atoms.jobs.md import MDRunConfig
    from pal_atoms.jobs.ts import TSRunConfig

    mpiexec()
    system = _system(tmp_path)  # two frames: two MD generators
    monkeypatch.setattr(cli_run, "_cores", lambda: 2)
    # 5 kernel ranks (controller, prediction, 2 training, oracle) + 1 generator rank
    assert cli_run._auto_np(MDRunConfig(system=system)) == 6
    monkeypatch.setattr(cli_run, "_cores", lambda: 64)
    assert cli_run._auto_np(MDRunConfig(system=system)) == 7  # one rank per generator
    assert cli_run._auto_np(MDRunConfig(system=system, oracle_ranks=3)) == 9
    assert cli_run._auto_np(MDRunConfig(system=system, training_ranks=1)) == 6
    assert cli_run._auto_np(TSRunConfig(system=system, searches_per_frame=3)) == 11


@pytest.mark.slow
def test_a_two_level_reaction_runs_on_mpi_ranks_as_in_one_process(tmp_path):
    # The serial twin is tests/core/test_cli_reaction.py's two-level test: the same job,
    # the second level on rank 0 after the loop.
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    mpiexec()
    out = tmp_path / "run"
    system = Path(__file__).resolve().parents[2] / "examples" / "hat_methyl.xyz"
    argv = [
        "reaction", "--system", str(system), "--out", str(out), "--np", "5",
        "--committee", "2", "--training-ranks", "1", "--bootstrap-per-frame", "3",
        "--test-per-frame", "1", "--steps", "60", "--steer-steps", "40",
        "--final-check-ps", "0", "--lower", "1000", "--upper", "2000",
        "--generator-rate-hz", "1000", "--time-limit", "600", "--path-images", "5",
        "--path-steps", "30", "--high-oracle", "xtb", "--high-method", "GFN1-xTB",
        "--high-budget", "3", "--high-steps", "30", "--final-check-ps", "0.02",
    ]  # fmt: skip
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=500, env=job_env(), check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "running on 5 MPI ranks" in proc.stderr
    assert proc.stdout.count("barrier along path 0 (eV): committee") == 1  # rank 0 reports
    with LabelStore(out / "labels_high.h5", mode="r") as store:
        assert [a.info["method"] for a in store.read()] == ["GFN1-xTB"] * 3
    report = json.loads((out / "summary.json").read_text())["reaction"]
    assert report["high_labels"] == 3 and len(report["paths"][0]["cv_A"]) == 5
    # The final committee checked on its path against the expensive level, as in one process.
    assert report["path_check"]["level"] == "high" and report["path_check"]["frames"] == 5
    (nve,) = report["final_check_high"]["systems"]  # and in NVE, as in one process
    assert nve["nve_steps"] > 0 and np.isfinite(nve["energy_drift_eV_atom_ps"])
