"""``pal-atoms md``: bad input ends with one line and exit code 2; a short real run works."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from pal_atoms.cli import main
from pal_atoms.store import LabelStore


def _bi(n: int = 4, charge: int = 0) -> Atoms:
    pos = np.array([[0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3, 3, 0], [3, 0, 3]])[:n]
    atoms = Atoms(f"Bi{n}", positions=pos.astype(float))
    atoms.info["charge"] = charge
    return atoms


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pal-atoms: error:"), err
    assert match in err, err


@pytest.fixture
def bad_inputs(tmp_path):
    files = {}
    files["empty"] = tmp_path / "empty.xyz"
    files["empty"].touch()
    files["garbage"] = tmp_path / "garbage.xyz"
    files["garbage"].write_bytes(b"\x00\x01 not a structure \xff\n")
    files["element"] = tmp_path / "element.xyz"
    files["element"].write_text("1\n\nQq 0 0 0\n")
    files["uncovered"] = tmp_path / "uncovered.xyz"
    ase.io.write(files["uncovered"], Atoms("Og2", positions=[[0, 0, 0], [3, 0, 0]]))
    files["overlap"] = tmp_path / "overlap.xyz"
    ase.io.write(files["overlap"], Atoms("Bi2", positions=[[0, 0, 0], [0.1, 0, 0]]))
    files["nan"] = tmp_path / "nan.xyz"
    files["nan"].write_text("2\n\nBi 0 0 0\nBi nan 0 0\n")
    files["good"] = tmp_path / "good.xyz"
    ase.io.write(files["good"], [_bi(4)], format="extxyz")
    files["doublet"] = tmp_path / "doublet.xyz"
    wrong = _bi(4)
    wrong.info["multiplicity"] = 2  # 332 electrons: no doublet
    ase.io.write(files["doublet"], [wrong], format="extxyz")
    files["config"] = tmp_path / "bad.toml"
    files["config"].write_text("temperature_K = 300\nwarp_speed = 9\n")
    return files


@pytest.mark.parametrize(
    ("case", "extra", "match"),
    [
        ("missing", [], "no such file"),
        ("empty", [], "is empty"),
        ("garbage", [], "cannot read structures"),
        ("element", [], "unknown element symbol"),
        ("uncovered", [], "Og"),
        ("overlap", [], "apart"),
        ("nan", [], "non-finite"),
        ("good", ["--temperature-K", "-5"], "temperature_K must be positive"),
        ("good", ["--timestep-fs", "0"], "timestep_fs must be positive"),
        ("good", ["--config", "CONFIG"], "unknown config keys: warp_speed"),
        ("good", ["--np", "0"], "np must be >= 1"),
        ("good", ["--model-option", "warp_speed=9"], "unknown mace hyperparameter(s)"),
        ("good", ["--model-option", "r_max"], "--model-option needs KEY=VALUE"),
        ("good", ["--model-option", "r_max=-1"], "r_max must be positive"),
        ("good", ["--training", "sometimes"], "unknown training 'sometimes'"),
        ("good", ["--queue-policy", "random"], "queue_policy must be 'uncertainty' or"),
        ("good", ["--target-force-error", "-0.1"], "target_force_error must be a positive"),
        ("good", ["--target-force-error", "nan"], "target_force_error must be a positive"),
        ("good", ["--convergence-fraction", "1.5"], "convergence_fraction must lie in [0, 1]"),
        ("good", ["--convergence-window", "0"], "convergence_window must be a positive"),
        ("good", ["--time-limit", "-5"], "time_limit_s must be a positive"),
        ("good", ["--max-labels", "0"], "max_labels must be a positive"),
        ("good", ["--final-check-ps", "-1"], "final_check_ps must be >= 0"),
        ("good", ["--steps-per-label", "0"], "steps_per_label must be a positive number"),
        ("good", ["--generator-rate-hz", "-3"], "generator_rate_hz must be positive"),
        ("good", ["--lower", "2", "--upper", "1"], "need 0 <= lower <= upper"),
        ("doublet", [], "multiplicity 2"),
        ("good", ["--transfer", "0,0,1"], "transfer: expected three different atom indices"),
        ("good", ["--transfer", "H,1,2"], "transfer: expected three atom indices"),
        ("good", ["--transfer", "0,1,9"], "transfer atom 9 is outside the frame (4 atoms)"),
        ("good", ["--bias-k-eV-A2", "0"], "bias_k_eV_A2 must be positive"),
        ("good", ["--steer-steps", "0"], "steer_steps must be >= 1"),
        ("good", ["--test-equilibration-fs", "-1"], "test_equilibration_fs must be >= 0 fs"),
        ("good", ["--test-spacing-fs", "0"], "test_spacing_fs must be > 0 fs"),
        ("good", ["--test-trajectories", "0"], "test_trajectories must be >= 1"),
        ("good", ["--test-spacing-fs", "inf"], "test_spacing_fs must be > 0 fs"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, bad_inputs, case, extra, match):
    system = bad_inputs.get(case, tmp_path / "missing.xyz")
    extra = [str(bad_inputs["config"]) if x == "CONFIG" else x for x in extra]
    argv = ["md", "--system", str(system), "--out", str(tmp_path / "run"), *extra]
    _one_line_error(capsys, argv, match)


def test_model_options_from_file_and_flags_reach_the_committee(tmp_path, bad_inputs):
    from pal_atoms.cli import build_parser
    from pal_atoms.cli.run import _md_config
    from pal_atoms.jobs.md import _committee

    toml = tmp_path / "run.toml"
    toml.write_text('[model_options]\nhidden_irreps = "16x0e"\nr_max = 4.5\n')
    argv = ["md", "--system", str(bad_inputs["good"]), "--config", str(toml)]
    argv += ["--out", str(tmp_path / "run")]  # not ./pal-run, which may hold a real run
    argv += ["--model-option", "hidden_irreps=16x0e+16x1o", "--model-option", "num_bessel=6"]
    config = _md_config(build_parser().parse_args(argv))
    # The flags win key by key; values that read as numbers become numbers.
    assert config.model_options == {"hidden_irreps": "16x0e+16x1o", "r_max": 4.5, "num_bessel": 6}
    committee = _committee(config, [_bi(4)])
    hyper = committee.model.hyper
    assert (hyper["hidden_irreps"], hyper["r_max"], hyper["num_bessel"]) == ("16x0e+16x1o", 4.5, 6)
    assert committee.cutoff == 4.5


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys, bad_inputs):
    (tmp_path / "notarun").mkdir()
    argv = [
        "md",
        "--system",
        str(bad_inputs["good"]),
        "--out",
        str(tmp_path / "notarun"),
        "--resume",
    ]
    _one_line_error(capsys, argv, "is not a pal-atoms run")


@pytest.mark.slow
def test_short_md_run_produces_a_complete_run_directory(tmp_path, capsys):
    system = tmp_path / "two.xyz"
    ase.io.write(system, [_bi(4), _bi(5, charge=-1)], format="extxyz")
    out = tmp_path / "run"
    argv = [
        "md",
        "--system",
        str(system),
        "--out",
        str(out),
        "--np",
        "1",
        "--max-labels",
        "6",
        "--time-limit",
        "120",
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
        "200",
        "--lower",
        "0.0",
        "--upper",
        "100",
        "--patience",
        "50",
        # Short: a 0.2 ps check, no pacing of generators or labels (the defaults pace
        # them for a long run on a small machine).
        "--final-check-ps",
        "0.2",
        "--generator-rate-hz",
        "1000",
        "--steps-per-label",
        "1",
    ]
    assert main(argv) == 0
    assert "held-out force MAE" in capsys.readouterr().out
    with LabelStore(out / "labels.h5", mode="r") as store:
        ids = {a.info["generator_id"] for a in store.read()}
        assert {0, 1} <= ids  # labels from every starting frame
        first_ok = store.counts()["ok"]
        assert first_ok >= 4 + 6  # bootstrap + this run
    from pal_atoms.calculators import CommitteeCalculator

    committee = CommitteeCalculator.load(out / "committee", device="cpu")
    assert committee.n_members == 2
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["final_test_force_mae"])
    assert (out / "metrics.jsonl").read_text().strip()
    assert json.loads((out / "config.json").read_text())["committee"] == 2
    # Figures of the run (labels over time, uncertainty, learning curve, parity).
    assert main(["plot", str(out)]) == 0
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) >= 3 and all(p.stat().st_size > 1000 for p in pngs), pngs
    assert (out / "plots" / "calibration.png").is_file()
    # The run says how it ended and checked its committee per starting system.
    assert summary["stop_criterion"] in {"max_labels", "time_limit", "converged"}
    systems = {c["system"] for c in summary["final_check"]["systems"]}
    assert systems == {"Bi4(0)", "Bi5(-1)"}
    assert all(c["nve_steps"] > 0 for c in summary["final_check"]["systems"])
    assert 0 < summary["test_calibration"]["rmse_over_std"] < float("inf")
    # The calibration report's MAE is the run's own, on the same frames and committee.
    assert summary["test_calibration"]["force_mae"] == pytest.approx(
        summary["final_test_force_mae"], rel=1e-6
    )
    # A second run into the same directory needs --resume.
    assert main(argv) == 2
    # --resume continues the stopped run.
    assert main([*argv, "--resume"]) == 0
    with LabelStore(out / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] >= first_ok + 6


def test_method_and_basis_reach_every_oracle_family():
    from pal_atoms.oracles import make_oracle

    from pal_atoms.jobs.setup import oracle_settings

    assert oracle_settings("xtb", "GFN1-xTB", None) == {"method": "GFN1-xTB"}
    for name in ("pyscf", "pyscf-excited", "turbomole", "turbomole-excited"):
        settings = oracle_settings(name, "PBE0", "def2-SVP")
        assert settings == {"functional": "PBE0", "basis": "def2-SVP"}
        oracle = make_oracle(name, **settings)
        assert oracle.settings["functional"] == "PBE0"
    assert make_oracle("xtb", **oracle_settings("xtb", "GFN1-xTB", None)).method == "GFN1-xTB"


def test_a_toml_file_has_shared_keys_and_a_table_per_job(tmp_path, bad_inputs):
    from pal_atoms.cli import build_parser
    from pal_atoms.cli.run import _md_config

    toml = tmp_path / "run.toml"
    toml.write_text(
        "committee = 3\ntemperature_K = 400\n"
        "[md]\nsteps = 50\ntemperature_K = 500\n"
        "[ts]\ndriver = 'neb'\n"
    )
    base = ["--system", str(bad_inputs["good"]), "--config", str(toml)]
    base += ["--out", str(tmp_path / "run")]
    md = _md_config(build_parser().parse_args(["md", *base]))
    assert (md.committee, md.temperature_K, md.steps) == (3, 500, 50)  # the job's table wins
    ts = _md_config(build_parser().parse_args(["ts", *base]))  # [md] steps is not for ts
    assert (ts.committee, ts.temperature_K, ts.driver) == (3, 400, "neb")


def test_run_md_refuses_a_job_config_without_its_generators(bad_inputs):
    from pal_atoms.core.errors import ConfigError
    from pal_atoms.jobs.md import run_md
    from pal_atoms.jobs.ts import TSRunConfig

    with pytest.raises(ConfigError, match="TSRunConfig needs its job's make_generators"):
        run_md(TSRunConfig(system=bad_inputs["good"]))
