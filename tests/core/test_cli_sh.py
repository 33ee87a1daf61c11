"""``pal-atoms sh``: surface-hopping active learning end to end (real PySCF), bad input."""

from __future__ import annotations

import csv
import json
import math

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from pal_atoms.cli import main
from pal_atoms.store import LabelStore

pytest.importorskip("pyscf", reason="the excited-state oracle needs PySCF")

#: A run that fits a CI budget: minimal basis, few labels, 5-step trajectories that every
#: prediction may finish (lower 0, upper 100: everything uncertain, nothing untrusted), so
#: the run ends when the generators are done (the time limit is only a safety cap).
FAST = [
    "--basis", "sto-3g", "--committee", "2", "--model", "schnet",
    "--test-per-frame", "2", "--bootstrap-per-frame", "3", "--generators", "2",
    "--trajectories", "1", "--duration-fs", "2.5", "--lower", "0", "--upper", "100",
    "--patience", "50", "--time-limit", "400", "--final-check-ps", "0",
    "--steps-per-label", "1", "--generator-rate-hz", "1000",
]  # fmt: skip


def _formaldehyde(tmp_path):
    path = tmp_path / "h2co.xyz"
    ase.io.write(path, molecule("H2CO"), format="extxyz")
    return path


def _check_run(out, printed: str) -> None:
    assert "surface hopping:" in printed
    with LabelStore(out / "labels.h5", mode="r") as store:
        labels = store.read()
        assert len(labels) >= 3
        for atoms in labels:  # every label holds S0, S1 and S2 with forces
            results = atoms.calc.results
            assert results["state_energies"].shape == (3,)
            assert results["state_forces"].shape == (3, 4, 3)
            assert np.all(np.diff(results["state_energies"]) >= 0)
        assert {a.info["generator_id"] for a in labels} - {-1}  # labels from trajectories
    modes = json.loads((out / "normal_modes.json").read_text())
    assert len(modes["wavenumbers_cm1"]) == 6  # 3N - 6 for formaldehyde
    report = json.loads((out / "summary.json").read_text())["surface_hopping"]
    assert len(report["test_state_force_mae"]) == 3
    assert all(math.isfinite(m) for m in report["test_state_force_mae"])
    with (out / "populations.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["time_fs", "S0", "S1", "S2", "trajectories"]
    assert report["trajectories_complete"] >= 1
    body = np.array(rows[1:], dtype=float)
    assert body[0, 3] == 1.0  # every trajectory starts on the highest state
    np.testing.assert_allclose(body[:, 1:4].sum(axis=1), 1.0, atol=1e-3)
    with (out / "hops.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:5] == ["generator", "trajectory", "time_fs", "from", "to"]


@pytest.mark.slow
def test_short_sh_run_in_one_process(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["sh", "--system", str(_formaldehyde(tmp_path)), "--out", str(out), "--np", "1"]
    assert main([*argv, *FAST]) == 0
    _check_run(out, capsys.readouterr().out)
    assert main(["plot", str(out)]) == 0  # populations and gaps along the trajectories
    assert (out / "plots" / "populations.png").stat().st_size > 0
    assert (out / "plots" / "gaps.png").stat().st_size > 0


@pytest.mark.mpi
@pytest.mark.slow
def test_short_sh_run_under_mpi(tmp_path, capfd):
    pytest.importorskip("mpi4py", reason="MPI runs need mpi4py")
    out = tmp_path / "run"
    argv = ["sh", "--system", str(_formaldehyde(tmp_path)), "--out", str(out), "--np", "6"]
    assert main([*argv, *FAST]) == 0
    _check_run(out, capfd.readouterr().out)  # rank 0 is a child process: its stdout


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--states", "1"], "states must be >= 2"),
        (["--initial-state", "3"], "initial_state must lie in 0..2"),
        (["--oracle", "xtb"], "invalid choice"),
        (["--duration-fs", "0.5"], "at least 3 time steps"),
        (["--oracle", "turbomole-excited", "--np", "1"], "not found on PATH"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, extra, match):
    argv = ["sh", "--system", str(_formaldehyde(tmp_path)), "--out", str(tmp_path / "run")]
    try:
        code = main([*argv, *extra])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and match in err, err


def test_open_shell_molecule_is_refused_before_any_label(tmp_path, capsys):
    radical = molecule("CH3")
    radical.info["multiplicity"] = 2
    path = tmp_path / "ch3.xyz"
    ase.io.write(path, radical, format="extxyz")
    code = main(["sh", "--system", str(path), "--out", str(tmp_path / "run"), "--np", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "closed-shell" in err, err
    assert not (tmp_path / "run" / "labels.h5").exists()
