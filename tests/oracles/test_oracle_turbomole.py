"""Turbomole oracle: the clear error without Turbomole, scratch handling, a real run if present."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ase.build import molecule
from pal_atoms.oracles import Turbomole, label
from pal_atoms.oracles.turbomole import missing_executables

from pal_atoms.core.errors import OracleSetupError
from pal_atoms.core.label import LabelStatus


def test_missing_turbomole_names_the_executables(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OracleSetupError, match="not found on PATH: define, ridft, rdgrad"):
        label(molecule("H2"), Turbomole())
    with pytest.raises(OracleSetupError, match="define, dscf, grad"):
        Turbomole(ri=False).check(molecule("H2"))


def _fake(folder, name, stderr):
    path = folder / name
    path.write_text(f"#!/bin/sh\ncat > /dev/null\necho '{stderr}' >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_failure_keeps_scratch_directory(monkeypatch, tmp_path):
    bin_dir, scratch = tmp_path / "bin", tmp_path / "scratch"
    bin_dir.mkdir()
    _fake(bin_dir, "define", "define ended normally")
    _fake(bin_dir, "ridft", "ridft ended abnormally")
    _fake(bin_dir, "rdgrad", "rdgrad ended abnormally")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cwd = Path.cwd()
    lab = label(molecule("H2"), Turbomole(scratch_dir=str(scratch)))
    assert Path.cwd() == cwd
    assert lab.status is LabelStatus.FAILED
    kept = list(scratch.iterdir())
    assert len(kept) == 1
    assert str(kept[0]) in lab.error


@pytest.mark.turbomole
@pytest.mark.skipif(
    bool(missing_executables(("define", "ridft", "rdgrad"))),
    reason="Turbomole executables (define, ridft, rdgrad) are not on PATH",
)
def test_real_turbomole_run(tmp_path):
    oracle = Turbomole(functional="pbe", basis="def2-SVP", scratch_dir=str(tmp_path))
    lab = label(molecule("H2O"), oracle)
    assert lab.ok
    assert lab.forces.shape == (3, 3)
    assert lab.method == "pbe/def2-SVP (RI)"
    assert list(tmp_path.iterdir()) == []  # cleaned up on success
    bad = label(molecule("H2O"), oracle.with_settings(scf_iterations=1))
    assert bad.status is LabelStatus.UNCONVERGED
    assert len(list(tmp_path.iterdir())) == 1  # kept on failure
