from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from ase.build import molecule

from pal_atoms.core.errors import InputError, StoreError, StoreFormatError
from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.store import LabelStore


def test_ragged_mixed_size_round_trip(tmp_path, mixed_frames):
    path = tmp_path / "labels.h5"
    with LabelStore(path) as store:
        for a in mixed_frames:
            store.append(a, oracle="xtb", method="GFN2-xTB")
    with LabelStore(path, mode="r") as store:
        back = store.read()
        assert len(store) == len(mixed_frames)
        # No padding: exactly one position row per atom.
        assert store._file["atoms/positions"].shape[0] == sum(len(a) for a in mixed_frames)
    for a, b in zip(mixed_frames, back, strict=True):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions)
        np.testing.assert_allclose(a.cell.array, b.cell.array)
        assert (a.pbc == b.pbc).all()
        assert b.get_potential_energy() == a.get_potential_energy()
        np.testing.assert_array_equal(b.get_forces(), a.get_forces())
    np.testing.assert_allclose(back[3].get_stress(), mixed_frames[3].get_stress())
    assert "stress" not in back[0].calc.results
    assert back[1].info["charge"] == -2


def test_provenance_round_trip(tmp_path, mixed_frames):
    settings = {"method": "GFN2-xTB", "electronic_temperature_K": 300.0}
    with LabelStore(tmp_path / "s.h5") as store:
        rid = store.append(
            mixed_frames[1],
            oracle="xtb",
            method="GFN2-xTB",
            settings=settings,
            generator_id=7,
            generator_step=1234,
            uncertainty=0.42,
            wall_time_s=0.012,
        )
        (back,) = store.read()
        info = back.info
        assert info["record_id"] == rid
        assert len(rid) == 32
        assert (info["oracle"], info["method"]) == ("xtb", "GFN2-xTB")
        assert (info["generator_id"], info["generator_step"]) == (7, 1234)
        assert info["uncertainty"] == pytest.approx(0.42)
        assert info["oracle_wall_time_s"] == pytest.approx(0.012)
        assert abs(info["timestamp"] - time.time()) < 600
        assert info["pal_atoms_version"]
        assert (info["charge"], info["multiplicity"]) == (-2, 1)
        assert store.settings(info["settings_hash"]) == settings


def test_non_ok_records_keep_geometry_and_error_but_no_numbers(tmp_path, mixed_frames):
    path = tmp_path / "s.h5"
    with LabelStore(path) as store:
        store.append(mixed_frames[0], oracle="xtb")
        for status in ("failed", "unconverged", "timeout", "cancelled"):
            store.append(mixed_frames[2], status, error=f"{status} here", oracle="xtb")
        assert len(store) == 5
        assert store.counts() == {
            "ok": 1,
            "failed": 1,
            "unconverged": 1,
            "timeout": 1,
            "cancelled": 1,
        }
        assert len(store.read()) == 1  # data: ok only
        bad = store.read(status=["failed", "unconverged", "timeout"])
        assert [a.info["error"] for a in bad] == ["failed here", "unconverged here", "timeout here"]
        assert all(a.calc is None for a in bad)
        np.testing.assert_allclose(bad[0].positions, mixed_frames[2].positions)
    with h5py.File(path, "r") as f:  # nothing stored for them: not NaN, not zeros
        assert f["labels"].shape[0] == 1
        assert f["forces"].shape[0] == len(mixed_frames[0])
        assert np.all(np.isfinite(f["labels"]["energy"]))


