"""Δ-learning: a committee of the difference between an expensive and a cheap method.

With two oracle levels (say xTB and DFT), a committee can learn the expensive level
directly, or learn only the *correction* ``E_expensive - E_cheap`` and add it to the cheap
method at run time. The correction is smoother and smaller than either surface, so it
needs fewer expensive labels; the price is a cheap calculation at every step
(``bench/two_levels.py`` measures both against pre-training on cheap labels followed by
fine-tuning). :func:`delta_labels` turns expensive labels into correction labels;
:class:`DeltaCalculator` is the sum as one ASE calculator, with the committee's spread as
its uncertainty (the cheap method is taken as exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

__all__ = ["DeltaCalculator", "delta_labels"]


def _cheap(atoms: Atoms, base: Calculator) -> tuple[float, np.ndarray]:
    work = atoms.copy()
    work.info = dict(atoms.info)
    work.calc = base
    return float(work.get_potential_energy()), np.asarray(work.get_forces(), dtype=float)


def delta_labels(labels: Sequence[Atoms], base: Calculator) -> list[Atoms]:
    """Copies of ``labels`` whose energy and forces are label minus ``base`` (eV, eV/Å).

    Args:
        labels: Structures with a calculator holding the expensive label.
        base: The cheap method (any ASE calculator), evaluated on every structure.

    Returns:
        New structures (``info`` kept, plus ``delta_base`` naming the base's class) with
        the correction on a :class:`SinglePointCalculator`.
    """
    out = []
    for a in labels:
        e_cheap, f_cheap = _cheap(a, base)
        b = a.copy()
        b.info = {**a.info, "delta_base": type(base).__name__}
        b.calc = SinglePointCalculator(
            b,
            energy=float(a.get_potential_energy()) - e_cheap,
            forces=np.asarray(a.get_forces()) - f_cheap,
        )
        out.append(b)
    return out


class DeltaCalculator(Calculator):
    """``base + committee``: the expensive level from a cheap method and a correction.

    ``energy``, ``free_energy`` and ``forces`` are sums; every other result of the
    committee (``energy_std``, ``forces_std``, ``max_force_std``, the ``*_comm`` keys of
    the members, each plus the base) is passed through, so the uncertainty-driven parts
    of pal-atoms treat it like a committee. ``base_energy`` holds the cheap part.

    Args:
        base: The cheap method (any ASE calculator).
        committee: A committee trained on :func:`delta_labels` (an ASE calculator that
            reports the committee keys).
    """

    implemented_properties: ClassVar[list[str]] = [  # type: ignore[misc]
        "energy", "free_energy", "forces", "base_energy",
        "energy_std", "forces_std", "max_force_std", "energy_comm", "forces_comm",
    ]  # fmt: skip

    def __init__(self, base: Calculator, committee: Calculator) -> None:
        super().__init__()
        self.base = base
        self.committee = committee

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Evaluate the base and the committee on ``atoms`` and add them."""
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        work = self.atoms.copy()
        work.info = dict(self.atoms.info)
        work.calc = self.committee
        work.get_forces()
        self.results = self._add_base(self.atoms, dict(self.committee.results))

    def predict_batch(self, structures: Sequence[Atoms]) -> list[dict[str, Any]]:
        """The sums for many structures: the committee batched, the base one by one.

        Args:
            structures: Structures; not modified.

        Returns:
            One dict per structure with the keys of :meth:`calculate`.

        Raises:
            AttributeError: the committee has no ``predict_batch``.
        """
        preds = self.committee.predict_batch(list(structures))  # type: ignore[attr-defined]
        return [self._add_base(a, dict(p)) for a, p in zip(structures, preds, strict=True)]

    def _add_base(self, atoms: Atoms, delta: dict[str, Any]) -> dict[str, Any]:
        """The committee's correction plus the base on ``atoms`` (energies eV, forces eV/Å)."""
        e_cheap, f_cheap = _cheap(atoms, self.base)
        results = dict(delta)
        results["energy"] = e_cheap + float(delta["energy"])
        results["free_energy"] = results["energy"]
        results["forces"] = f_cheap + np.asarray(delta["forces"])
        results["base_energy"] = e_cheap
        if "energy_comm" in delta:
            results["energy_comm"] = e_cheap + np.asarray(delta["energy_comm"])
        if "forces_comm" in delta:
            results["forces_comm"] = f_cheap[None] + np.asarray(delta["forces_comm"])
        return results
