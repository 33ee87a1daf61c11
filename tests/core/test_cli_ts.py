"""``pal-atoms ts``: transition-state exploration runs (Sella, NEB) and their bad input."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from pal_atoms.cli import main
from pal_atoms.core.errors import ConfigError
from pal_atoms.store import LabelStore


def _bi4(shift: float = 0.0) -> Atoms:
    # A Bi4 tetrahedron (bond 3.0 Å); ``shift`` moves one atom through the opposite face.
    pos = np.array([[0, 0, 0], [3.0, 0, 0], [1.5, 2.6, 0], [1.5, 0.87, 2.45 - shift]])
    atoms = Atoms("Bi4", positions=pos)
    atoms.info["charge"] = 0
    return atoms


SHORT = [
    "--np", "1", "--max-labels", "4", "--time-limit", "180", "--train-steps", "6",
    "--committee", "2", "--bootstrap-per-frame", "2", "--test-per-frame", "1",
    "--retrain-size", "2", "--max-iterations", "15", "--lower", "0.0", "--upper", "100",
    "--patience", "20",
]  # fmt: skip


@pytest.mark.parametrize(
    ("frames", "extra", "match"),
    [
        (1, ["--driver", "neb"], "takes pairs of frames"),
        (2, ["--driver", "dimer"], "invalid choice"),
        (2, ["--fmax-eV-A", "0"], "fmax_eV_A must be > 0"),
        (2, ["--searches-per-frame", "0"], "searches_per_frame must be >= 1"),
        # The MD generators' own options are not the saddle search's.
        (2, ["--steps", "10"], "unrecognized arguments: --steps"),
        (2, ["--transfer", "0,1,2"], "unrecognized arguments: --transfer"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, frames, extra, match):
    system = tmp_path / "min.xyz"
    ase.io.write(system, [_bi4(), _bi4(0.3)][:frames], format="extxyz")
    try:
        code = main(["ts", "--system", str(system), "--out", str(tmp_path / "run"), *extra])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and match in err, err


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["sella", "neb"])
def test_short_ts_run(tmp_path, capsys, driver):
    system = tmp_path / "min.xyz"
    ase.io.write(system, [_bi4(), _bi4(4.9)], format="extxyz")
    out = tmp_path / "run"
    argv = ["ts", "--system", str(system), "--out", str(out), "--driver", driver, *SHORT]
    assert main([*argv, "--searches-per-frame", "1", "--neb-images", "3"]) == 0
    printed = capsys.readouterr().out
    assert "converged saddle(s) checked against the oracle" in printed
    with LabelStore(out / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] >= 4 + 4  # bootstrap + this run
        ids = {a.info["generator_id"] for a in store.read()} - {-1}
        assert ids  # labels from the searches themselves
    summary = json.loads((out / "summary.json").read_text())
    assert isinstance(summary["saddles"], list)
    states = json.loads((out / "generators.json").read_text())
    assert len(states) == (2 if driver == "sella" else 1)
    if summary["saddles"]:
        saddles = ase.io.read(out / "saddles.extxyz", ":")
        assert len(saddles) == len(summary["saddles"])
        assert all(np.isfinite(s.get_potential_energy()) for s in saddles)


def test_each_job_config_holds_only_its_own_options():
    """md and reaction steer MD; ts and sh share the job settings but not the MD ones."""
    from dataclasses import fields

    from pal_atoms.jobs.md_config import JobConfig, MDRunConfig
    from pal_atoms.jobs.reaction import ReactionRunConfig
    from pal_atoms.jobs.sh import SHRunConfig
    from pal_atoms.jobs.ts import TSRunConfig

    md_only = {f.name for f in fields(MDRunConfig)} - {f.name for f in fields(JobConfig)}
    assert md_only == {
        "steps", "generators_per_frame", "transfer", "bias_k_eV_A2", "steer_steps", "steering"
    }  # fmt: skip
    assert md_only <= {f.name for f in fields(ReactionRunConfig)}
    for cls in (TSRunConfig, SHRunConfig):
        assert issubclass(cls, JobConfig) and not issubclass(cls, MDRunConfig)
        assert not md_only & {f.name for f in fields(cls)}
    with pytest.raises(ConfigError, match="unknown config keys: steps"):
        TSRunConfig.from_dict({"system": "x.xyz", "steps": 10})


def test_md_jobs_default_to_a_longer_patience_than_ts(capsys):
    """MD must leave its starting geometry while everything is uncertain; ts keeps 10."""
    from pal_atoms.jobs.md_config import MDRunConfig
    from pal_atoms.jobs.reaction import ReactionRunConfig
    from pal_atoms.jobs.sh import SHRunConfig
    from pal_atoms.jobs.ts import TSRunConfig

    assert MDRunConfig(system="x.xyz").patience == 200
    assert ReactionRunConfig(system="x.xyz").patience == 200
    assert TSRunConfig(system="x.xyz").patience == 10
    assert SHRunConfig(system="x.xyz").patience == 10
    for job, default in (("md", 200), ("ts", 10)):  # the CLI shows each job's own preset
        with pytest.raises(SystemExit):
            main([job, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"before a restart (default: {default})" in text
