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
        "--time-limit", "120", "--committee", "2", "--bootstrap-per-frame", "3",
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
