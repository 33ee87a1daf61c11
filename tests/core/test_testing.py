"""The conformance checkers pass the real kernels and catch broken ones."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones
from pal_atoms.dynamics import LocalClient, MDGenerator, MDSettings
from pal_atoms.oracles import XTB

from pal_atoms.core.label import LabelStatus
from pal_atoms.testing import check_committee, check_generator, check_oracle
from pal_atoms.workflow.selection import TrustWindow

needs_tblite = pytest.mark.skipif(
    importlib.util.find_spec("tblite") is None, reason="tblite (GFN2-xTB) not installed"
)


def bi4(seed: int = 0) -> Atoms:
    """Slightly distorted Bi4 tetrahedron (3.0 Å edges): no force vanishes by symmetry."""
    rng = np.random.default_rng(seed)
    pos = 3.0 / np.sqrt(8) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    atoms = Atoms("Bi4", positions=pos + rng.normal(scale=0.05, size=(4, 3)))
    atoms.info.update(charge=0, multiplicity=1)
    return atoms


# -- oracles ----------------------------------------------------------------------------------
class WrongShapeXTB(XTB):
    def _compute(self, atoms, *, want_stress):
        results = super()._compute(atoms, want_stress=want_stress)
        return {**results, "forces": results["forces"][:-1]}


class TupleSettingsXTB(XTB):
    @property
    def settings(self):
        return {**super().settings, "grid": (1, 2)}


class ForgetfulPickleXTB(XTB):
    def __reduce__(self):
        return (type(self), ())


def gfn1_forgetful():
    return ForgetfulPickleXTB(method="GFN1-xTB")


@needs_tblite
def test_check_oracle_passes_xtb():
    label = check_oracle(XTB(), bi4())
    assert label.status is LabelStatus.OK
    assert label.oracle == "xtb"


@needs_tblite
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (LennardJones, "not a pal_atoms.oracles.Oracle"),
        (WrongShapeXTB, "gave status 'failed'"),
        (TupleSettingsXTB, "changes in a JSON round trip"),
        (gfn1_forgetful, "pickle round trip changed"),
    ],
    ids=["plain-ase", "wrong-force-shape", "tuple-settings", "pickle-loses-settings"],
)
def test_check_oracle_catches_broken_oracles(make, message):
    with pytest.raises(AssertionError, match=message):
        check_oracle(make(), bi4())


@needs_tblite
def test_check_oracle_rejects_a_structure_the_oracle_refuses():
    squashed = bi4()
    squashed.positions[1] = squashed.positions[0] + 0.1
    with pytest.raises(AssertionError, match=r"oracle.check\(atoms\) raised StructureError"):
        check_oracle(XTB(), squashed)


# -- committees -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def committee():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from pal_atoms.calculators import CommitteeCalculator

    return CommitteeCalculator.create(
        "mace", elements=["Bi"], n_members=2, hidden_irreps="8x0e", num_interactions=1,
        device="cpu", seed=3,
    )  # fmt: skip


def broken(committee, edit=None, batch_edit=None):
    """A committee sharing ``committee``'s model whose predictions are edited."""
    base = type(committee)

    class Broken(base):
        def predict_batch(self, structures):
            results = base.predict_batch(self, structures)
            if batch_edit is not None:
                return batch_edit(self, structures, results)
            for res in results:
                edit(res)
            return results

    return Broken(committee.model, committee.species, device=committee.device)


def drop_forces_std(res):
    del res["forces_std"]


def flip_forces(res):
    res["forces"], res["forces_comm"] = -res["forces"], -res["forces_comm"]


def add_charges(res):
    res["charges"] = np.zeros(len(res["forces"]))


def double_forces_std(res):
    res["forces_std"] = 2 * res["forces_std"]


def first_for_all(self, structures, results):
    return [results[0]] * len(structures)


def test_check_committee_passes_mace(committee):
    check_committee(committee, bi4())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"edit": drop_forces_std}, "declared property 'forces_std' not retrievable"),
        ({"edit": add_charges}, r"keys not in implemented_properties: \['charges'\]"),
        ({"edit": double_forces_std}, "forces_std .* not consistent with the members"),
        ({"edit": flip_forces}, "by finite difference"),
        ({"batch_edit": first_for_all}, "predict_batch .* differs from a single calculation"),
    ],
    ids=["missing-key", "undeclared-key", "inconsistent-std", "wrong-sign", "batch"],
)
def test_check_committee_catches_broken_committees(committee, kwargs, message):
    with pytest.raises(AssertionError, match=message):
        check_committee(broken(committee, **kwargs), bi4())


def test_check_committee_rejects_a_plain_calculator():
    with pytest.raises(AssertionError, match="no predict_batch"):
        check_committee(LennardJones(), bi4())


# -- generators -------------------------------------------------------------------------------
def md(cls=MDGenerator, n_steps=None):
    settings = MDSettings(temperature_K=300, timestep_fs=2, n_steps=n_steps, seed=5)
    return cls(bi4(), settings=settings, generator_id=3)


def trusting_client(committee):
    return LocalClient(calculator=committee, rule=TrustWindow(lower=100.0, upper=1000.0))


class ForgetfulMD(MDGenerator):
    def restore(self, state):
        super().restore(state)
        self.step = 0


class NumpyStateMD(MDGenerator):
    def state(self):
        return {**super().state(), "positions": self.atoms.positions}


def test_check_generator_passes_md_on_a_committee(committee):
    check_generator(md(), trusting_client(committee), n_steps=3, reproducible=True)


def test_check_generator_passes_a_generator_that_finishes(committee):
    check_generator(md(n_steps=2), trusting_client(committee), n_steps=3)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (ForgetfulMD, r"step 1 after step 3 \(must increase\)"),
        (NumpyStateMD, r"state\(\) is not JSON-serialisable"),
    ],
    ids=["restore-loses-step", "numpy-state"],
)
def test_check_generator_catches_broken_generators(committee, cls, message):
    with pytest.raises(AssertionError, match=message):
        check_generator(md(cls), trusting_client(committee), n_steps=3)
