"""Species: element, charge and spin multiplicity as node types; joint vs factorised."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pal_atoms.calculators import (
    CommitteeCalculator,
    CommitteeTrainer,
    SpeciesEncoding,
    SpeciesTable,
    TrainerSettings,
)

from pal_atoms.core.errors import StructureError

TINY = {"hidden_irreps": "8x0e", "mlp_irreps": "4x0e", "radial_mlp": [8], "num_bessel": 4,
        "max_ell": 1, "correlation": 2}  # fmt: skip


def test_joint_attributes_are_the_identity_and_factorised_ones_share_the_element():
    joint = SpeciesTable.from_elements([83], charges=[0, -2, 1], multiplicities=[1, 2])
    assert torch.equal(joint.attributes(), torch.eye(6, dtype=torch.float64))
    fact = SpeciesTable.from_elements([1, 6], [0, 1], [1, 2], encoding="factorised")
    attrs = fact.attributes()
    assert attrs.shape == (8, 2 + 2 + 2)  # elements | charges | multiplicities
    assert torch.all(attrs.sum(dim=1) == 3)  # one element, one charge, one spin each
    c_neutral_doublet = fact.keys.index((6, 0, 2))
    assert attrs[c_neutral_doublet].tolist() == [0, 1, 1, 0, 0, 1]
    # One charge and one multiplicity: both encodings are the element one-hot.
    single = SpeciesTable.from_elements([1, 6], [0], [2], encoding="factorised")
    assert torch.equal(single.attributes(), torch.eye(2, dtype=torch.float64))


def test_indices_read_the_multiplicity_and_refuse_uncovered_or_impossible_states():
    table = SpeciesTable.from_elements([1, 6], [0], [1, 3])
    ch2 = Atoms("CH2", positions=[[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0]])
    singlet = table.indices(ch2)  # default: the lowest multiplicity (8 electrons: 1)
    ch2.info["multiplicity"] = 3
    triplet = table.indices(ch2)
    assert not np.array_equal(singlet, triplet)
    ch2.info["multiplicity"] = 5
    with pytest.raises(StructureError, match="C at total charge \\+0, multiplicity 5 is not"):
        table.indices(ch2)
    ch2.info["multiplicity"] = 2  # 8 electrons cannot be a doublet
    with pytest.raises(StructureError, match="multiplicity 2"):
        table.indices(ch2)
    blind = SpeciesTable.from_elements([1, 6], [0])
    assert not blind.spin_aware and blind.multiplicities == []
    np.testing.assert_array_equal(
        blind.indices(ch2), blind.indices(Atoms(ch2.symbols, ch2.positions))
    )
    with pytest.raises(ValueError, match="unknown species encoding"):
        SpeciesTable.from_elements([1], encoding="hashed")


def _ch2(seed: int, multiplicity: int, energy: float) -> Atoms:
    rng = np.random.default_rng(seed)
    a = Atoms("CH2", positions=[[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0]])
    a.positions += rng.normal(0, 0.03, (3, 3))
    a.info.update(charge=0, multiplicity=multiplicity)
    a.calc = SinglePointCalculator(a, energy=energy, forces=np.zeros((3, 3)))
    return a


@pytest.mark.parametrize("encoding", ["joint", "factorised"])
def test_a_spin_aware_committee_tells_spin_states_apart(encoding):
    # Same geometries, energies 1 eV apart by spin state: a spin-blind committee can only
    # split the difference, a spin-aware one learns both.
    labels = [_ch2(k, m, -100.0 + (1.0 if m == 1 else 0.0)) for k in range(6) for m in (1, 3)]
    errors = {}
    for name, mults in (("blind", None), ("aware", [1, 3])):
        cm = CommitteeCalculator.create(
            "mace", elements=["C", "H"], multiplicities=mults, species_encoding=encoding,
            n_members=2, seed=0, device="cpu", **TINY,
        )  # fmt: skip
        CommitteeTrainer(cm, TrainerSettings(max_steps=30, validation_fraction=0)).train(labels)
        pred = cm.predict_batch(labels)
        errors[name] = np.mean(
            [abs(p["energy"] - a.get_potential_energy()) for p, a in zip(pred, labels, strict=True)]
        )
        if name == "blind":  # the two spin states of one geometry look the same
            assert pred[0]["energy"] == pytest.approx(pred[1]["energy"], abs=1e-9)
    assert errors["aware"] < 0.1 < 0.4 < errors["blind"], errors


def test_save_load_keeps_species_and_reads_older_pair_files(tmp_path):
    cm = CommitteeCalculator.create(
        "mace", elements=["Bi"], charges=[0, -2], multiplicities=[1, 2], n_members=2,
        seed=0, device="cpu", **TINY,
    )  # fmt: skip
    assert cm.species.encoding is SpeciesEncoding.FACTORISED
    atoms = Atoms("Bi4", positions=[[0, 0, 0], [3.1, 0, 0], [1.5, 2.7, 0], [1.5, 0.9, 2.5]])
    atoms.info["charge"] = -2
    before = cm.predict_batch([atoms])[0]["energy"]
    cm.save(tmp_path / "c")
    back = CommitteeCalculator.load(tmp_path / "c", device="cpu")
    assert back.species == cm.species
    assert back.predict_batch([atoms])[0]["energy"] == pytest.approx(before, abs=1e-6)
    # A file of an earlier release: (Z, charge) pairs, joint, spin-blind.
    old = CommitteeCalculator.create(
        "mace", elements=["Bi"], charges=[0, -2], species_encoding="joint", n_members=2,
        seed=0, device="cpu", **TINY,
    )  # fmt: skip
    old.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "committee.json").read_text())
    meta["species"] = [k[:2] for k in meta["species"]]
    del meta["species_encoding"]
    (tmp_path / "old" / "committee.json").write_text(json.dumps(meta))
    loaded = CommitteeCalculator.load(tmp_path / "old", device="cpu")
    assert not loaded.species.spin_aware and loaded.species.encoding is SpeciesEncoding.JOINT
    assert loaded.predict_batch([atoms])[0]["energy"] == pytest.approx(
        old.predict_batch([atoms])[0]["energy"], abs=1e-6
    )


def test_schnet_embeds_by_index_so_it_keeps_the_joint_encoding():
    cm = CommitteeCalculator.create(
        "schnet", elements=["Bi"], charges=[0, 1], n_members=2, device="cpu", n_atom_basis=8,
        n_interactions=1,
    )  # fmt: skip
    assert cm.species.encoding is SpeciesEncoding.JOINT
