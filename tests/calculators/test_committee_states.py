"""Committees of several electronic states: per-state forces, spreads, training, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings
from pal_atoms.calculators.model import StateHeads
from pal_atoms.calculators.stream import StreamingTrainer
from pal_atoms.calculators.stream_settings import StreamSettings

from pal_atoms.core.label import LabelCalculator

BACKENDS = ["mace", "schnet"]


def make(backend: str = "schnet", *, n_states: int = 3, **kw) -> CommitteeCalculator:
    return CommitteeCalculator.create(
        backend,
        elements=["H", "C", "O"],
        n_members=kw.pop("n_members", 3),
        n_states=n_states,
        device="cpu",
        dtype=kw.pop("dtype", "float64"),
        **kw,
    )


def formaldehyde(seed: int = 1, amplitude: float = 0.05) -> Atoms:
    atoms = molecule("H2CO")
    atoms.rattle(amplitude, seed=seed)
    return atoms


def model_states(atoms: Atoms, n_states: int = 3) -> Atoms:
    """A labelled copy on model surfaces: EMT plus a state offset and a harmonic term."""
    a = atoms.copy()
    a.calc = EMT()
    e0, f0 = a.get_potential_energy(), a.get_forces()
    d = a.positions - a.positions.mean(axis=0)
    energies = np.array([e0 + 3.0 * s + 0.2 * s * (d**2).sum() for s in range(n_states)])
    forces = np.stack([f0 - 0.4 * s * (d - d.mean(axis=0)) for s in range(n_states)])
    a.calc = LabelCalculator(
        a, energy=energies[0], forces=forces[0], state_energies=energies, state_forces=forces
    )
    return a


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_state_force_is_minus_the_gradient_of_its_energy(backend):
    calc = make(backend)
    calc.model.scale.fill_(0.7)
    atoms = formaldehyde()
    res = calc.predict_batch([atoms])[0]
    assert res["state_energies"].shape == (3,)
    assert res["state_forces"].shape == (3, 4, 3)
    assert res["state_forces_comm"].shape == (3, 3, 4, 3)
    h = 1e-5
    for i, k in [(0, 0), (1, 2), (3, 1)]:
        e = []
        for sign in (1, -1):
            a = atoms.copy()
            a.positions[i, k] += sign * h
            e.append(calc.predict_batch([a])[0]["state_energies_comm"])  # [M, S]
        fd = -(e[0] - e[1]) / (2 * h)
        np.testing.assert_allclose(res["state_forces_comm"][:, :, i, k], fd, atol=1e-6)


def test_spreads_are_numpy_std_of_the_members_and_zero_for_identical_members():
    calc = make("mace", n_members=4)
    res = calc.predict_batch([formaldehyde()])[0]
    e_comm, f_comm = res["state_energies_comm"], res["state_forces_comm"]
    np.testing.assert_allclose(res["state_energies_std"], e_comm.std(axis=0))
    per_state = np.linalg.norm(f_comm.std(axis=0), axis=-1)
    np.testing.assert_allclose(res["state_forces_std"], per_state)
    assert res["max_force_std"] == pytest.approx(per_state.max())
    np.testing.assert_allclose(res["gaps"], np.diff(e_comm.mean(axis=0)))
    clone = make("mace", n_members=4)  # 4: the mean of identical numbers is exact
    clone.set_weights([calc.get_weights()[0]] * 4)
    same = clone.predict_batch([formaldehyde()])[0]
    assert np.all(same["state_energies_std"] == 0.0)
    assert np.all(same["state_forces_std"] == 0.0)
    assert same["max_force_std"] == 0.0


def test_active_state_drives_energy_and_forces_for_unmodified_ase_code():
    calc = make("schnet")
    atoms = formaldehyde()
    atoms.calc = calc
    res = calc.predict_batch([atoms])[0]
    assert atoms.get_potential_energy() == pytest.approx(res["state_energies"][0])
    calc.active_state = 2
    assert atoms.get_potential_energy() == pytest.approx(res["state_energies"][2])
    np.testing.assert_allclose(atoms.get_forces(), res["state_forces"][2])
    atoms.info["state"] = 1  # a per-structure choice overrides the calculator's
    assert atoms.get_potential_energy() == pytest.approx(res["state_energies"][1])
    for name in CommitteeCalculator.implemented_properties:
        if not name.startswith("stress"):  # molecules only
            assert calc.get_property(name, atoms) is not None, name
    with pytest.raises(ValueError, match="out of range"):
        calc.active_state = 3
    atoms.info["state"] = 5
    with pytest.raises(ValueError, match="out of range"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_state_committee_is_the_plain_model(backend, tmp_path):
    calc = make(backend, n_states=1, n_members=2)
    assert not any(isinstance(h, StateHeads) for h in calc.model.heads)
    atoms = formaldehyde()
    before = calc.predict_batch([atoms])[0]
    assert "state_energies" not in before
    # A committee saved before n_states existed loads as a one-state committee.
    calc.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "committee.json"
    meta = json.loads(meta_path.read_text())
    del meta["n_states"]
    meta_path.write_text(json.dumps(meta))
    back = CommitteeCalculator.load(tmp_path / "old", device="cpu")
    after = back.predict_batch([atoms])[0]
    assert after["energy"] == before["energy"]
    np.testing.assert_array_equal(after["forces_comm"], before["forces_comm"])
    # Building with n_states=3 leaves the random stream of the one-state model untouched.
    three = make(backend, n_states=3, n_members=2)
    for a, b in zip(calc.model.backbones, three.model.backbones, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch_equal(pa, pb)


def torch_equal(a, b) -> bool:
    return bool((a.detach() == b.detach()).all())


def test_training_fits_every_state_and_survives_save_and_load(tmp_path):
    frames = [model_states(formaldehyde(seed=i, amplitude=0.15)) for i in range(40)]
    train, test = frames[:32], frames[32:]
    calc = make("schnet", n_members=2, dtype="float32")

    def state_mae(c: CommitteeCalculator) -> np.ndarray:
        pred = c.predict_batch(test)
        ref = np.stack([a.calc.results["state_forces"] for a in test])  # [n, S, atoms, 3]
        got = np.stack([p["state_forces"] for p in pred])
        return np.abs(got - ref).mean(axis=(0, 2, 3))

    before = state_mae(calc)
    history = CommitteeTrainer(
        calc, TrainerSettings(max_epochs=40, patience_steps=1000, batch_size=8)
    ).train(train)
    after = state_mae(calc)
    assert history[-1]["val_forces_mae"][0] < history[0]["val_forces_mae"][0]
    assert np.all(after < 0.5 * before), (before, after)
    calc.save(tmp_path / "c")
    back = CommitteeCalculator.load(tmp_path / "c", device="cpu")
    assert back.n_states == 3
    np.testing.assert_allclose(
        back.predict_batch(test[:1])[0]["state_forces"],
        calc.predict_batch(test[:1])[0]["state_forces"],
    )


def test_streaming_trainer_takes_state_labels_and_refuses_too_few_states():
    calc = make("schnet", n_members=2, dtype="float32")
    trainer = StreamingTrainer(calc, StreamSettings(eval_every_steps=5))
    trainer.add([model_states(formaldehyde(seed=i, amplitude=0.15)) for i in range(12)])
    trainer.train_steps(10)
    assert trainer.step == 10
    two = model_states(formaldehyde(), n_states=2)
    with pytest.raises(ValueError, match="has 2 electronic state"):
        trainer.add([two])
    ground = formaldehyde()
    ground.calc = EMT()
    ground.get_potential_energy()
    with pytest.raises(ValueError, match="has 1 electronic state"):
        trainer.add([ground])
