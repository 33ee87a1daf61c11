"""Shared fixtures of the generator tests: real tblite, real committees, tiny systems."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from pal_atoms.core.protocols import Verdict

HAVE_TBLITE = importlib.util.find_spec("tblite") is not None
HAVE_SELLA = importlib.util.find_spec("sella") is not None
needs_tblite = pytest.mark.skipif(not HAVE_TBLITE, reason="tblite (GFN2-xTB) not installed")
needs_sella = pytest.mark.skipif(not HAVE_SELLA, reason="sella not installed (extra 'ts')")


def make_tblite(charge: int = 0, multiplicity: int | None = None) -> Any:
    """The one factory for the reference calculator (skips when tblite is absent)."""
    if not HAVE_TBLITE:
        pytest.skip("tblite (GFN2-xTB) not installed")
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0)


def always(verdict: Verdict) -> Callable[[Atoms, Mapping[str, Any]], Verdict]:
    """Selection rule returning one verdict: for a reference method without uncertainty."""

    def rule(atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        return verdict

    return rule


class ScriptedRule:
    """Narrow stand-in for the controller's judgement: verdicts in a fixed order.

    After the script runs out, ``then`` is returned.
    """

    def __init__(self, script: Iterable[Verdict], then: Verdict = Verdict.TRUSTED) -> None:
        self.script = list(script)
        self.then = then
        self.calls = 0

    def __call__(self, atoms: Atoms, results: Mapping[str, Any]) -> Verdict:
        self.calls += 1
        return self.script.pop(0) if self.script else self.then


def bi4() -> Atoms:
    """Bi4 tetrahedron (3.0 Å edges), neutral singlet."""
    a = 3.0
    pos = a / np.sqrt(8) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    atoms = Atoms("Bi4", positions=pos)
    atoms.info.update(charge=0, multiplicity=1)
    return atoms


def ethane() -> Atoms:
    """Staggered ethane (ASE g2 geometry)."""
    return molecule("C2H6")


def labelled(structures: Iterable[Atoms], calc: Any) -> list[Atoms]:
    """Copies of ``structures`` labelled with ``calc`` (energy, forces on a SinglePoint)."""
    out = []
    for atoms in structures:
        a = atoms.copy()
        a.calc = calc
        energy, forces = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
        out.append(a)
    return out


#: A tiny MACE committee: about 1 s to build, ~10 ms per prediction on 1 core.
TINY_MACE = {
    "hidden_irreps": "8x0e",
    "max_ell": 1,
    "num_interactions": 1,
    "correlation": 2,
    "radial_mlp": [16, 16],
    "r_max": 4.0,
}


def make_committee(elements: list[str], *, n_members: int = 3, seed: int = 0, **hyper: Any) -> Any:
    """An untrained MACE committee from ``pal_atoms.calculators`` (the real one)."""
    try:
        from pal_atoms.calculators import CommitteeCalculator
    except ImportError as exc:  # pragma: no cover - calculators/ is part of the package
        pytest.skip(f"pal_atoms.calculators unavailable: {exc}")
    return CommitteeCalculator.create(
        "mace",
        elements=elements,
        n_members=n_members,
        seed=seed,
        dtype="float64",
        **{**TINY_MACE, **hyper},
    )
