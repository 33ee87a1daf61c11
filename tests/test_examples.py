"""The examples: scripts parse, sbatch files are valid bash, and each example runs (--quick).

The fastest example runs in the default suite; the others, and ``run_all.sh``, are
marked ``slow``. Together they run what ``run_all.sh`` runs, with assertions, so CI runs
them here and not the script again.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
SBATCH = sorted((EXAMPLES / "slurm").glob("*.sbatch"))


def run_example(args: list[str], tmp_path: Path, timeout: float = 240) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_every_example_is_documented_and_has_quick_mode():
    assert {p.name for p in SCRIPTS} >= {
        "drop_in_md.py", "python_loop.py", "on_the_fly_md.py", "dft_pyscf_bi.py",
    }  # fmt: skip
    for path in SCRIPTS:
        tree = ast.parse(path.read_text(), filename=str(path))
        doc = ast.get_docstring(tree)
        assert doc, f"{path.name} has no module docstring"
        assert "Run::" in doc, f"{path.name}: the docstring should say how to run it"
        assert '"--quick"' in path.read_text(), f"{path.name} has no --quick option"


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_scripts_parse(path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    proc = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = path.read_text()
    assert text.startswith("#!/bin/bash")
    assert "#SBATCH --nodes=" in text
    assert "srun" in text
    assert "-m mpi4py" in text
    # The script it launches exists and takes the flags given.
    assert "examples/python_loop.py --mpi" in text
    loop = (EXAMPLES / "python_loop.py").read_text()
    for flag in ("--prediction-ranks", "--oracle-ranks", "--training-ranks", "--max-labels"):
        assert flag in text
        assert f'"{flag}"' in loop


def test_run_all_parses():
    proc = subprocess.run(
        ["bash", "-n", str(EXAMPLES / "run_all.sh")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_dft_pyscf_bi_quick(tmp_path):
    """The fastest example (~10 s): PySCF LDA labels of Bi2, one deliberately unconverged."""
    pytest.importorskip("pyscf", reason="PySCF is the optional 'dft' extra")
    out = run_example([str(EXAMPLES / "dft_pyscf_bi.py"), "--quick", "--store", "s.h5"], tmp_path)
    assert "Bi2: ok" in out
    assert "unconverged (kept without numbers)" in out
    assert "'ok': 2" in out
    assert "'unconverged': 1" in out


@pytest.mark.slow
def test_on_the_fly_md_quick(tmp_path):
    out = run_example([str(EXAMPLES / "on_the_fly_md.py"), "--quick", "--store", "l.h5"], tmp_path)
    assert "labels stored" in out
    assert (tmp_path / "l.h5").is_file()


@pytest.mark.slow
def test_drop_in_md_quick(tmp_path):
    out = run_example([str(EXAMPLES / "drop_in_md.py"), "--quick", "--save", "cm"], tmp_path)
    assert "no --committee given" in out
    assert "max_force_std" in out
    out = run_example([str(EXAMPLES / "drop_in_md.py"), "--quick", "--committee", "cm"], tmp_path)
    assert "loaded a 3-member committee" in out


@pytest.mark.slow
@pytest.mark.parametrize("training", [[], ["--continuous"]], ids=["rounds", "continuous"])
def test_python_loop_quick(tmp_path, training):
    out = run_example(
        [str(EXAMPLES / "python_loop.py"), "--quick", *training, "--out", "run"], tmp_path
    )
    assert "stopped: reached max_labels=8" in out
    assert (tmp_path / "run" / "labels.h5").is_file()


def test_the_shipped_peptide_complex_is_what_its_builder_makes(tmp_path):
    pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")
    import ase.io
    import numpy as np

    out = run_example([str(EXAMPLES / "build_hat_glycine.py"), "--out", "gly.xyz"], tmp_path)
    assert "wrote" in out
    built, shipped = ase.io.read(tmp_path / "gly.xyz"), ase.io.read(EXAMPLES / "hat_glycine.xyz")
    assert built.get_chemical_formula() == shipped.get_chemical_formula() == "C6H13N2O2"
    assert np.abs(built.positions - shipped.positions).max() < 1e-3
    assert list(shipped.info["transfer"]) == [5, 11, 19] and shipped.info["multiplicity"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("mpi", [False, pytest.param(True, marks=pytest.mark.mpi)])
def test_thermofluid_runs_end_to_end(tmp_path, mpi):
    import json

    from pal_atoms.generic.channel import openfoam_available
    from pal_atoms.store.sample_store import SampleStore

    if (reason := openfoam_available()) is not None:
        pytest.skip(reason)
    script = str(EXAMPLES / "thermofluid" / "run.py")
    args = [script, "--out", "run", "--max-labels", "10", "--test-size", "4", "--retrain", "5"]
    if mpi:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
        if mpiexec is None:
            pytest.skip("mpiexec not found (the 'mpi' extra)")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [mpiexec, "-n", "5", sys.executable, "-m", "mpi4py", *args, "--mpi"], cwd=tmp_path,
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    else:
        run_example(args, tmp_path, timeout=300)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["labels_ok"] >= 10 and summary["best"] is not None
    assert summary["best"]["cf"] <= summary["problem"]["cf_max"]
    curve = summary["test_mae"]
    assert curve[0][0] == 0 and curve[-1][1] < curve[0][1]
    assert (tmp_path / "run" / "thermofluid.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "committee").exists()
    with SampleStore(tmp_path / "run" / "labels.h5", mode="r") as store:
        assert store.counts()["ok"] >= 10
        assert set(store.column("oracle")[store.statuses() == "ok"]) == {"openfoam"}
