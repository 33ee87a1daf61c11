"""CommitteeCalculator: definitions, gradients, batching, ASE drop-in use, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from calc_clusters import bi_cluster
from pal_atoms.calculators import CommitteeCalculator
from pal_atoms.calculators.committee import STATE_PROPERTIES

from pal_atoms.core.errors import StructureError

BACKENDS = ["mace", "schnet"]


def make(backend="mace", *, elements=("H", "C", "O"), dtype="float64", **kw):
    return CommitteeCalculator.create(
        backend,
        elements=list(elements),
        n_members=kw.pop("n_members", 3),
        device=kw.pop("device", "cpu"),
        dtype=dtype,
        **kw,
    )


def ethanol() -> Atoms:
    at = molecule("CH3CH2OH")
    at.rattle(0.02, seed=1)
    return at


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["full", "shared"])
def test_forces_are_minus_energy_gradient(backend, mode):
    calc = make(backend, mode=mode)
    calc.model.scale.fill_(0.7)  # a non-trivial output scale
    atoms = ethanol()
    atoms.calc = calc
    forces = atoms.get_forces()
    comm = calc.get_property("forces_comm")
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        e = []
        for sign in (1, -1):
            a = atoms.copy()
            a.positions[i, k] += sign * h
            e.append(calc.predict_batch([a])[0]["energy_comm"])
        fd = -(e[0] - e[1]) / (2 * h)
        np.testing.assert_allclose(comm[:, i, k], fd, atol=1e-6)
        assert forces[i, k] == pytest.approx(fd.mean(), abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stress_is_strain_derivative(backend):
    calc = make(backend, elements=["Cu"], n_members=2, r_max=4.0)
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)
    h = 1e-5
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        e = []
        for sign in (1, -1):
            eps = np.eye(3)
            eps[i, j] += sign * h / (2 if i != j else 1)
            if i != j:
                eps[j, i] += sign * h / 2
            a = atoms.copy()
            a.set_cell(atoms.cell @ eps, scale_atoms=True)
            e.append(calc.predict_batch([a])[0]["energy"])
        fd = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
        assert stress[i, j] == pytest.approx(fd, abs=1e-6)
    assert calc.get_property("stress_comm").shape == (2, 6)


def test_std_definitions_and_identical_members():
    calc = make("mace", n_members=4)
    atoms = ethanol()
    atoms.calc = calc
    atoms.get_potential_energy()
    e_comm = calc.get_property("energy_comm")
    f_comm = calc.get_property("forces_comm")
    assert e_comm.shape == (4,)
    assert f_comm.shape == (4, len(atoms), 3)
    assert calc.get_property("energy_std") == pytest.approx(np.std(e_comm))
    f_std = calc.get_property("forces_std")
    assert f_std.shape == (len(atoms),)
    np.testing.assert_allclose(f_std, np.linalg.norm(np.std(f_comm, axis=0), axis=-1))
    ref = np.sqrt(np.mean(np.sum((f_comm - f_comm.mean(0)) ** 2, axis=-1), axis=0))
    np.testing.assert_allclose(f_std, ref)
    assert calc.get_property("max_force_std") == pytest.approx(f_std.max())
    assert calc.get_property("energy_std") > 0

    weights = calc.get_weights()
    calc.set_weights([weights[0]] * 4)
    assert calc.get_property("energy_std", atoms) == 0.0
    assert np.all(calc.get_property("forces_std", atoms) == 0.0)
    assert calc.get_property("max_force_std", atoms) == 0.0


def test_every_declared_property_is_available_and_class_list_untouched():
    before = list(CommitteeCalculator.implemented_properties)
    calc = make("mace", elements=["Cu"], n_members=2)
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = calc
    atoms.get_potential_energy()
    for name in set(CommitteeCalculator.implemented_properties) - set(STATE_PROPERTIES):
        assert calc.get_property(name) is not None
    for name in STATE_PROPERTIES:  # only committees of several states have them
        with pytest.raises(PropertyNotImplementedError):
            calc.get_property(name)
    assert CommitteeCalculator.implemented_properties == before
    with pytest.raises(PropertyNotImplementedError):
        calc.get_property("magmom")
    mol = ethanol()
    mol.calc = make("mace", n_members=2)
    with pytest.raises(PropertyNotImplementedError):
        mol.get_stress()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["full", "shared"])
def test_predict_batch_equals_single_calls(backend, mode):
    calc = make(backend, elements=["H", "C", "O", "Bi"], charges=(0, -2), mode=mode)
    structures = [ethanol(), bi_cluster(8, charge=-2), bi_cluster(4, seed=3), molecule("H2O")]
    batch = calc.predict_batch(structures)
    for atoms, res in zip(structures, batch, strict=True):
        single = calc.predict_batch([atoms])[0]
        assert set(single) == set(res)
        for key in single:
            np.testing.assert_allclose(res[key], single[key], atol=1e-9, err_msg=key)


@pytest.mark.parametrize("mode", ["full", "shared"])
def test_member_batched_equals_sequential(mode):
    # full: members vmapped; shared: heads vmapped on their backbone replicas.
    calc = make("mace", n_members=4, mode=mode)
    structures = [ethanol(), molecule("H2O")]
    batched = calc.predict_batch(structures)
    calc.model.batched = False
    sequential = calc.predict_batch(structures)
    assert not calc.model._vmap_failed
    for a, b in zip(batched, sequential, strict=True):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], atol=1e-9, err_msg=key)


def test_shared_heads_follow_weight_changes():
    # The stacked head weights are cached between predictions; any change must show.
    a = make("mace", n_members=3, mode="shared", seed=0)
    b = make("mace", n_members=3, mode="shared", seed=7)
    before = a.predict_batch([ethanol()])[0]["energy_comm"]
    a.set_weights(b.get_weights())
    np.testing.assert_allclose(
        a.predict_batch([ethanol()])[0]["energy_comm"],
        b.predict_batch([ethanol()])[0]["energy_comm"],
        atol=1e-10,
    )
    assert not np.allclose(before, a.predict_batch([ethanol()])[0]["energy_comm"])
    with torch.no_grad():
        for p in a.model.heads[1].parameters():
            p.mul_(1.5)
    after = a.predict_batch([ethanol()])[0]["energy_comm"]
    unchanged = b.predict_batch([ethanol()])[0]["energy_comm"]
    np.testing.assert_allclose(after[[0, 2]], unchanged[[0, 2]], atol=1e-10)
    assert abs(after[1] - unchanged[1]) > 1e-6


def test_charge_states_are_distinct_node_types():
    calc = make("mace", elements=["Bi"], charges=(-1, 0, 1))
    neutral, anion = bi_cluster(4), bi_cluster(4)
    anion.info["charge"] = -1
    r0, r1 = calc.predict_batch([neutral, anion])
    assert r0["energy"] != pytest.approx(r1["energy"])
    neutral.calc = calc
    e0 = neutral.get_potential_energy()
    neutral.info["charge"] = -1  # calculator must notice the charge change
    assert neutral.get_potential_energy() == pytest.approx(r1["energy"])
    assert e0 == pytest.approx(r0["energy"])


@pytest.mark.parametrize(
    ("atoms", "message"),
    [
        (Atoms(), "no atoms"),
        (Atoms("H2O", positions=[[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]]), "non-finite"),
        (Atoms("NH3", positions=np.eye(4)[:4, :3] * 1.0), "N"),
        (Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]], info={"charge": 2}), r"charge \+2"),
    ],
)
def test_bad_input_raises_clear_value_error(atoms, message):
    calc = make("mace", n_members=2)
    with pytest.raises(ValueError, match=message) as info:
        calc.predict_batch([atoms])
    assert isinstance(info.value, StructureError)
    atoms.calc = calc
    with pytest.raises(ValueError, match=message):
        atoms.get_potential_energy()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backend"):
        CommitteeCalculator.create("nequip", elements=["H"])
    with pytest.raises(ValueError, match="hyperparameter"):
        CommitteeCalculator.create("mace", elements=["H"], r_maxx=3.0)
    with pytest.raises(ValueError, match="dtype"):
        CommitteeCalculator.create("mace", elements=["H"], dtype="float16")
    with pytest.raises(ValueError, match="element"):
        CommitteeCalculator.create("mace", elements=["Xx"])
    with pytest.raises(ValueError, match="exactly one"):
        CommitteeCalculator.create("mace")
    calc = make("schnet", n_members=2)
    with pytest.raises(ValueError, match="state dicts"):
        calc.set_weights(calc.get_weights()[:1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["full", "shared"])
def test_save_load_gives_identical_predictions(tmp_path, backend, mode):
    calc = make(backend, mode=mode, dtype="float32", seed=4)
    calc.model.e0.fill_(-13.6)
    calc.metadata["history"].append({"note": "x"})
    calc.save(tmp_path / "c")
    loaded = CommitteeCalculator.load(tmp_path / "c", device="cpu")
    a = calc.predict_batch([ethanol()])[0]
    b = loaded.predict_batch([ethanol()])[0]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert loaded.metadata["history"] == [{"note": "x"}]
    assert loaded.dtype == torch.float32
    assert loaded.model.mode == mode


def test_weights_transfer_per_member():
    a = make("mace", seed=0)
    b = make("mace", seed=10)
    b.set_weights([a.get_weights()[1]], members=[2])
    ra, rb = a.predict_batch([ethanol()])[0], b.predict_batch([ethanol()])[0]
    assert rb["energy_comm"][2] == pytest.approx(ra["energy_comm"][1])
    assert rb["energy_comm"][0] != pytest.approx(ra["energy_comm"][0])
    assert all(v.device.type == "cpu" for v in a.get_weights()[0].values())


def test_deterministic_under_seed():
    r1 = make("mace", seed=7).predict_batch([ethanol()])[0]
    r2 = make("mace", seed=7).predict_batch([ethanol()])[0]
    np.testing.assert_array_equal(r1["forces_comm"], r2["forces_comm"])


def test_a_committee_serves_in_evaluation_mode_and_trainers_leave_it_there(tmp_path, bi_data):
    from pal_atoms.calculators import CommitteeCalculator, StreamingTrainer

    calc = make("mace", elements=["Bi"], n_members=2)
    assert not calc.model.training  # predictions skip the eval()/train() walk
    trainer = StreamingTrainer(calc)
    trainer.add(bi_data["train"][:8])
    trainer.train_steps(2)
    assert not calc.model.training
    calc.save(tmp_path / "c")
    assert not CommitteeCalculator.load(tmp_path / "c", device="cpu").model.training


def test_unmodified_ase_scripts(tmp_path):
    from ase import units
    from ase.io import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet
    from ase.mep import NEB
    from ase.optimize import BFGS

    calc = make("mace", elements=["Bi"], n_members=2, dtype="float32")
    atoms = bi_cluster(4)
    atoms.calc = calc
    traj = Trajectory(tmp_path / "md.traj", "w", atoms)
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(0)
    )
    dyn.attach(traj.write, interval=20)
    dyn.run(200)
    assert dyn.nsteps == 200
    traj.close()
    assert len(Trajectory(tmp_path / "md.traj")) == 11
    assert np.isfinite(atoms.get_potential_energy())
    VelocityVerlet(atoms, 1 * units.fs).run(10)
    BFGS(atoms, logfile=None).run(fmax=0.5, steps=5)
    images = [bi_cluster(4) for _ in range(4)]
    images[-1].positions[0] += 0.3
    for im in images:
        im.calc = calc
    neb = NEB(images, allow_shared_calculator=True)
    neb.interpolate()
    BFGS(neb, logfile=None).run(fmax=1.0, steps=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["full", "shared"])
def test_cuda_matches_cpu(mode):
    cpu = make("mace", mode=mode)
    gpu = make("mace", mode=mode).to(device="cuda")
    a, b = cpu.predict_batch([ethanol()])[0], gpu.predict_batch([ethanol()])[0]
    np.testing.assert_allclose(a["forces_comm"], b["forces_comm"], atol=1e-8)


def test_cuda_request_without_cuda_is_value_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA"):
        make("mace", device="cuda")
