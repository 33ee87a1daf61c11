"""pal-atoms export-model: members as mace model files that MACECalculator loads unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator
from pal_atoms.calculators import CommitteeCalculator

from pal_atoms.cli import main as cli_main
from pal_atoms.core.errors import InputError
from pal_atoms.jobs.export import export_mace

SMALL = {
    "hidden_irreps": "8x0e",
    "mlp_irreps": "4x0e",
    "radial_mlp": [8],
    "num_bessel": 4,
    "r_max": 4.5,
    "max_ell": 1,
    "correlation": 2,
}


def _perturbed(elements, charges, seed, multiplicities=None):
    """A tiny float64 MACE committee with random (non-trivial) weights, E0s, scale, shift."""
    calc = CommitteeCalculator.create(
        "mace", elements=elements, charges=charges, multiplicities=multiplicities,
        n_members=2, seed=0, device="cpu", dtype="float64", **SMALL,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in calc.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        e0 = calc.model.e0
        e0.copy_(3 * torch.randn(e0.shape, generator=gen, dtype=torch.float64) - 100)
        calc.model.scale.fill_(0.8)
        calc.model.shift.fill_(0.1)
    calc.reset()
    return calc


@pytest.fixture(scope="module")
def committees(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, elements, charges, seed, mults in [
        ("bi", ["Bi"], [0, -2], 1, None),
        ("ethanol", ["C", "H", "O"], [0], 2, None),
        # Spin-aware and factorised: element, charge and spin rows fold into one.
        ("ch2", ["C", "H"], [0, 1], 3, [1, 2, 3]),
    ]:
        calc = _perturbed(elements, charges, seed, mults)
        out[name] = (calc, calc.save(root / name))
    return out


def _bi4() -> Atoms:
    return Atoms("Bi4", positions=[[0, 0, 0], [3.1, 0, 0], [1.5, 2.7, 0], [1.5, 0.9, 2.5]])


def _ch2() -> Atoms:
    return Atoms("CH2", positions=[[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0]])


@pytest.mark.parametrize(
    ("name", "atoms", "charge", "mult"),
    [
        ("bi", _bi4(), -2, None),
        ("bi", _bi4(), 0, None),
        ("ethanol", molecule("CH3CH2OH"), 0, None),
        ("ch2", _ch2(), 0, 3),
        ("ch2", _ch2(), 1, 2),
    ],
)
def test_exported_member_matches(committees, tmp_path, monkeypatch, name, atoms, charge, mult):
    calc, directory = committees[name]
    paths = export_mace(directory, tmp_path, charge=charge, multiplicity=mult)
    assert [p.name for p in paths] == ["member_0.model", "member_1.model"]
    atoms = atoms.copy()
    atoms.info["charge"] = charge
    if mult is not None:
        atoms.info["multiplicity"] = mult
    ref = calc.predict_batch([atoms])[0]
    assert np.ptp(ref["energy_comm"]) > 1e-3  # members differ: the weights matter
    # MACECalculator unpickles a whole module with a plain torch.load (torch >= 2.6: only
    # with this variable; pal-atoms' mace import removes the one mace sets).
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    # MACECalculator extends ASE's *base class* list of implemented_properties in place
    # (a mace side effect); keep it from leaking into every later test.
    monkeypatch.setattr(
        Calculator, "implemented_properties", list(Calculator.implemented_properties)
    )
    from mace.calculators import MACECalculator

    for m, path in enumerate(paths):
        mace_calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
        a = atoms.copy()
        a.calc = mace_calc
        assert a.get_potential_energy() == pytest.approx(ref["energy_comm"][m], abs=1e-5)
        np.testing.assert_allclose(a.get_forces(), ref["forces_comm"][m], atol=1e-5, rtol=0)


def test_export_errors(committees, tmp_path):
    _, directory = committees["bi"]
    with pytest.raises(InputError, match=r"charges \[-2, 0\]"):
        export_mace(directory, tmp_path)
    with pytest.raises(InputError, match="not 1"):
        export_mace(directory, tmp_path, charge=1)
    with pytest.raises(InputError, match="does not exist"):
        export_mace(tmp_path / "missing", tmp_path)
    _, radical = committees["ch2"]
    with pytest.raises(InputError, match=r"multiplicities \[1, 2, 3\] at charge 0: choose"):
        export_mace(radical, tmp_path, charge=0)
    with pytest.raises(InputError, match="at charge 1, not 5"):
        export_mace(radical, tmp_path, charge=1, multiplicity=5)


def test_cli(committees, tmp_path, capsys):
    _, directory = committees["ethanol"]
    out = tmp_path / "out"
    assert cli_main(["-q", "export-model", str(directory), str(out), "--dtype", "float32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["member_0.model", "member_1.model"]
    assert str(out / "member_0.model") in capsys.readouterr().out

    _, bi_dir = committees["bi"]
    assert cli_main(["-q", "export-model", str(bi_dir), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--charge" in err

    schnet = CommitteeCalculator.create("schnet", elements=["H"], n_members=2, device="cpu")
    schnet_dir = schnet.save(tmp_path / "schnet")
    assert cli_main(["-q", "export-model", str(schnet_dir), str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SchNet export is not supported" in err

    states = CommitteeCalculator.create(
        "mace", elements=["H"], n_members=2, n_states=2, device="cpu", hidden_irreps="8x0e"
    )
    states_dir = states.save(tmp_path / "states")
    assert cli_main(["-q", "export-model", str(states_dir), str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 electronic states" in err


def test_mace_converts_an_export_for_lammps(committees, tmp_path):
    # mace's own converter (TorchScript model for the LAMMPS ML-MACE pair style).
    import subprocess
    import sys

    _, directory = committees["ethanol"]
    path = export_mace(directory, tmp_path, charge=0)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "mace.cli.create_lammps_model", str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    scripted = torch.jit.load(str(path) + "-lammps.pt")
    assert [int(z) for z in scripted.atomic_numbers] == [1, 6, 8]
