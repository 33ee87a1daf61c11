"""Schema version 2: labels of several electronic states in the store, labels and codec."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ase.build import molecule

from pal_atoms.core.errors import InputError
from pal_atoms.core.label import Label, LabelCalculator, LabelStatus
from pal_atoms.store import LabelStore
from pal_atoms.store.schema import SCHEMA_VERSION, STATE_DATASETS
from pal_atoms.workflow.mpi.codec import (
    decode_labels,
    encode_labels,
    label_data_size,
    label_from_message,
    label_message,
)


def _state_label(name: str, n_states: int, seed: int) -> Label:
    rng = np.random.default_rng(seed)
    atoms = molecule(name)
    n = len(atoms)
    energies = np.sort(rng.normal(size=n_states)) - 100.0
    forces = rng.normal(size=(n_states, n, 3))
    return Label(
        atoms=atoms,
        status=LabelStatus.OK,
        energy=float(energies[0]),
        forces=forces[0],
        state_energies=energies,
        state_forces=forces,
        oracle="pyscf-excited",
        method="TDA-B3LYP/6-31G*",
    )


def _ground_label(name: str, seed: int) -> Label:
    rng = np.random.default_rng(seed)
    atoms = molecule(name)
    return Label(
        atoms=atoms,
        status=LabelStatus.OK,
        energy=float(rng.normal()),
        forces=rng.normal(size=(len(atoms), 3)),
        oracle="xtb",
    )


def _assert_same_states(label: Label, atoms, rtol: float = 0.0) -> None:
    results = atoms.calc.results
    np.testing.assert_allclose(results["state_energies"], label.state_energies, rtol=rtol)
    np.testing.assert_allclose(results["state_forces"], label.state_forces, rtol=rtol)
    assert atoms.get_potential_energy() == pytest.approx(label.energy, rel=rtol, abs=0)
    np.testing.assert_allclose(atoms.get_forces(), label.forces, rtol=rtol)


def test_state_labels_round_trip_among_ground_state_and_failed_records(tmp_path):
    labels = [
        _state_label("H2CO", 3, seed=0),
        _ground_label("H2O", seed=1),
        Label(atoms=molecule("CH4"), status=LabelStatus.FAILED, error="boom"),
        _state_label("C2H4", 4, seed=2),
        _state_label("H2CO", 2, seed=3),
    ]
    path = tmp_path / "s.h5"
    with LabelStore(path) as store:
        store.append_labels([(lab, {}) for lab in labels[:2]])
        store.append_labels([(lab, {}) for lab in labels[2:]])
    with LabelStore(path, mode="r") as store:
        assert int(store._file.attrs["schema_version"]) == SCHEMA_VERSION == 2
        back = store.read(status=None)
        # Only per-state labels take rows: 3 + 4 + 2 energies, one state-force row per atom.
        assert store._file["state_energies"].shape == (9,)
        assert store._file["state_forces"].shape == ((3 * 4) + (4 * 6) + (2 * 4), 3)
    assert isinstance(back[0].calc, LabelCalculator)
    for i in (0, 3, 4):
        _assert_same_states(labels[i], back[i])
        assert back[i].calc.get_property("state_energies", back[i]).shape == (labels[i].n_states,)
    assert "state_energies" not in back[1].calc.results
    assert back[1].get_potential_energy() == labels[1].energy
    assert back[2].calc is None


def _as_version_1(path) -> None:
    """Turn a fresh store into what pal-atoms 0.x (schema version 1) wrote."""
    with h5py.File(path, "a") as f:
        for name in STATE_DATASETS:
            del f[name]
        f.attrs["schema_version"] = 1


def test_version_1_files_open_read_and_upgrade_on_the_first_state_label(tmp_path):
    path = tmp_path / "v1.h5"
    ground = [_ground_label("H2O", seed=i) for i in range(3)]
    with LabelStore(path) as store:
        store.append_labels([(lab, {}) for lab in ground[:2]])
    _as_version_1(path)
    with LabelStore(path, mode="r") as store:
        assert [a.get_potential_energy() for a in store.read()] == [g.energy for g in ground[:2]]
    with LabelStore(path) as store:  # ground-state appends leave a version-1 file as it was
        store.append_label(ground[2])
    with h5py.File(path, "r") as f:
        assert int(f.attrs["schema_version"]) == 1
        assert "states" not in f
    excited = _state_label("H2CO", 3, seed=7)
    with LabelStore(path) as store:
        store.append_label(excited)
    with LabelStore(path, mode="r") as store:
        assert int(store._file.attrs["schema_version"]) == 2
        back = store.read()
    assert [a.get_potential_energy() for a in back[:3]] == [g.energy for g in ground]
    _assert_same_states(excited, back[3])


def test_torn_state_rows_are_cut_on_the_next_open_for_writing(tmp_path):
    path = tmp_path / "s.h5"
    first, second = _state_label("H2CO", 3, seed=0), _state_label("H2CO", 3, seed=1)
    with LabelStore(path) as store:
        store.append_label(first)
    with h5py.File(path, "a") as f:  # what a process killed inside an append leaves behind
        for name, rows in (("state_energies", 3), ("state_forces", 12), ("states", 1)):
            f[name].resize(f[name].shape[0] + rows, axis=0)
        f["states"][1] = (1, 3, 3, 12)  # points at label row 1, which was never committed
    with LabelStore(path) as store:
        assert store._file["state_energies"].shape == (3,)
        assert store._file["states"].shape == (1,)
        store.append_label(second)
        back = store.read()
    _assert_same_states(first, back[0])
    _assert_same_states(second, back[1])


def test_bad_state_numbers_are_refused_and_nothing_is_written(tmp_path):
    atoms = molecule("H2CO")
    n = len(atoms)
    with pytest.raises(ValueError, match="at least 2 states"):
        Label(
            atoms=atoms, status="ok", energy=0.0, forces=np.zeros((n, 3)),
            state_energies=[0.0], state_forces=np.zeros((1, n, 3)),
        )  # fmt: skip
    with pytest.raises(ValueError, match="go together"):
        Label(atoms=atoms, status="ok", energy=0.0, forces=np.zeros((n, 3)), state_energies=[0, 1])
    with pytest.raises(ValueError, match="must not carry numbers"):
        Label(atoms=atoms, status="failed", state_energies=[0, 1], state_forces=np.zeros((2, n, 3)))
    bad = atoms.copy()
    bad.calc = LabelCalculator(
        bad,
        energy=0.0,
        forces=np.zeros((n, 3)),
        state_energies=[0.0, np.nan],
        state_forces=np.zeros((2, n, 3)),
    )
    good = _ground_label("H2O", seed=0).to_atoms()
    with LabelStore(tmp_path / "s.h5") as store:
        with pytest.raises(InputError, match="per-state"):
            store.append_many([good, bad])
        assert len(store) == 0


def test_state_labels_travel_through_the_codec():
    excited, ground = _state_label("C2H4", 3, seed=4), _ground_label("H2O", seed=5)
    for label in (excited, ground):
        control, data = label_message(label, generator_id=2, step=9, uncertainty=0.1)
        assert data is not None
        assert label_data_size(len(label.atoms), control) == data.size
        back = label_from_message(label.atoms, control, data)
        assert back.n_states == label.n_states
        assert back.energy == label.energy
        if label.state_energies is not None:
            np.testing.assert_array_equal(back.state_forces, label.state_forces)
    frames = decode_labels(encode_labels([excited.to_atoms(), ground.to_atoms()]))
    _assert_same_states(excited, frames[0])
    assert "state_energies" not in frames[1].calc.results
    np.testing.assert_array_equal(frames[1].get_forces(), ground.forces)


def test_predictions_of_several_states_travel_through_the_codec():
    from pal_atoms.core.protocols import Verdict
    from pal_atoms.workflow.mpi.codec import (
        encode_predictions,
        prediction_records,
        read_prediction,
    )

    rng = np.random.default_rng(0)
    one = {"energy": 1.0, "forces": rng.normal(size=(3, 3)), "max_force_std": 0.2}
    three = {
        "energy": 2.0,
        "forces": rng.normal(size=(4, 3)),
        "forces_std": rng.random(4),
        "max_force_std": 0.1,
        "state_energies": np.array([2.0, 5.0, 6.0]),
        "state_forces": rng.normal(size=(3, 4, 3)),
    }
    buf = encode_predictions([three, one, three], [Verdict.TRUSTED, None, Verdict.UNCERTAIN])
    records = prediction_records(buf)
    assert len(records) == 3
    (r0, v0), (r1, v1), (_, v2) = (read_prediction(r) for r in records)
    assert (v0, v1, v2) == (Verdict.TRUSTED, None, Verdict.UNCERTAIN)
    np.testing.assert_array_equal(r0["state_energies"], three["state_energies"])
    np.testing.assert_array_equal(r0["state_forces"], three["state_forces"])
    np.testing.assert_array_equal(r0["forces_std"], three["forces_std"])
    assert "state_energies" not in r1
    np.testing.assert_array_equal(r1["forces"], one["forces"])
    with pytest.raises(ValueError, match="truncated"):
        prediction_records(buf[:-1])


def test_state_labels_survive_export_import_and_labelled_files(tmp_path):
    from pal_atoms.store.exchange import export_extxyz, import_extxyz, read_labelled, write_labelled

    labels = [_state_label("H2CO", 3, seed=0), _ground_label("H2O", seed=1)]
    with LabelStore(tmp_path / "a.h5") as store:
        store.append_labels([(lab, {}) for lab in labels])
    assert export_extxyz(tmp_path / "a.h5", tmp_path / "a.extxyz") == 2
    text = (tmp_path / "a.extxyz").read_text()
    assert "REF_state_energies" in text and "REF_state_forces:R:9" in text
    assert import_extxyz(tmp_path / "a.extxyz", tmp_path / "b.h5") == 2
    with LabelStore(tmp_path / "b.h5", mode="r") as store:
        back = store.read()
    _assert_same_states(labels[0], back[0], rtol=1e-7)  # extxyz keeps 8 digits
    assert "state_energies" not in back[1].calc.results
    write_labelled(tmp_path / "t.extxyz", [lab.to_atoms() for lab in labels])
    again = read_labelled(tmp_path / "t.extxyz")
    _assert_same_states(labels[0], again[0], rtol=1e-7)
    assert again[1].get_potential_energy() == pytest.approx(labels[1].energy)
