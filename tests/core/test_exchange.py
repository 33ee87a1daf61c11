from __future__ import annotations

import ase.io
import numpy as np
import pytest

from pal_atoms.cli import main
from pal_atoms.core.errors import InputError
from pal_atoms.store import LabelStore
from pal_atoms.store.exchange import export_extxyz, import_extxyz


@pytest.fixture
def store_path(tmp_path, mixed_frames):
    path = tmp_path / "labels.h5"
    with LabelStore(path) as store:
        for i, a in enumerate(mixed_frames):
            store.append(a, oracle="xtb", method="GFN2-xTB", generator_id=i, uncertainty=0.1 * i)
        store.append(mixed_frames[0], "failed", error="SCF exploded", oracle="xtb")
    return path


def test_export_is_readable_by_ase_with_configurable_keys(tmp_path, store_path, mixed_frames):
    out = tmp_path / "out.extxyz"
    assert export_extxyz(store_path, out) == len(mixed_frames)  # ok records only
    frames = ase.io.read(out, ":")
    for a, b in zip(mixed_frames, frames, strict=True):
        assert b.info["REF_energy"] == pytest.approx(a.get_potential_energy())
        np.testing.assert_allclose(b.arrays["REF_forces"], a.get_forces())
        assert b.info["oracle"] == "xtb"
    np.testing.assert_allclose(frames[3].info["REF_stress"], mixed_frames[3].get_stress())
    custom = tmp_path / "custom.extxyz"
    export_extxyz(store_path, custom, energy_key="dft_E", forces_key="dft_F")
    first = ase.io.read(custom, 0)
    assert "dft_E" in first.info and "dft_F" in first.arrays


def test_export_import_round_trip(tmp_path, store_path, mixed_frames):
    out = tmp_path / "out.extxyz"
    export_extxyz(store_path, out)
    new = tmp_path / "new.h5"
    assert import_extxyz(out, new) == len(mixed_frames)
    with LabelStore(new, mode="r") as store:
        back = store.read()
    for a, b in zip(mixed_frames, back, strict=True):
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)  # extxyz: 8 decimals
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy())
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-7)
        assert (b.info["oracle"], b.info["method"]) == ("xtb", "GFN2-xTB")
    assert [b.info["generator_id"] for b in back] == [0, 1, 2, 3]
    assert back[1].info["charge"] == -2
    np.testing.assert_allclose(back[3].get_stress(), mixed_frames[3].get_stress())


def test_import_of_plain_ase_labels_and_missing_energy(tmp_path, mixed_frames):
    plain = tmp_path / "plain.extxyz"
    ase.io.write(plain, mixed_frames)  # energy/forces through ASE's calculator keys
    store = tmp_path / "s.h5"
    assert import_extxyz(plain, store, oracle="dft", method="PBE") == len(mixed_frames)
    with LabelStore(store, mode="r") as s:
        assert {a.info["oracle"] for a in s.read()} == {"dft"}
    bare = tmp_path / "bare.xyz"
    ase.io.write(bare, [a.copy() for a in mixed_frames[:2]], format="extxyz")
    with pytest.raises(InputError, match=r"frame 0 .* has no energy"):
        import_extxyz(bare, tmp_path / "t.h5")


def test_cli_export_import_and_one_line_errors(tmp_path, store_path, capsys):
    out = tmp_path / "o.extxyz"
    assert main(["export", str(store_path), str(out)]) == 0
    assert main(["import", str(out), str(tmp_path / "n.h5")]) == 0
    assert main(["status", str(tmp_path / "n.h5")]) == 0
    assert "4 records" in capsys.readouterr().out
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not a structure\n")
    for argv in (
        ["import", str(tmp_path / "missing.xyz"), str(tmp_path / "x.h5")],
        ["import", str(garbage), str(tmp_path / "x.h5")],
        ["export", str(garbage), str(tmp_path / "y.xyz")],
        ["status", str(garbage.parent / "not-a-run")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pal-atoms: error:"), err
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
