"""The same behaviour in one process and under MPI: each test runs ``modes_job.py`` in both.

A periodic Cu cell labelled by real EMT (wrapped as an oracle), a tiny real MACE
committee trained continuously, real mpiexec with 6 ranks on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

from conftest import job_env, mpiexec, run_job
from pal_atoms.store import LabelStore

JOB = Path(__file__).with_name("modes_job.py")

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]


def run_mode(mode: str, run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if mode == "single":
        cmd = [sys.executable, str(JOB), str(run_dir), "--single", *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, env=job_env(), check=False
        )
    cmd = [mpiexec(), "-n", "6", sys.executable, "-m", "mpi4py", str(JOB), str(run_dir), *args]
    return run_job(cmd, 300)


def summary_of(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("SUMMARY ")]
    assert lines, out[-3000:]
    return json.loads(lines[-1][len("SUMMARY ") :])


MODES = pytest.mark.parametrize("mode", ["single", pytest.param("mpi", marks=pytest.mark.slow)])


@MODES
def test_labels_of_a_periodic_cell_keep_their_stress(tmp_path, mode):
    proc = run_mode(mode, tmp_path / "run", "--max-labels", "6")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with LabelStore(tmp_path / "run" / "labels.h5", mode="r") as store:
        ok = store.read()
    assert len(ok) >= 6
    for atoms in ok:
        stored = atoms.calc.results.get("stress")
        assert stored is not None, "a periodic label lost its stress"
        ref = atoms.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(stored, ref.get_stress(), atol=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-8)
        assert atoms.info["oracle"] == "emt" and atoms.info["charge"] == 0


@MODES
def test_failed_predictions_are_a_verdict_not_numbers(tmp_path, mode):
    proc = run_mode(mode, tmp_path / "run", "--max-labels", "6", "--fail-predictions", "4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = summary_of(proc.stdout)
    assert summary["failed_predictions"] >= 1
    assert summary["stop_criterion"] == "max_labels"
    log = proc.stdout + proc.stderr
    assert "could not predict this geometry" in log  # the generator saw it and restarted
    with LabelStore(tmp_path / "run" / "labels.h5", mode="r") as store:
        for atoms in store.read():
            assert np.all(np.isfinite(atoms.get_forces()))


@MODES
def test_a_failing_generator_restarts_and_the_run_goes_on(tmp_path, mode):
    proc = run_mode(mode, tmp_path / "run", "--max-labels", "6", "--generator-fault-at", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "generator 0 failed (RuntimeError: injected fault); restarting it" in log
    summary = summary_of(proc.stdout)
    assert summary["labels_ok"] >= 6 and summary["generator_steps"] > 2


@MODES
def test_a_bug_ends_the_run_with_every_label_kept(tmp_path, mode):
    run = tmp_path / "run"
    proc = run_mode(mode, run, "--max-labels", "50", "--generator-fault-at", "6", "--generator-bug")
    assert proc.returncode != 0
    assert "KeyError" in proc.stdout + proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["stop_criterion"] == "error" and "KeyError" in summary["stop_reason"]
    with LabelStore(run / "labels.h5", mode="r") as store:  # closed cleanly, readable
        counts = store.counts()
        assert all(np.all(np.isfinite(a.get_forces())) for a in store.read())
    assert counts["ok"] == summary["labels_ok"] >= 1  # every label that arrived is stored
    assert counts.get("cancelled", 0) == summary["cancelled"]
