"""Run-directory figures: a fake run (real store, metrics, tiny committee) to PNG files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from matplotlib.image import imread

from pal_atoms.core.errors import InputError, StoreError
from pal_atoms.jobs.plotting import FIGURES, plot_parity, plot_run
from pal_atoms.store import LabelStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bi4(seed: int = 0) -> Atoms:
    rng = np.random.default_rng(seed)
    pos = 3.0 / np.sqrt(8) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    atoms = Atoms("Bi4", positions=pos + rng.normal(scale=0.05, size=(4, 3)))
    atoms.info.update(charge=0, multiplicity=1)
    return atoms


def labelled(atoms: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(rng.normal()), forces=rng.normal(scale=0.3, size=(len(atoms), 3))
    )
    return atoms


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = imread(path)
    assert image.ndim == 3
    assert image.shape[0] > 100
    assert image.shape[1] > 100


def write_store(run_dir, statuses):
    with LabelStore(run_dir / "labels.h5") as store:
        for i, status in enumerate(statuses):
            atoms = labelled(bi4(i), i) if status == "ok" else bi4(i)
            unc = None if status == "cancelled" else 0.05 * (i + 1)
            store.append(atoms, status, error="" if status == "ok" else "boom", uncertainty=unc)


def write_metrics(run_dir, n=6, with_mae=True):
    t_start = time.time() - 10.0
    with (run_dir / "metrics.jsonl").open("w") as fh:
        for i in range(n):
            record = {
                "time": t_start + 2.0 * i,
                "elapsed_s": 2.0 * i,
                "labels_ok": 2 * i,
                "labels_failed": i // 3,
                "generator_steps": 100 * i,
                "steps_per_s": 50.0,
                "uncertain_fraction": 0.2,
                "max_force_std": 0.3 / (i + 1),
                "training_rounds": i // 2,
                "test_force_mae": 0.5 / (i + 1) if with_mae and i >= 2 else None,
                "busy_s": {"prediction": 1.0, "oracle": 1.0 * i, "training": 0.0, "store": 0.0},
                "queued": 1,
                "duplicates": 0,
                "dropped": 0,
                "final": i == n - 1,
            }
            fh.write(json.dumps(record) + "\n")
        fh.write('{"torn": ')  # a torn last line, as a killed run leaves


@pytest.fixture(scope="module")
def tiny_committee(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from pal_atoms.calculators import CommitteeCalculator

    committee = CommitteeCalculator.create(
        "mace", elements=["Bi"], n_members=2, hidden_irreps="8x0e", num_interactions=1,
        device="cpu",
    )  # fmt: skip
    path = tmp_path_factory.mktemp("committee") / "committee"
    committee.save(path)
    return path


def test_full_run_directory_gives_every_figure(tmp_path, tiny_committee):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    write_store(run, ["ok", "ok", "failed", "ok", "unconverged", "timeout", "cancelled"])
    write_metrics(run)
    (run / "summary.json").write_text(json.dumps({"test_force_mae": [[4, 0.3], [8, 0.2]]}))
    shutil.copytree(tiny_committee, run / "committee")
    write(run / "test_set.extxyz", [labelled(bi4(10 + i), 10 + i) for i in range(3)])
    paths = plot_run(run)
    assert [p.name for p in paths] == list(FIGURES)
    assert all(p.parent == run / "plots" for p in paths)
    for p in paths:
        assert_png(p)


def test_metrics_only_run_skips_what_is_missing(tmp_path, caplog):
    write_metrics(tmp_path)
    out = tmp_path / "figs"
    with caplog.at_level(logging.INFO, logger="pal_atoms.jobs.plotting"):
        paths = plot_run(tmp_path, out)
    assert [p.name for p in paths] == ["uncertainty.png", "learning_curve.png"]
    for p in paths:
        assert_png(p)
    text = caplog.text
    assert "labels figure skipped" in text
    assert "parity plot skipped" in text


def test_store_only_run_and_no_test_error(tmp_path):
    write_store(tmp_path, ["ok", "failed", "ok"])
    write_metrics(tmp_path, with_mae=False)
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["labels.png", "uncertainty.png"]


def test_a_damaged_committee_is_skipped_with_a_warning(tmp_path, caplog):
    write_metrics(tmp_path)
    (tmp_path / "committee").mkdir()
    (tmp_path / "committee" / "committee.json").write_text("{not json")
    write(tmp_path / "test_set.extxyz", [labelled(bi4(1), 1)])
    with caplog.at_level(logging.WARNING, logger="pal_atoms.jobs.plotting"):
        paths = plot_run(tmp_path)
    assert "parity.png" not in [p.name for p in paths]
    assert "parity plot skipped" in caplog.text


def test_not_a_run_directory_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a pal-atoms run directory") as info:
        plot_run(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        plot_run(tmp_path / "missing")


class ShiftedCommittee:
    """Stand-in predicting the reference forces plus 0.1 eV/Å."""

    def predict_batch(self, frames):
        return [{"forces": a.get_forces() + 0.1} for a in frames]


def test_plot_parity_with_any_predictor(tmp_path):
    frames = [labelled(bi4(i), i) for i in range(40)]  # more than one batch
    path = plot_parity(ShiftedCommittee(), frames, tmp_path / "p.png")
    assert_png(path)
    with pytest.raises(ValueError, match="at least one"):
        plot_parity(ShiftedCommittee(), [], tmp_path / "q.png")


def test_a_store_held_open_by_a_running_job_is_still_plotted(tmp_path, caplog):
    write_store(tmp_path, ["ok", "failed", "ok"])
    holder = (  # another process holds the store open for writing, as a running job does
        "import sys; from pal_atoms.store import LabelStore; "
        f"s = LabelStore({str(tmp_path / 'labels.h5')!r}); print('ready', flush=True); "
        "sys.stdin.read()"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert job.stdout is not None
        assert job.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="open for writing"):
            LabelStore(tmp_path / "labels.h5", mode="r")
        with caplog.at_level(logging.WARNING, logger="pal_atoms.jobs.plotting"):
            paths = plot_run(tmp_path)
    finally:
        job.communicate("", timeout=30)
    assert [p.name for p in paths] == ["labels.png", "uncertainty.png"]
    assert caplog.text == ""
