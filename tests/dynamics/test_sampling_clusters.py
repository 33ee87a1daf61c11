"""Rattle sampler and bismuth cluster builder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read
from dynamics_helpers import bi4, ethane, needs_tblite
from pal_atoms.dynamics import build_bi_clusters, n_fragments, rattle_sample, write_frames

from pal_atoms.core.checks import charge_and_multiplicity, min_distance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bi_cluster.xyz"


def test_rattle_sample_is_deterministic_and_keeps_info():
    a = bi4()
    a.info["charge"] = -2
    samples = rattle_sample([a, ethane()], 5, rattle_std_A=0.05, strain_range=(0.9, 1.1), seed=4)
    assert len(samples) == 10
    assert [s.info["rattle_source"] for s in samples] == [0] * 5 + [1] * 5
    assert all(s.info["charge"] == -2 for s in samples[:5])
    assert all(0.9 <= s.info["rattle_scale"] <= 1.1 for s in samples)
    assert all(min_distance(s) >= 0.5 for s in samples)
    again = rattle_sample([a, ethane()], 5, rattle_std_A=0.05, strain_range=(0.9, 1.1), seed=4)
    for s, t in zip(samples, again, strict=True):
        np.testing.assert_array_equal(s.positions, t.positions)
    assert len({round(float(s.positions[0, 0]), 8) for s in samples[:5]}) == 5


def test_rattle_sample_strains_clusters_and_cells():
    (squeezed,) = rattle_sample(bi4(), 1, rattle_std_A=0.0, strain_range=(0.9, 0.9))
    assert min_distance(squeezed) == pytest.approx(0.9 * min_distance(bi4()))
    cu = bulk("Cu", cubic=True)
    (stretched,) = rattle_sample(cu, 1, rattle_std_A=0.0, strain_range=(1.1, 1.1))
    assert stretched.get_volume() == pytest.approx(1.1**3 * cu.get_volume())


def test_rattle_sample_refuses_bad_arguments():
    with pytest.raises(ValueError, match="strain_range"):
        rattle_sample(bi4(), 1, strain_range=(1.1, 0.9))
    with pytest.raises(ValueError, match="n must be"):
        rattle_sample(bi4(), -1)
    with pytest.raises(ValueError, match="draws"):
        rattle_sample(bi4(), 1, strain_range=(0.1, 0.1), min_distance_A=2.0, max_tries=3)


def test_cluster_builder_sizes_shapes_charges_and_distances(tmp_path):
    clusters = build_bi_clusters(
        [2, 5, 16], shapes_per_size=3, charges=[-2, 0, 1], min_distance_A=2.8, seed=7
    )
    assert len(clusters) == 3 * 3 * 3
    for atoms in clusters:
        assert set(atoms.get_chemical_symbols()) == {"Bi"}
        assert min_distance(atoms) >= 2.8
        assert n_fragments(atoms, 2.8 + 0.4 + 0.15 + 1e-6) == 1  # compact and connected
        q, m = charge_and_multiplicity(atoms)
        assert (q, m) == (atoms.info["charge"], atoms.info["multiplicity"])
    assert sorted({a.info["charge"] for a in clusters}) == [-2, 0, 1]
    assert [len(a) for a in clusters[::9]] == [2, 5, 16]
    # shapes of one size differ; charges of one shape share the geometry
    b5 = [a for a in clusters if len(a) == 5]
    np.testing.assert_array_equal(b5[0].positions, b5[1].positions)
    assert not np.allclose(b5[0].positions, b5[3].positions)
    assert b5[1].info["multiplicity"] == 2  # Bi5 neutral: 415 electrons
    path = tmp_path / "clusters.xyz"
    write_frames(path, clusters)
    back = read(path, ":")
    assert [a.info["charge"] for a in back] == [a.info["charge"] for a in clusters]
    assert [a.info["multiplicity"] for a in back] == [a.info["multiplicity"] for a in clusters]
    again = build_bi_clusters([2, 5, 16], shapes_per_size=3, charges=[-2, 0, 1], seed=7)
    np.testing.assert_array_equal(again[-1].positions, clusters[-1].positions)


def test_cluster_builder_refuses_bad_arguments():
    with pytest.raises(ValueError, match="sizes"):
        build_bi_clusters([17])
    with pytest.raises(ValueError, match="sizes"):
        build_bi_clusters([1])
    with pytest.raises(ValueError, match="charges"):
        build_bi_clusters([4], charges=[])


@needs_tblite
def test_cluster_builder_pre_relaxes_with_xtb():
    (raw,) = build_bi_clusters([6], shapes_per_size=1, charges=[-2], seed=1)
    (relaxed,) = build_bi_clusters(
        [6], shapes_per_size=1, charges=[-2], seed=1, relax_with_xtb=True, min_distance_A=2.6
    )
    assert "xtb_energy_eV" in relaxed.info
    assert relaxed.info["charge"] == -2
    assert min_distance(relaxed) >= 2.6
    assert not np.allclose(raw.positions, relaxed.positions)


def test_shipped_example_clusters():
    frames = read(EXAMPLE, ":")
    assert 4 <= len(frames) <= 8
    assert all(4 <= len(a) <= 8 for a in frames)
    assert {a.info["charge"] for a in frames} >= {0}
    assert len({a.info["charge"] for a in frames}) >= 2
    for atoms in frames:
        assert set(atoms.get_chemical_symbols()) == {"Bi"}
        assert min_distance(atoms) >= 2.6
        assert charge_and_multiplicity(atoms) == (atoms.info["charge"], atoms.info["multiplicity"])


@pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed")
def test_example_energies_are_finite_with_tblite():
    from tblite.ase import TBLite

    for atoms in read(EXAMPLE, ":"):
        atoms.calc = TBLite(
            charge=atoms.info["charge"], multiplicity=atoms.info["multiplicity"], verbosity=0
        )
        assert np.isfinite(atoms.get_potential_energy())
