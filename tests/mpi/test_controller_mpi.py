"""The MPI workflow with real ranks (mpiexec), real tblite labels and a tiny real MACE
committee on Bi4/Bi5, oversubscribed on 2 cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import JOB, job_command, job_env, kill_job, run_job
from pal_atoms.store import LabelStore
from pal_atoms.workflow.metrics import read_metrics

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]


def summary_of(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("SUMMARY ")]
    assert lines, out[-3000:]
    return json.loads(lines[-1][len("SUMMARY ") :])


@pytest.mark.slow
def test_labels_arrive_with_provenance_and_the_committee_improves(tmp_path):
    run = tmp_path / "run"
    cmd = job_command(
        6, run, "--max-labels", "24", "--time-limit", "400", "--epochs", "100", "--lr", "0.02"
    )
    proc = run_job(cmd, 500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = summary_of(proc.stdout)
    assert summary["stop_reason"] == "reached max_labels=24"
    with LabelStore(run / "labels.h5", mode="r") as store:
        ok = store.read()
        assert len(ok) >= 24
        gens = {a.info["generator_id"] for a in ok}
        assert gens == {0, 1}  # labels from every generator
        for a in ok:
            assert a.info["oracle"] == "xtb" and a.info["method"] == "GFN2-xTB"
            assert np.isfinite(a.info["uncertainty"]) and a.info["generator_step"] >= 0
            assert a.info["oracle_wall_time_s"] > 0
    maes = [m for _, m in summary["test_force_mae"]]
    assert len(maes) >= 2
    # A last round when the run stops: the final committee has seen every stored label.
    assert summary["test_force_mae"][-1][0] == summary["labels_ok"] == len(ok)
    assert maes[-1] <= 0.7 * maes[0], maes  # at least 30 % lower at the last checkpoint
    assert (run / "committee" / "metadata.json").exists() or any((run / "committee").iterdir())
    metrics = read_metrics(run / "metrics.jsonl")
    assert metrics[-1]["final"] and "oracle_busy_fraction" in metrics[-1]
    ranks = metrics[-1]["ranks"]  # per-rank observability: the 5 worker ranks of 6
    roles = sorted(r["role"] for r in ranks.values())
    assert roles == ["generator", "generator", "oracle", "prediction", "training"]
    assert all(0 <= r["busy_fraction"] <= 1 for r in ranks.values() if "busy_fraction" in r)
    assert sum(r.get("steps", 0) for r in ranks.values()) > 0
    assert json.loads((run / "generators.json").read_text()).keys() == {"0", "1"}


@pytest.mark.slow
def test_failure_budget_stops_a_run_whose_oracle_always_fails(tmp_path):
    proc = run_job(job_command(6, tmp_path / "run", "--always-fail", "--epochs", "5"), 300)
    assert proc.returncode != 0
    assert "FailureBudgetExceeded" in proc.stdout
    assert "labels failed (budget 60%)" in proc.stdout
    with LabelStore(tmp_path / "run" / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] == 0 and store.counts()["failed"] >= 4


def _start(run, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        job_command(6, run, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=job_env(),
        start_new_session=True,
    )


def _wait_for_labels(run, n: int, proc: subprocess.Popen[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "job ended early"
        metrics = run / "metrics.jsonl"
        if metrics.exists():
            rows = read_metrics(metrics)
            if rows and rows[-1]["labels_ok"] >= n:
                return
        time.sleep(0.5)
    pytest.fail(f"fewer than {n} labels after {timeout_s} s")


@pytest.mark.slow
def test_sigterm_gives_a_graceful_stop(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, "--max-labels", "1000", "--time-limit", "500", "--epochs", "5")
    _wait_for_labels(run, 4, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=200)
    assert proc.returncode == 0, out[-3000:]
    assert summary_of(out)["stop_reason"] == "received SIGTERM"
    with LabelStore(run / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] >= 4
    assert read_metrics(run / "metrics.jsonl")[-1]["final"]
    assert (run / "generators.json").exists()


@pytest.mark.slow
def test_sigkill_then_resume_keeps_every_label_and_continues(tmp_path):
    """Also: injected failures and a hanging label are recorded, and the run goes on."""
    run = tmp_path / "run"
    faults = ("--fail-every", "5", "--hang-at", "3")
    proc = _start(run, "--max-labels", "1000", "--time-limit", "500", "--epochs", "5", *faults)
    _wait_for_labels(run, 8, proc)
    kill_job(run)  # the whole job, every rank, at once
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the kernel releases the file lock with the process
        try:
            LabelStore(run / "labels.h5", mode="r").close()
            break
        except Exception:
            time.sleep(0.2)
    with LabelStore(run / "labels.h5", mode="r") as store:
        before = store.ids()
        counts = store.counts()
        ok_before = counts["ok"]
        # Every 5th label failed and the 3rd hung in a child process killed at 2 s.
        assert counts["failed"] >= 1 and counts["timeout"] == 1, counts
        bad = store.read(status=["failed", "timeout"])
        assert all(a.calc is None and a.info["error"] for a in bad)
    assert ok_before >= 8
    resumed = run_job(job_command(6, run, "--resume", "--max-labels", "6", "--epochs", "5"), 400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    with LabelStore(run / "labels.h5", mode="r") as store:
        after = store.ids()
        assert after[: len(before)] == before  # every label from before the kill is kept
        assert store.counts()["ok"] >= ok_before + 6  # and the run went on
    assert summary_of(resumed.stdout)["labels_ok"] >= 6


def test_same_job_in_a_single_process(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(JOB), str(run), "--single", "--max-labels", "6", "--epochs", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env=job_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = summary_of(proc.stdout)
    assert summary["labels_ok"] == 6 and summary["training_rounds"] >= 1


# Every proposal is a near-duplicate of the first label (diversity filter of 100 Å) and a
# training round waits for 1000 labels: labelling cannot move, so the run says so.
STALL = ["--diversity-A", "100", "--retrain-size", "1000", "--stall-duplicates", "30"]


@pytest.mark.parametrize(
    "ranks", [pytest.param(1, id="single"), pytest.param(6, id="mpi", marks=pytest.mark.slow)]
)
def test_a_run_whose_proposals_are_all_duplicates_stops_as_stalled(tmp_path, ranks):
    run = tmp_path / "run"
    args = [*STALL, "--max-labels", "50", "--epochs", "3"]
    if ranks == 1:
        cmd = [sys.executable, str(JOB), str(run), "--single", *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, env=job_env(), check=False
        )
        out = proc.stdout + proc.stderr
    else:
        proc = run_job(job_command(ranks, run, *args), 300)
        out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    summary = summary_of(proc.stdout)
    assert summary["stop_criterion"] == "stalled", summary["stop_reason"]
    assert "near-duplicates of labelled structures" in summary["stop_reason"]
    assert 1 <= summary["labels_ok"] < 50
    assert summary["training_rounds"] >= 1  # the last round learns the labels it has
    with LabelStore(run / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] == summary["labels_ok"]
