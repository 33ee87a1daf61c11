"""pal-atoms on a real Slurm cluster: a one-node cluster on localhost (scripts/slurm_local.sh).

``.ci/run`` brings the cluster up before the tests; without it (no root, no Debian
packages, daemons that will not start) these tests are skipped with the reason.
Everything is real: sbatch, srun with the pip MPICH over PMI2, tblite labels, MACE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pal_atoms.store import LabelStore

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]


def _slurm_up() -> str:
    """Empty if a Slurm node accepts jobs here, else why not."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed (run: bash scripts/slurm_local.sh up, as root)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not {"idle", "mixed", "allocated"} & set(proc.stdout.split()):
        return f"no Slurm node is up (sinfo: {proc.stdout.strip() or proc.stderr.strip()})"
    return ""


@pytest.fixture(scope="module", autouse=True)
def slurm():
    reason = _slurm_up()
    if reason:
        pytest.skip(reason)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def _ok_labels(store_path: Path) -> int:
    with LabelStore(store_path, mode="r") as store:
        return store.counts()["ok"]


def _labels_so_far(run: Path) -> int:
    """``labels_ok`` of the last metrics line (the store is locked while the run writes)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return int(json.loads(lines[-1])["labels_ok"]) if lines else 0
    except (ValueError, KeyError):  # a line being written
        return 0


def test_the_one_node_sbatch_example_stores_labels_and_a_committee(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            "sbatch", "--wait", "--ntasks-per-node=9",
            "-o", str(tmp_path / "job.out"),
            "--export=ALL,PAL_MAX_LABELS=6,PAL_TIME_LIMIT=120,"
            f"OUT={out},PY={PY},OMP_NUM_THREADS=1",
            str(ROOT / "examples" / "slurm" / "one_node.sbatch"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env(), check=False,
    )  # fmt: skip
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + log[-3000:]
    assert "stopped: reached max_labels=6" in log, log[-3000:]
    assert _ok_labels(out / "labels.h5") >= 6
    assert any((out / "committee").iterdir())


def _md(out: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "pal-atoms"), "md", "--system", str(ROOT / "examples" / "bi_cluster.xyz"),
        "--out", str(out), "--committee", "2", "--bootstrap-per-frame", "2",
        "--test-per-frame", "1", "--final-check-ps", "0", "--training-ranks", "1",
        "--steps", "100000", "--generator-rate-hz", "1000", "--steps-per-label", "1", *extra,
    ]  # fmt: skip


def _ranks_in_metrics(run: Path) -> int:
    """MPI ranks of the run: the controller plus the workers in the last metrics line."""
    lines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return 1 + len(json.loads(lines[-1])["ranks"])


def test_sbatch_shell_run_uses_its_allocation_then_scancel_and_srun_resume(tmp_path):
    # ``pal-atoms md`` called directly in an ``sbatch -n 5`` script (no srun): it must
    # start its 5 ranks within the allocation, not run as one process.
    out = tmp_path / "run"
    cmd = " ".join(_md(out, "--max-labels", "400", "--time-limit", "600"))
    sub = subprocess.run(
        ["sbatch", "--parsable", "-n", "5", "-o", str(tmp_path / "first.out"), "--wrap", cmd],
        cwd=ROOT, capture_output=True, text=True, env=_env(), check=True,
    )  # fmt: skip
    job = sub.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 400
    while _labels_so_far(out) < 4:  # a few labels from the loop (besides the bootstrap)
        assert time.monotonic() < deadline, (tmp_path / "first.out").read_text()[-3000:]
        time.sleep(2)
    first = (tmp_path / "first.out").read_text()
    assert "running on 5 MPI ranks started by pal-atoms with srun" in first, first[-3000:]
    assert _ranks_in_metrics(out) == 5
    # scancel, then resume with srun directly (an allocation of its own): every label kept.
    subprocess.run(["scancel", job], check=True)
    while subprocess.run(
        ["squeue", "-h", "-j", job], capture_output=True, text=True, check=False
    ).stdout.strip():
        time.sleep(1)
    with LabelStore(out / "labels.h5", mode="r") as store:
        before = store.ids()
        ok_before = store.counts()["ok"]
    proc = subprocess.run(
        ["srun", "-n", "5", "--mpi=pmi2",
         *_md(out, "--resume", "--max-labels", str(ok_before + 4), "--time-limit", "300")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run finished") == 1, proc.stdout[-3000:]
    assert "running on 5 MPI ranks from srun" in proc.stderr, proc.stderr[-3000:]
    assert _ranks_in_metrics(out) == 5
    with LabelStore(out / "labels.h5", mode="r") as store:
        assert store.ids()[: len(before)] == before  # every label from before the scancel
        assert store.counts()["ok"] >= ok_before + 4  # and the resumed run added more


def test_srun_copies_without_mpi_are_refused_before_touching_out(tmp_path):
    # srun --mpi=none: three processes that share no communicator would each run the
    # whole job against one folder.
    out = tmp_path / "run"
    proc = subprocess.run(
        ["srun", "-n", "3", "--mpi=none", *_md(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("srun:")]
    assert len(ours) == 1 and "--mpi=pmi2" in ours[0], proc.stderr  # one line, not one a copy
    assert not out.exists()
