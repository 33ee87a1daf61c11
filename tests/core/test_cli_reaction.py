"""Radicals and steered MD end to end: ``pal-atoms md`` on a doublet H-transfer complex."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pal_atoms.cli import main
from pal_atoms.store import LabelStore

HAT = Path(__file__).resolve().parents[2] / "examples" / "hat_methyl.xyz"


def test_a_doublet_transfer_run_labels_doublets_and_steers_the_hydrogen(tmp_path, capsys):
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    out = tmp_path / "run"
    argv = [
        "md", "--system", str(HAT), "--out", str(out), "--np", "1", "--max-labels", "50",
        "--time-limit", "600", "--committee", "2", "--bootstrap-per-frame", "3",
        "--test-per-frame", "2", "--steps", "80", "--steer-steps", "40", "--bias-k-eV-A2", "20",
        "--temperature-K", "300", "--timestep-fs", "0.5", "--final-check-ps", "0.02",
        # Every step trusted: the run ends when the steered generator has taken its steps.
        "--lower", "1000", "--upper", "2000", "--generator-rate-hz", "1000",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    with LabelStore(out / "labels.h5", mode="r") as store:
        labels = store.read()
    assert len(labels) == 3
    assert {a.info["multiplicity"] for a in labels} == {2}  # xTB labelled doublets
    from pal_atoms.calculators import CommitteeCalculator

    committee = CommitteeCalculator.load(out / "committee", device="cpu")
    assert committee.species.spin_aware and committee.species.multiplicities == [2]
    # The steered generator carried H 1 from C 0 (s = -0.66 Å) to C 2's side (s > 0).
    state = json.loads((out / "generators.json").read_text())["0"]
    pos = np.array(state["current"]["positions"])
    s = np.linalg.norm(pos[0] - pos[1]) - np.linalg.norm(pos[2] - pos[1])
    assert state["step"] == 80 and s > 0.2, s
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_criterion"] == "generators_finished"
    assert np.isfinite(summary["final_test_force_mae"])


GLY = HAT.with_name("hat_glycine.xyz")
# A short, deterministic loop: every step trusted, so the run ends when the steered
# generator has taken its steps; the labels are the bootstrap ones.
SHORT = [
    "--np", "1", "--committee", "2", "--bootstrap-per-frame", "3", "--test-per-frame", "1",
    "--steps", "60", "--steer-steps", "40", "--bias-k-eV-A2", "20", "--temperature-K", "300",
    "--timestep-fs", "0.5", "--final-check-ps", "0", "--lower", "1000", "--upper", "2000",
    "--generator-rate-hz", "1000", "--time-limit", "600", "--path-images", "5",
    "--path-steps", "30",
]  # fmt: skip


def _reaction(out, *extra, system=HAT):
    return ["reaction", "--system", str(system), "--out", str(out), *SHORT, *extra]


@pytest.mark.slow
def test_a_two_level_reaction_run_stores_both_levels_and_reports_the_barrier(tmp_path, capsys):
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    out = tmp_path / "run"
    # GFN1-xTB stands in for the expensive level here (the PySCF run is the slow test).
    high = ["--high-oracle", "xtb", "--high-method", "GFN1-xTB", "--high-budget", "4",
            "--high-steps", "40", "--final-check-ps", "0.05"]  # fmt: skip
    assert main(_reaction(out, *high)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "barrier along path 0 (eV): committee" in printed
    assert "4 xtb (GFN1-xTB)" in printed
    with LabelStore(out / "labels.h5", mode="r") as store:
        cheap = store.read()
    with LabelStore(out / "labels_high.h5", mode="r") as store:
        expensive = store.read()
    assert {a.info["method"] for a in cheap} == {"GFN2-xTB"}
    assert [a.info["method"] for a in expensive] == ["GFN1-xTB"] * 4
    assert {a.info["high_source"] for a in expensive} == {"path", "uncertain"}
    assert {a.info["multiplicity"] for a in expensive} == {2}
    report = json.loads((out / "summary.json").read_text())["reaction"]
    assert report["high_labels"] == 4 and report["high_learning"] == "delta"  # the default
    (row,) = report["paths"]
    assert len(row["cv_A"]) == 5 and row["high_energy_eV"][0] == 0.0
    assert row["committee_barrier_error_eV"] == pytest.approx(
        row["committee_barrier_eV"] - row["high_barrier_eV"]
    )
    lines = (out / "path.csv").read_text().splitlines()
    assert lines[0] == "path,image,cv_A,committee_eV,cheap_eV,high_eV" and len(lines) == 6
    assert (out / "path.png").stat().st_size > 0
    assert (out / "committee_high").is_dir()
    # The final (Δ) committee checked on its own path against the expensive level.
    check = report["path_check"]
    assert check["level"] == "high" and check["frames"] == 5
    assert check["force_mae"] > 0 and check["rmse_over_std"] > 0
    # ... and in NVE, as the md job checks the cheap committee (100 steps of 0.5 fs).
    (nve,) = report["final_check_high"]["systems"]
    assert nve["nve_steps"] == 100 and np.isfinite(nve["energy_drift_eV_atom_ps"])
    assert report["final_check_high"]["stable"] == nve["stable"]
    # The expensive labels are exported like any store's.
    assert main(["export", str(out / "labels_high.h5"), str(tmp_path / "high.extxyz")]) == 0


@pytest.mark.slow
def test_fine_tuning_the_committee_is_the_other_way_to_learn_the_expensive_level(tmp_path, capsys):
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    out = tmp_path / "run"
    high = ["--high-oracle", "xtb", "--high-method", "GFN1-xTB", "--high-budget", "3",
            "--high-steps", "30", "--high-learning", "fine-tune"]  # fmt: skip
    assert main(_reaction(out, *high)) == 0, capsys.readouterr().err
    report = json.loads((out / "summary.json").read_text())["reaction"]
    assert report["high_learning"] == "fine-tune" and report["high_labels"] == 3
    assert np.isfinite(report["paths"][0]["committee_barrier_eV"])


@pytest.mark.slow
def test_the_peptide_example_runs_at_the_cheap_level(tmp_path, capsys):
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    out = tmp_path / "run"
    assert main(_reaction(out, "--transfer-samples", "4", system=GLY)) == 0, capsys.readouterr().err
    # Steered MD (generator 0) and the transfer sampler (generator 1) both ran.
    assert sorted(json.loads((out / "generators.json").read_text())) == ["0", "1"]
    report = json.loads((out / "summary.json").read_text())["reaction"]
    (row,) = report["paths"]
    assert "high_barrier_eV" not in row and row["cheap_barrier_eV"] is not None
    # Ac-Gly-NHMe + CH3: the H goes from C-alpha (5) to the methyl carbon (19).
    assert row["cv_A"][0] < -1.0 < 1.0 < row["cv_A"][-1]
    assert "committee_barrier_error_eV" in row
    assert report["path_check"]["level"] == "cheap" and report["path_check"]["frames"] == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--high-method", "PBE"], "high_method and high_basis need high_oracle"),
        (["--high-oracle", "xtb", "--high-budget", "0"], "high_budget must be >= 1"),
        (["--path-images", "2"], "path_images must be >= 3"),
    ],
)
def test_bad_reaction_options_exit_2_with_one_line(tmp_path, capsys, extra, message):
    assert main(_reaction(tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_frame_without_a_transfer_exits_2_before_anything_runs(tmp_path, capsys):
    from ase.io import read, write

    atoms = read(HAT)
    del atoms.info["transfer"]
    write(tmp_path / "plain.xyz", atoms, format="extxyz")
    assert main(_reaction(tmp_path / "run", system=tmp_path / "plain.xyz")) == 2
    err = capsys.readouterr().err.strip()
    assert "has no transfer: give --transfer D,H,A" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_two_level_run_with_pyscf_dft_as_the_expensive_level(tmp_path, capsys):
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    pytest.importorskip("pyscf", reason="pyscf not installed")
    out = tmp_path / "run"
    high = ["--high-oracle", "pyscf", "--high-method", "PBE", "--high-basis", "sto-3g",
            "--high-budget", "4", "--high-steps", "40"]  # fmt: skip
    assert main(_reaction(out, *high)) == 0, capsys.readouterr().err
    with LabelStore(out / "labels_high.h5", mode="r") as store:
        expensive = store.read()
    assert [a.info["oracle"] for a in expensive] == ["pyscf"] * 4
    assert {a.info["multiplicity"] for a in expensive} == {2}  # UKS doublets
    # Resumed, the stored expensive labels count towards the budget: none is added.
    assert main([*_reaction(out, *high), "--resume"]) == 0, capsys.readouterr().err
    with LabelStore(out / "labels_high.h5", mode="r") as store:
        assert len(store) == 4
    report = json.loads((out / "summary.json").read_text())["reaction"]
    assert report["high_oracle"].startswith("pyscf") and report["high_labels"] == 4
