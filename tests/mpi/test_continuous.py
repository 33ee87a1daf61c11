"""Continuous training in both transports: one process and real MPI ranks (mpiexec).

The same job (tests/mpi/al_job.py: tiny real MACE committee, real tblite labels on Bi4/Bi5)
runs with a StreamingTrainer; every assertion holds in both modes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import JOB, job_command, job_env, run_job
from pal_atoms.store import LabelStore
from pal_atoms.workflow.metrics import read_metrics

pytestmark = [pytest.mark.timeout(600)]

MODES = [
    pytest.param("single", id="single"),
    pytest.param("mpi", id="mpi", marks=[pytest.mark.mpi, pytest.mark.slow]),
]


def _run(mode: str, run_dir, *args: str, timeout_s: float = 400) -> dict:
    if mode == "single":
        cmd = [sys.executable, str(JOB), str(run_dir), "--single", *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=job_env(), check=False
        )
    else:
        proc = run_job(job_command(6, run_dir, *args), timeout_s)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert lines, proc.stdout[-3000:]
    return json.loads(lines[-1][len("SUMMARY ") :])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_labels_reach_training_without_rounds_and_published_weights_serve(mode, tmp_path):
    run = tmp_path / "run"
    summary = _run(
        mode, run, "--continuous", "--bootstrap", "3", "--max-labels", "20",
        "--time-limit", "300", "--lr", "0.01",
    )  # fmt: skip
    assert summary["stop_criterion"] == "max_labels", summary["stop_reason"]
    assert summary["training_rounds"] == 0  # no rounds: one open-ended stream
    assert summary["training_steps"] > 0 and summary["publishes"] >= 2
    with LabelStore(run / "labels.h5", mode="r") as store:
        n_ok = store.counts()["ok"]
    # Every label joined the stream as it arrived (under MPI the last few may still be in
    # flight at the trainer's last report).
    slack = 0 if mode == "single" else 6
    assert n_ok - slack <= summary["training_labels"] <= n_ok
    # The held-out error is measured on the serving committee after each publish: weights
    # published mid-training reached the prediction side, and the committee improved.
    maes = [m for _, m in summary["test_force_mae"]]
    assert len(maes) >= 3
    assert min(maes[1:]) < maes[0], maes
    # The spread is calibrated on the validation labels and saved with the committee.
    assert summary["calibration"]["force_std_scale"] > 0
    saved = json.loads((run / "committee" / "committee.json").read_text())
    assert saved["calibration"]["force_std_scale"] == pytest.approx(
        summary["calibration"]["force_std_scale"]
    )
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert last["training_steps"] == summary["training_steps"] and last["publishes"] >= 2


@pytest.mark.parametrize("mode", MODES)
def test_a_spent_label_budget_stops_labelling_and_training_goes_on_to_its_plateau(mode, tmp_path):
    run = tmp_path / "run"
    summary = _run(
        mode, run, "--continuous", "--bootstrap", "6", "--max-labels", "10",
        "--train-after-max-labels", "--plateau-tolerance", "0.05", "--time-limit", "300",
    )  # fmt: skip
    assert summary["stop_criterion"] == "max_labels", summary["stop_reason"]
    assert "then training plateaued" in summary["stop_reason"]
    slack = 0 if mode == "single" else 2  # labels already on their way still count
    assert 10 <= summary["labels_ok"] <= 10 + slack
    # Training went on after the budget was spent.
    assert summary["training_steps"] > summary["training_steps_at_max_labels"] > 0, summary


@pytest.mark.parametrize("mode", MODES)
def test_convergence_stop_ends_the_run(mode, tmp_path):
    # Everything is trusted (lower bound far above any spread), so the uncertain fraction
    # is 0 once the window is full; the run then ends as soon as training plateaus.
    summary = _run(
        mode, tmp_path / "run", "--continuous", "--bootstrap", "6", "--lower", "100",
        "--convergence-window", "40", "--plateau-tolerance", "0.5", "--max-labels", "50",
        "--time-limit", "300",
    )  # fmt: skip
    assert summary["stop_criterion"] == "converged", summary["stop_reason"]
    assert "validation error stopped improving" in summary["stop_reason"]
    assert summary["labels_ok"] == 0 and summary["training_steps"] > 0