def test_append_label_and_refusal_of_bad_numbers(tmp_path):
    atoms = molecule("H2O")
    ok = Label(
        atoms=atoms,
        status="ok",
        energy=-1.0,
        forces=np.zeros((3, 3)),
        oracle="x",
        settings={"a": 1},
    )
    failed = Label(atoms=atoms, status=LabelStatus.UNCONVERGED, error="SCF did not converge")
    with LabelStore(tmp_path / "s.h5") as store:
        store.append_label(ok, generator_id=1)
        store.append_label(failed)
        assert store.counts()["unconverged"] == 1
        nan = molecule("H2O")
        with_nan = Label(atoms=nan, status="ok", energy=0.0, forces=np.zeros((3, 3))).to_atoms()
        with_nan.calc.results["energy"] = float("nan")
        with pytest.raises(InputError, match="non-finite"):
            store.append(with_nan)
        with pytest.raises(InputError, match="energy and forces"):
            store.append(molecule("H2O"))  # ok without numbers
        assert len(store) == 2
    with pytest.raises(ValueError, match="must not carry numbers"):
        Label(atoms=atoms, status="failed", energy=1.0)


def test_batch_append_stores_exactly_what_one_by_one_appends_store(tmp_path, mixed_frames):
    settings = {"method": "GFN2-xTB"}
    entries = [
        (a, {"status": "ok", "oracle": "xtb", "settings": settings, "generator_id": i})
        for i, a in enumerate(mixed_frames)
    ]
    entries.insert(2, (mixed_frames[0], {"status": "timeout", "error": "took too long"}))
    entries.append((mixed_frames[3], {"status": "failed", "error": "crashed", "uncertainty": 0.3}))
    with LabelStore(tmp_path / "one.h5") as store:
        store.append(mixed_frames[1], oracle="before")  # the batch goes after existing rows
        ids_one = [store.append(a, **kw) for a, kw in entries]
    with LabelStore(tmp_path / "batch.h5") as store:
        store.append(mixed_frames[1], oracle="before")
        ids_batch = store.append_batch(entries)
        assert ids_batch == list(store.ids()[1:])
        assert store.counts() == {
            "ok": 5,
            "failed": 1,
            "unconverged": 0,
            "timeout": 1,
            "cancelled": 0,
        }
    assert len(set(ids_one) | set(ids_batch)) == 2 * len(entries)
    with h5py.File(tmp_path / "one.h5", "r") as a, h5py.File(tmp_path / "batch.h5", "r") as b:
        for name in ("atoms/positions", "atoms/numbers", "labels", "forces", "stress", "text"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        ra, rb = a["records"][:], b["records"][:]
        for field in ra.dtype.names:
            if field not in ("id", "timestamp"):
                np.testing.assert_array_equal(ra[field], rb[field], err_msg=field)
        assert dict(a["settings"].attrs) == dict(b["settings"].attrs)
    with LabelStore(tmp_path / "batch.h5", mode="r") as store:
        back = store.read(status=None)
        np.testing.assert_allclose(back[5].get_stress(), mixed_frames[3].get_stress())
        assert back[3].calc is None
        assert back[3].info["error"] == "took too long"


def test_batch_with_one_bad_entry_stores_nothing(tmp_path, mixed_frames):
    unlabelled = molecule("H2O")
    with LabelStore(tmp_path / "s.h5") as store:
        store.append(mixed_frames[0])
        with pytest.raises(InputError, match="energy and forces"):
            store.append_batch([(mixed_frames[1], {}), (unlabelled, {"status": "ok"})])
        assert len(store) == 1
        assert store._file["atoms/positions"].shape[0] == len(mixed_frames[0])
        assert store.append_batch([]) == []
        ids = store.append_many(mixed_frames[1:3], oracle="xtb")
        assert list(store.ids()[1:]) == ids


def test_filters_by_status_oracle_generator_and_start(tmp_path, mixed_frames):
    with LabelStore(tmp_path / "s.h5") as store:
        for i, a in enumerate(mixed_frames):
            store.append(a, oracle="xtb" if i % 2 else "pyscf", generator_id=i)
        store.append(mixed_frames[0], "failed", oracle="xtb", generator_id=1)
        assert [a.info["record_index"] for a in store.read(oracle="xtb")] == [1, 3]
        assert [a.info["record_index"] for a in store.read(generator_id=1, status=None)] == [1, 4]
        assert [a.info["record_index"] for a in store.read(start=2)] == [2, 3]
        assert [a.info["record_index"] for a in store.read(indices=[-1], status=None)] == [4]
        assert list(store.column("oracle")) == ["pyscf", "xtb", "pyscf", "xtb", "xtb"]


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from pal_atoms.store import LabelStore

    rng = np.random.default_rng(0)
    batch = int(sys.argv[2])
    with LabelStore(sys.argv[1]) as store:
        i = 0
        while True:
            entries = []
            for j in range(i, i + batch):
                n = 2 + j % 7
                a = Atoms(f"Bi{n}", positions=rng.normal(size=(n, 3)) * 3)
                a.calc = SinglePointCalculator(
                    a, energy=float(j), forces=np.full((n, 3), j, float)
                )
                kw = {"status": "ok" if j % 5 else "failed", "generator_step": j}
                entries.append((a, {"oracle": "xtb", **kw}))
            if batch == 1:
                store.append(entries[0][0], **entries[0][1])
            else:
                store.append_batch(entries)
            for j in range(i, i + batch):
                print(j, flush=True)  # append returned: this record must survive a SIGKILL
            i += batch
    """
)


@pytest.mark.parametrize(
    ("kill_after_s", "batch"), [(0.8, 1), (1.3, 1), (2.1, 1), (0.9, 7), (1.7, 7)]
)
def test_sigkill_during_append_loop_keeps_every_returned_append(tmp_path, kill_after_s, batch):
    path = tmp_path / "s.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(batch)], stdout=subprocess.PIPE, text=True
    )
    done: list[int] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:  # wait until the loop is running, then kill mid-loop
        line = proc.stdout.readline()
        if line:
            done.append(int(line))
        if done and done[0] == 0 and len(done) > 20:
            break
    time.sleep(kill_after_s)
    proc.kill()
    rest, _ = proc.communicate(timeout=30)
    done += [int(x) for x in rest.split()]
    assert proc.returncode == -9
    with LabelStore(path, mode="r") as store:
        n = len(store)
        assert n >= len(done) > 20  # every append that returned is there
        steps = store.column("generator_step")
        np.testing.assert_array_equal(steps, np.arange(n))
        frames = store.read(status=None)
        for a in frames:
            i = a.info["generator_step"]
            if i % 5:
                assert a.get_potential_energy() == i
                assert np.all(a.get_forces() == i)
            else:
                assert a.calc is None
    with LabelStore(path) as store:  # reopening for writing cuts a torn tail; appends go on
        store.append(frames[1], oracle="after")
        assert len(store) == n + 1
        assert store.read(indices=[n], status=None)[0].info["oracle"] == "after"


def test_foreign_and_damaged_files_give_clear_errors(tmp_path, mixed_frames):
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5\n")
    with pytest.raises(StoreFormatError, match="not a label store or is damaged"):
        LabelStore(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreFormatError, match="not a pal-atoms label store"):
        LabelStore(foreign, mode="r")
    empty = tmp_path / "empty.h5"
    empty.touch()
    with pytest.raises(StoreFormatError, match="empty"):
        LabelStore(empty)
    good = tmp_path / "good.h5"
    with LabelStore(good) as store:
        for a in mixed_frames:
            store.append(a)
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(StoreFormatError):
        LabelStore(damaged, mode="r")
    with pytest.raises(StoreError, match="does not exist"):
        LabelStore(tmp_path / "missing.h5", mode="r")
    # A missing store in append mode is created, with its folder.
    with LabelStore(tmp_path / "new" / "labels.h5") as store:
        assert len(store) == 0


def test_second_writer_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "s.h5"
    with LabelStore(path):
        code = f"from pal_atoms.store import LabelStore; LabelStore({str(path)!r})"
        out = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True
        )
        assert out.returncode != 0
        assert "open for writing by another process" in out.stderr
