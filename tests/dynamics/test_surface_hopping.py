"""Landau-Zener surface hopping: probabilities, energy conservation, Wigner sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from pal_atoms.dynamics.hopping import (
    HBAR_EV_FS,
    GapTracker,
    belyaev_lebedev_probability,
    rescale_velocities,
)
from pal_atoms.dynamics.surface_hopping import (
    SurfaceHoppingGenerator,
    SurfaceHoppingSettings,
    populations,
)
from pal_atoms.dynamics.wigner import harmonic_modes, wigner_sample

from pal_atoms.workflow.local_client import LocalClient


class TwoStateDimer(Calculator):
    """H2 on two adiabatic surfaces from two crossing diabatic wells and a coupling.

    V1(r) = k/2 (r - 0.74)², V2(r) = k/2 (r - 0.90)² + 0.3 eV, H12 = Δ; the adiabatic
    energies are the eigenvalues, forces are exact. ``max_force_std`` 0: always trusted.
    """

    implemented_properties = ("energy", "forces", "state_energies", "state_forces",
                              "max_force_std")  # fmt: skip

    def __init__(self, coupling_eV: float = 0.08, **kw):
        super().__init__(**kw)
        self.coupling = coupling_eV

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d_vec = self.atoms.positions[1] - self.atoms.positions[0]
        r = float(np.linalg.norm(d_vec))
        unit = d_vec / r
        k = 36.0  # eV/Å²
        v1, dv1 = 0.5 * k * (r - 0.74) ** 2, k * (r - 0.74)
        v2, dv2 = 0.5 * k * (r - 0.90) ** 2 + 0.3, k * (r - 0.90)
        mean, half = 0.5 * (v1 + v2), 0.5 * (v1 - v2)
        root = math.sqrt(half**2 + self.coupling**2)
        dmean, dhalf = 0.5 * (dv1 + dv2), 0.5 * (dv1 - dv2)
        droot = half * dhalf / root
        energies = np.array([mean - root, mean + root])
        de_dr = np.array([dmean - droot, dmean + droot])
        # dE/dx_1 = dE/dr * unit, dE/dx_0 = -dE/dr * unit; F = -dE/dx.
        forces = np.stack([np.stack([g * unit, -g * unit]) for g in de_dr])
        self.results = {
            "energy": energies[0],
            "forces": forces[0],
            "state_energies": energies,
            "state_forces": forces,
            "max_force_std": 0.0,
        }


def test_hop_probability_at_a_linear_avoided_crossing_is_landau_zener():
    coupling, slope_eV_fs = 0.05, 0.05  # H = [[a t, Δ], [Δ, -a t]]
    dt = 0.02
    tracker = GapTracker(dt)
    found = []
    for k in range(-50, 51):
        half = slope_eV_fs * k * dt
        root = math.hypot(half, coupling)
        found += tracker.push(np.array([-root, root]), active=1)
    (cand,) = found
    exact = math.exp(-2 * math.pi * coupling**2 / (HBAR_EV_FS * 2 * slope_eV_fs))
    assert cand.target == 0
    assert cand.gap_eV == pytest.approx(2 * coupling)
    assert cand.probability == pytest.approx(exact, rel=1e-3)
    assert 0.5 < exact < 0.95  # a crossing where the formula matters
    assert belyaev_lebedev_probability(0.1, -1.0) == 0.0  # not a minimum
    assert belyaev_lebedev_probability(0.0, 1.0) == 1.0


def test_velocity_rescaling_conserves_energy_or_frustrates():
    rng = np.random.default_rng(0)
    v, m = rng.normal(size=(4, 3)), np.array([1.0, 12.0, 16.0, 1.0])
    kinetic = 0.5 * float((m[:, None] * v**2).sum())
    d = rng.normal(size=(4, 3))
    along_p = m[:, None] * v  # all the kinetic energy lies along the momenta
    for delta, direction in [(-0.7, d), (-0.7, None), (0.5 * kinetic, None),
                             (0.5 * kinetic, along_p), (0.0, d)]:  # fmt: skip
        new = rescale_velocities(v, m, delta, direction)
        assert new is not None
        assert 0.5 * float((m[:, None] * new**2).sum()) == pytest.approx(kinetic - delta)
        if direction is not None:  # the change is along the (mass-weighted) direction
            change = (new - v) * m[:, None]
            ratio = change / direction
            assert np.allclose(ratio, ratio.flat[0])
    assert rescale_velocities(v, m, 2 * kinetic, None) is None  # cannot pay for the hop
    # Along a direction with little momentum a hop can be frustrated with KE to spare.
    tiny = np.zeros((4, 3))
    tiny[0, 0] = 1.0
    small_v = v.copy()
    small_v[0] = 0.0
    assert rescale_velocities(small_v, m, 0.5 * kinetic, tiny) is None


def _dimer() -> Atoms:
    """H2 at the minimum of the lower adiabatic surface."""
    from ase.optimize import BFGS

    atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    atoms.calc = TwoStateDimer()
    BFGS(atoms, logfile=None).run(fmax=1e-6)
    atoms.calc = None
    return atoms


def test_wigner_sampling_gives_the_zero_point_energy():
    atoms = _dimer()
    modes = harmonic_modes(atoms, TwoStateDimer())
    assert modes.wavenumbers_cm1.shape == (1,)
    hbar = units._hbar * units.J * units.s
    zpe = 0.5 * hbar * float(modes.omega[0])
    rng = np.random.default_rng(1)
    kinetic = [wigner_sample(modes, rng).get_kinetic_energy() for _ in range(3000)]
    # Half the zero-point energy is kinetic on average (standard error ~2 %).
    assert np.mean(kinetic) == pytest.approx(0.5 * zpe, rel=0.08)
    hot = [wigner_sample(modes, rng, temperature_K=8000).get_kinetic_energy() for _ in range(3000)]
    assert np.mean(hot) > 1.2 * np.mean(kinetic)


def test_surface_hopping_conserves_total_energy_across_hops_and_logs_populations():
    modes = harmonic_modes(_dimer(), TwoStateDimer())
    client = LocalClient(TwoStateDimer())
    settings = SurfaceHoppingSettings(
        initial_state=1, timestep_fs=0.02, duration_fs=30.0, n_trajectories=6,
        temperature_K=0.0, seed=3, min_distance_A=0.3,
    )  # fmt: skip
    gen = SurfaceHoppingGenerator(modes, settings=settings, generator_id=0)
    drift = []
    start = None
    for event in gen.irun(client):
        if event.reason == "trajectory complete":
            start = None  # the next trajectory has its own energy
            continue
        total = gen.total_energy()
        if start is None:
            start = total
            continue
        drift.append(abs(total - start))
    assert gen.done and gen.n_complete == 6
    real = [h for h in gen.hops if not h["frustrated"]]
    assert real, "the upper state crosses the ground state's well: some trajectory hops"
    assert max(drift) < 1e-3, max(drift)  # eV: velocity Verlet error only (hops conserve)
    counts, pops = populations(gen.trajectories, 2)
    assert counts[0] == 6 and pops.shape == (settings.steps_per_trajectory + 1, 2)
    np.testing.assert_allclose(pops.sum(axis=1), 1.0)
    assert pops[0, 1] == 1.0 and pops[-1, 0] > 0


def test_state_round_trip_resumes_with_the_same_history():
    modes = harmonic_modes(_dimer(), TwoStateDimer())
    client = LocalClient(TwoStateDimer())
    settings = SurfaceHoppingSettings(timestep_fs=0.1, duration_fs=5.0, n_trajectories=3)
    gen = SurfaceHoppingGenerator(modes, settings=settings)
    gen.run(client, max_steps=70)
    saved = gen.state()
    import json

    saved = json.loads(json.dumps(saved))
    again = SurfaceHoppingGenerator(modes, settings=settings)
    again.restore(saved)
    assert again.step == gen.step and again.hops == gen.hops
    assert again.n_complete == gen.n_complete
    again.run(client)
    assert again.done and again.n_complete == 3


def test_ground_state_predictions_are_refused_with_a_clear_error():
    from ase.calculators.emt import EMT

    modes = harmonic_modes(_dimer(), TwoStateDimer())

    class Plain(EMT):
        def calculate(self, *a, **k):
            super().calculate(*a, **k)
            self.results["max_force_std"] = 0.0

    gen = SurfaceHoppingGenerator(modes)
    with pytest.raises(ValueError, match="several states"):
        gen.run(LocalClient(Plain()), max_steps=1)
    with pytest.raises(ValueError, match="at least 3 time steps"):
        SurfaceHoppingSettings(timestep_fs=1.0, duration_fs=2.0)
