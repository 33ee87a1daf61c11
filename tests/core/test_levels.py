"""The second oracle level: which structures the expensive oracle labels."""

from __future__ import annotations

import pytest
from ase import Atoms

from pal_atoms.jobs.levels import HighLevelLearning, select_high


class _Spread:
    """Stand-in committee whose max_force_std is the structure's first x coordinate."""

    def predict_batch(self, structures):
        return [{"max_force_std": float(a.positions[0, 0])} for a in structures]


def _image(energy: float, x: float = 0.0) -> Atoms:
    a = Atoms("H2", positions=[[x, 0, 0], [x + 0.74, 0, 0]])
    a.info.update(energy=energy, charge=0, multiplicity=1, cv=0.0)
    return a


def test_half_the_budget_goes_to_path_images_highest_and_first_first_the_rest_to_the_uncertain():
    path = [_image(e, x=10 + i) for i, e in enumerate([0.0, 0.2, 0.5, 0.3, -0.1])]
    pool = [_image(0.0, x=s) for s in (0.1, 0.9, 0.4, 0.7)]
    picked = select_high(_Spread(), [path], pool, 5)
    assert [a.info["high_source"] for a in picked] == ["path"] * 3 + ["uncertain"] * 2
    assert [a.positions[0, 0] for a in picked] == [12, 10, 13, 0.9, 0.7]
    assert all(a.calc is None and "energy" not in a.info for a in picked)
    assert picked[0].info["multiplicity"] == 1


def test_path_images_rank_by_energy_relative_to_their_own_reactant():
    low = [_image(e, x=i) for i, e in enumerate((-100.0, -99.6))]  # barrier 0.4
    high = [_image(e, x=5 + i) for i, e in enumerate((50.0, 50.1))]  # barrier 0.1, higher
    picked = select_high(_Spread(), [high, low], [], 1)
    assert picked[0].positions[0, 0] == 1.0  # low's highest image, not its first


def test_two_labels_are_the_two_ends_of_the_barrier_and_a_downhill_path_repeats_none():
    path = [_image(e, x=10 + i) for i, e in enumerate([0.0, 0.2, 0.5, 0.3, -0.1])]
    pool = [_image(0.0, x=0.9)]
    assert [a.positions[0, 0] for a in select_high(_Spread(), [path], pool, 2)] == [12, 10]
    downhill = [_image(e, x=10 + i) for i, e in enumerate([0.0, -0.2, -0.5])]
    picked = select_high(_Spread(), [downhill], pool, 3)
    assert [a.positions[0, 0] for a in picked] == [10, 11, 0.9]
    two = [[_image(e, x=10 + i) for i, e in enumerate([0.0, 0.3, 0.1])],
           [_image(e, x=20 + i) for i, e in enumerate([5.0, 5.6, 5.2])]]  # fmt: skip
    assert [a.positions[0, 0] for a in select_high(_Spread(), two, [], 4)] == [21, 11, 20, 10]


def test_a_zero_budget_picks_nothing_and_a_small_pool_gives_what_it_has():
    path = [_image(0.0), _image(0.1)]
    assert select_high(_Spread(), [path], [], 0) == []
    assert len(select_high(_Spread(), [path], [_image(0.0, x=1)], 10)) == 3


def test_slots_the_pool_cannot_fill_go_back_to_the_path_and_odd_paths_are_harmless():
    path = [_image(e, x=10 + i) for i, e in enumerate([0.0, 0.2, 0.5, 0.3, -0.1, 0.1])]
    picked = select_high(_Spread(), [path, [], [_image(1.0, x=30)]], [_image(0.0, x=0.9)], 6)
    # Half and 2 per path give 6 path slots; 5 of them fit the budget before the pool.
    assert [a.positions[0, 0] for a in picked] == [12, 30, 10, 13, 11, 15]
    picked = select_high(_Spread(), [path], [_image(0.0, x=0.9)], 6)
    assert [a.positions[0, 0] for a in picked] == [12, 10, 13, 0.9, 11, 15]
    broken = [_image(0.0, x=40), _image(float("nan"), x=41), _image(0.3, x=42)]
    assert [a.positions[0, 0] for a in select_high(_Spread(), [broken], [], 3)] == [42, 40, 41]


def test_a_resumed_stage_never_picks_a_structure_that_already_has_an_expensive_label():
    path = [_image(e, x=10 + i) for i, e in enumerate([0.0, 0.2, 0.5, 0.3])]
    pool = [_image(0.0, x=s) for s in (0.1, 0.9)]
    whole = select_high(_Spread(), [path], pool, 4)
    first = select_high(_Spread(), [path], pool, 4)[:2]  # the stage stopped after two labels
    rest = select_high(_Spread(), [path], pool, 4, exclude=first)
    assert [a.positions[0, 0] for a in first + rest] == [a.positions[0, 0] for a in whole]
    assert [a.positions[0, 0] for a in whole] == [12, 10, 0.9, 0.1]


def test_the_learning_modes_are_named_as_on_the_command_line():
    assert HighLevelLearning("fine-tune") is HighLevelLearning.FINE_TUNE
    with pytest.raises(ValueError):
        HighLevelLearning("transfer")


def _h2(d_A: float, source: str) -> Atoms:
    a = Atoms("H2", positions=[[0, 0, 0], [d_A, 0, 0]])
    a.info.update(charge=0, multiplicity=1, high_source=source)
    return a


def test_failed_expensive_labels_are_stored_with_their_status_and_never_as_data(tmp_path):
    """Real PySCF: a converged label, a refused geometry and an unconverged SCF."""
    pytest.importorskip("pyscf")
    from pal_atoms.oracles import PySCF

    from pal_atoms.core.label import LabelStatus
    from pal_atoms.jobs.levels import label_high, stored_high
    from pal_atoms.store import LabelStore

    store_path = tmp_path / "labels_high.h5"
    good = PySCF(functional="LDA", basis="sto-3g", density_fit=False)
    ok = label_high([_h2(0.74, "path"), _h2(0.1, "uncertain")], good, store_path)
    # One SCF cycle without the second-order fallback cannot converge from the guess.
    stingy = PySCF(
        functional="LDA", basis="sto-3g", density_fit=False, max_cycle=1, second_order="never"
    )
    assert label_high([_h2(0.9, "path")], stingy, store_path) == []

    assert len(ok) == 1 and ok[0].get_potential_energy() < 0
    with LabelStore(store_path, mode="r") as store:
        statuses = store.statuses().tolist()
        failed = store.read(status=[LabelStatus.FAILED, LabelStatus.UNCONVERGED])
    assert statuses == ["ok", "failed", "unconverged"]
    # The failures keep their geometry, source and reason, but carry no energy or forces.
    assert [a.info["high_source"] for a in failed] == ["uncertain", "path"]
    assert all(a.calc is None and a.info["error"] for a in failed)
    from pal_atoms.jobs.reaction import _first_error

    assert "0.100 Å apart" in _first_error(store_path)  # quoted if no label succeeds
    again = stored_high(store_path)  # what a resumed reaction stage starts from
    assert len(again) == 1
    assert again[0].info["high_source"] == "path"
    assert abs(again[0].positions[1, 0] - 0.74) < 1e-9
