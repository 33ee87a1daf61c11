"""MD generator: integrators, patience policy, unphysical states, frames, resume (tblite)."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
from ase import units
from ase.io import read
from dynamics_helpers import ScriptedRule, always, bi4, make_tblite, needs_tblite
from pal_atoms.dynamics import Action, LocalClient, MDGenerator, MDSettings, build_bi_clusters

from pal_atoms.core.errors import StructureError
from pal_atoms.core.protocols import Verdict

pytestmark = needs_tblite


def client(rule=None):
    return LocalClient(calculator=make_tblite(), rule=rule or always(Verdict.TRUSTED))


@pytest.fixture(scope="module")
def bi8():
    return build_bi_clusters([8], shapes_per_size=1, charges=[0], seed=3)[0]


@pytest.mark.parametrize("integrator", ["langevin", "verlet", "bussi", "nose_hoover"])
def test_every_integrator_runs_to_n_steps(integrator):
    settings = MDSettings(integrator=integrator, temperature_K=300, timestep_fs=2, n_steps=8)
    gen = MDGenerator(bi4(), settings=settings, generator_id=4)
    events = gen.run(client())
    assert [e.step for e in events] == list(range(1, 9))
    assert all(e.verdict is Verdict.TRUSTED for e in events)
    assert [e.action for e in events] == [Action.CONTINUE] * 7 + [Action.FINISHED]
    assert events[0].n_evaluations == 2  # the start and the first new geometry
    assert all(e.n_evaluations == 1 for e in events[1:])
    assert gen.done
    assert gen.run(client()) == []
    assert np.isfinite(gen.atoms.get_temperature())


def test_velocities_are_seeded_and_runs_reproducible():
    settings = MDSettings(temperature_K=500, n_steps=5, seed=11)
    a, b = (MDGenerator(bi4(), settings=settings) for _ in range(2))
    np.testing.assert_array_equal(a.atoms.get_momenta(), b.atoms.get_momenta())
    assert a.atoms.get_temperature() > 0
    a.run(client())
    b.run(client())
    np.testing.assert_allclose(a.atoms.positions, b.atoms.positions, atol=1e-10)
    c = MDGenerator(bi4(), settings=MDSettings(temperature_K=500, seed=12))
    assert not np.allclose(a.last_trusted.positions, c.atoms.positions)


def test_temperature_ramp_drives_the_thermostat():
    s = MDSettings(temperature_K=100, end_temperature_K=500, ramp_steps=10, n_steps=12)
    assert s.target_temperature_K(0) == 100
    assert s.target_temperature_K(5) == pytest.approx(300)
    assert s.target_temperature_K(50) == 500
    gen = MDGenerator(bi4(), settings=s)
    gen.run(client(), max_steps=5)
    assert gen.dynamics.temp / units.kB == pytest.approx(300)
    gen.run(client())
    assert gen.dynamics.temp / units.kB == pytest.approx(500)


def test_patience_restarts_after_patience_uncertain_steps(caplog):
    gen = MDGenerator(bi4(), settings=MDSettings(patience=3), generator_id=2)
    start = gen.atoms.positions.copy()
    with caplog.at_level(logging.INFO, logger="pal_atoms.dynamics"):
        events = gen.run(client(always(Verdict.UNCERTAIN)), max_steps=8)
    actions = [e.action for e in events]
    assert actions == [Action.CONTINUE] * 3 + [Action.RESTART] + [Action.CONTINUE] * 3 + [
        Action.RESTART
    ]
    assert "patience exhausted" in events[3].reason
    assert gen.n_restarts == 2
    np.testing.assert_allclose(gen.atoms.positions, start)  # the start was the last trusted
    assert events[4].n_evaluations == 1  # the restart frame's prediction was reused
    assert "generator 2: restart 1 at step 4" in caplog.text


def test_untrusted_restarts_at_once_from_the_last_trusted_frame():
    rule = ScriptedRule([Verdict.TRUSTED] * 6, then=Verdict.UNTRUSTED)  # start + 5 steps
    gen = MDGenerator(bi4(), settings=MDSettings(patience=10))
    frames = []
    for event in gen.irun(client(rule), max_steps=6):
        frames.append((event, gen.atoms.positions.copy(), gen.atoms.get_momenta()))
    assert [e.action for e, _, _ in frames] == [Action.CONTINUE] * 5 + [Action.RESTART]
    assert frames[-1][0].reason == "untrusted prediction"
    assert frames[-1][0].verdict is Verdict.UNTRUSTED
    np.testing.assert_allclose(frames[-1][1], frames[4][1])  # back to step 5
    np.testing.assert_allclose(frames[-1][2], frames[4][2])  # with its momenta ("keep")


def test_restart_from_initial_draws_fresh_velocities():
    settings = MDSettings(patience=0, restart="initial", max_restarts=1)
    gen = MDGenerator(bi4(), settings=settings)
    start_p, start_x = gen.atoms.get_momenta(), gen.atoms.positions.copy()
    events = gen.run(client(ScriptedRule([Verdict.TRUSTED] * 3, then=Verdict.UNCERTAIN)))
    assert [e.action for e in events] == [
        Action.CONTINUE,
        Action.CONTINUE,
        Action.RESTART,
        Action.FINISHED,
    ]
    assert "restart budget (1) used up" in events[-1].reason
    np.testing.assert_allclose(gen.atoms.positions, start_x)
    assert not np.allclose(gen.atoms.get_momenta(), start_p)


def test_compressed_cluster_triggers_an_unphysical_restart(bi8, caplog):
    gen = MDGenerator(bi8, settings=MDSettings(temperature_K=300, min_distance_A=0.5))
    c = client()
    events = gen.run(c, max_steps=3)
    trusted = gen.last_trusted.positions
    centre = gen.atoms.positions.mean(axis=0)
    gen.atoms.positions = centre + 0.1 * (gen.atoms.positions - centre)  # ~0.3 Å apart
    n_before = c.n_evaluations
    with caplog.at_level(logging.INFO, logger="pal_atoms.dynamics"):
        (event,) = gen.run(c, max_steps=1)
    assert event.action is Action.RESTART
    assert event.verdict is None
    assert "unphysical state" in event.reason
    assert "apart" in event.reason
    assert c.n_evaluations == n_before  # never sent to the model
    assert "unphysical state" in caplog.text
    np.testing.assert_allclose(gen.atoms.positions, trusted)
    assert gen.run(c, max_steps=2)[-1].action is Action.CONTINUE
    assert len(events) == 3


def test_fragments_and_energy_blow_up_restart(bi8):
    gen = MDGenerator(bi8, settings=MDSettings(max_distance_A=5.0))
    gen.run(client(), max_steps=2)
    gen.atoms.positions[0] += [30.0, 0.0, 0.0]
    (event,) = gen.run(client(), max_steps=1)
    assert event.action is Action.RESTART
    assert "fragments" in event.reason
    jumpy = MDGenerator(bi8, settings=MDSettings(temperature_K=2000, max_energy_jump_eV=1e-5))
    events = jumpy.run(client(), max_steps=3)
    assert events[0].action is Action.RESTART
    assert "energy jumped" in events[0].reason
    assert events[0].verdict is Verdict.TRUSTED  # predicted, then found unphysical
    hot = MDGenerator(bi8, settings=MDSettings(max_force_eV_A=1e-3))
    (event,) = hot.run(client(), max_steps=1)
    assert event.action is Action.RESTART
    assert "force component" in event.reason


def test_unphysical_start_and_bad_settings_are_refused():
    atoms = bi4()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0, 0]
    with pytest.raises(StructureError, match="apart"):
        MDGenerator(atoms)
    far = bi4()
    far.positions[0] += [20.0, 0, 0]
    with pytest.raises(ValueError, match="fragments"):
        MDGenerator(far)
    for bad in (
        {"integrator": "npt"},
        {"timestep_fs": 0},
        {"patience": -1},
        {"restart": "random"},
        {"temperature_K": -5},
        {"traj_interval": 0},
        {"integrator": "bussi", "temperature_K": 0},
        {"max_distance_A": 0.1},
    ):
        with pytest.raises(ValueError):
            MDSettings(**bad)


@pytest.mark.parametrize("suffix", [".traj", ".h5", ".xyz"])
def test_frames_are_written_at_an_interval(tmp_path, suffix):
    path = tmp_path / f"md{suffix}"
    gen = MDGenerator(bi4(), settings=MDSettings(traj_interval=2, n_steps=6), trajectory=path)
    gen.run(client())
    if suffix == ".h5":
        with h5py.File(path) as f:
            assert f["positions"].shape == (3, 4, 3)
            assert f["step"][:].tolist() == [2, 4, 6]
            assert f["verdict"][:].tolist() == [0, 0, 0]
            np.testing.assert_allclose(f["positions"][-1], gen.atoms.positions)
    else:
        frames = read(path, ":")
        assert len(frames) == 3
        assert [f.info["step"] for f in frames] == [2, 4, 6]
        assert np.isfinite(frames[-1].get_potential_energy())


def test_state_is_json_and_restore_continues_the_same_trajectory(tmp_path):
    path = tmp_path / "md.h5"
    gen = MDGenerator(
        bi4(), settings=MDSettings(temperature_K=400, seed=5), generator_id=9, trajectory=path
    )
    c = client()
    gen.run(c, max_steps=4)
    gen.close()  # as if the process had died here
    state = json.loads(json.dumps(gen.state()))
    twin = MDGenerator(bi4(), settings=MDSettings(seed=99), trajectory=path)
    twin.restore(state)
    assert (twin.generator_id, twin.step, twin.settings.temperature_K) == (9, 4, 400)
    gen.trajectory = None  # the original goes on without a file, for comparison
    gen.run(c, max_steps=3)
    events = twin.run(c, max_steps=3)
    assert events[-1].step == 7
    np.testing.assert_allclose(twin.atoms.positions, gen.atoms.positions, atol=1e-8)
    twin.close()
    with h5py.File(path) as f:
        assert f["step"][:].tolist() == list(range(1, 8))  # appended, not overwritten
    with pytest.raises(ValueError, match="cannot restore"):
        twin.restore({**state, "kind": "SellaGenerator"})


def test_generators_interleave_round_robin_on_one_client():
    rule = ScriptedRule([], then=Verdict.UNCERTAIN)
    c = LocalClient(calculator=make_tblite(), rule=rule, record=True)
    gens = [
        MDGenerator(bi4(), settings=MDSettings(seed=i, n_steps=3), generator_id=i) for i in (1, 2)
    ]
    runs = [g.irun(c) for g in gens]
    order = []
    for _ in range(3):
        for run in runs:
            order.append(next(run).generator_id)
    assert order == [1, 2, 1, 2, 1, 2]
    assert {s.generator_id for s in c.selected} == {1, 2}
    assert all(g.done for g in gens)
