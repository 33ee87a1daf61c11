"""The bridge between unmodified ASE dynamics and the prediction kernel.

:class:`ForwardingCalculator` is an ordinary ASE calculator: every geometry an ASE
dynamics, optimizer, NEB or Sella asks it about goes to a
:class:`~pal_atoms.core.protocols.PredictionClient`, and the committee's results come back
together with the controller's verdict (kept in :attr:`ForwardingCalculator.last_verdict`).
:class:`~pal_atoms.workflow.local_client.LocalClient` is the single-process client (it
predicts with any ASE calculator and judges with a selection rule).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from pal_atoms.core.errors import PalAtomsError
from pal_atoms.core.protocols import PredictionClient, Verdict

__all__ = [
    "UNCERTAINTY_KEYS",
    "ForwardingCalculator",
    "UnphysicalStateError",
    "worst_verdict",
]

logger = logging.getLogger(__name__)

#: Keys beyond energy and forces a committee may return (uncertainty, states); forwarded
#: (and gettable) when present.
UNCERTAINTY_KEYS = (
    "energy_std",
    "forces_std",
    "max_force_std",
    "mean_force_std",
    "forces_std_raw",
    "max_force_std_raw",
    "stress_std",
    "energy_comm",
    "forces_comm",
    "stress_comm",
    "state_energies",
    "state_forces",
    "gaps",
    "state_energies_std",
    "state_forces_std",
)

#: ``atoms.info`` keys that change the prediction without moving an atom.
_INFO_KEYS = ("charge", "total_charge", "multiplicity", "mult", "spin_multiplicity")


class UnphysicalStateError(PalAtomsError):
    """Raised when a generator reaches a geometry or prediction no one should use.

    Atoms closer than the threshold, fragments flying apart, non-finite coordinates,
    energies or forces, or an energy jump beyond the limit. Generators catch it and
    restart; it only escapes from a bare :class:`ForwardingCalculator` used by hand.
    """


def worst_verdict(verdicts: Iterable[Verdict]) -> Verdict | None:
    """Most severe verdict of ``verdicts`` (``None`` for none).

    Severity order: ``TRUSTED < UNCERTAIN < UNTRUSTED < FAILED``.
    """
    worst: Verdict | None = None
    for v in verdicts:
        if worst is None or Verdict(v).severity > worst.severity:
            worst = Verdict(v)
    return worst


class ForwardingCalculator(Calculator):
    """ASE calculator that forwards every geometry to a prediction client.

    Any unmodified ASE dynamics or optimizer runs on it. Each call to :meth:`calculate`
    is one ``client.evaluate`` round trip; the results are cached like any ASE result, and
    the verdict of every round trip is kept until :meth:`pop_verdicts`.

    Args:
        client: Where predictions and verdicts come from.
        generator_id: Id sent with every request (provenance).
        guard: Optional check run on each geometry *before* it is forwarded; it raises
            :class:`UnphysicalStateError` to stop garbage from reaching the committee.

    Attributes:
        last_verdict: Verdict of the most recent round trip (``None`` before the first).
        step: Number of round trips so far; sent as ``step`` with each request.
    """

    implemented_properties: ClassVar[tuple[str, ...]] = (  # type: ignore[assignment,misc]
        "energy",
        "free_energy",
        "forces",
        "stress",
        *UNCERTAINTY_KEYS,
    )

    def __init__(
        self,
        client: PredictionClient,
        *,
        generator_id: int = 0,
        guard: Callable[[Atoms], None] | None = None,
    ) -> None:
        super().__init__()
        if not callable(getattr(client, "evaluate", None)):
            raise ValueError(f"client must have an evaluate() method, got {type(client)!r}")
        self.client = client
        self.generator_id = int(generator_id)
        self.guard = guard
        self.step = 0
        self.last_verdict: Verdict | None = None
        self._verdicts: list[Verdict] = []

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Iterable[str] = ("energy",),
        system_changes: Iterable[str] = tuple(all_changes),
    ) -> None:
        """Forward ``atoms`` to the client and store its results (energy in eV, forces in eV/Å).

        Raises:
            UnphysicalStateError: The guard rejected the geometry (nothing was forwarded),
                the prediction failed (verdict ``FAILED``), or the client returned
                non-finite energy or forces (the verdict is kept).
        """
        super().calculate(atoms, list(properties), list(system_changes))
        assert self.atoms is not None  # set by the base class
        if self.guard is not None:
            self.guard(self.atoms)
        self.step += 1
        results, verdict = self.client.evaluate(
            self.atoms, generator_id=self.generator_id, step=self.step
        )
        verdict = Verdict(verdict)
        self.last_verdict = verdict
        self._verdicts.append(verdict)
        if verdict is Verdict.FAILED:
            raise UnphysicalStateError("the committee could not predict this geometry")
        out = {
            k: (np.array(v, dtype=float) if isinstance(v, np.ndarray) else v)
            for k, v in results.items()
        }
        if "energy" not in out or "forces" not in out:
            raise ValueError(f"client results need 'energy' and 'forces', got {sorted(out)}")
        out.setdefault("free_energy", out["energy"])
        forces = np.asarray(out["forces"], dtype=float)
        if forces.shape != (len(self.atoms), 3):
            raise ValueError(f"forces must have shape ({len(self.atoms)}, 3), got {forces.shape}")
        out["forces"] = forces
        self.results = out
        if not (np.isfinite(float(out["energy"])) and np.all(np.isfinite(forces))):
            raise UnphysicalStateError("the committee returned non-finite energy or forces")

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """Changes since the cached geometry, by exact comparison (fast path of ASE's).

        ASE's ``compare_atoms`` costs ~100 µs per call (``numpy.isclose`` per property);
        an MD step asks twice. Exact equality is at least as strict as ASE's 1e-15
        tolerance. A change of ``charge``/``multiplicity`` in ``atoms.info`` counts as an
        ``initial_charges`` change (the committee reads the charge from there).
        """
        old = self.atoms
        if old is None or len(old) != len(atoms):
            return list(all_changes)
        changes = []
        if not np.array_equal(old.positions, atoms.positions):
            changes.append("positions")
        if not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        if not np.array_equal(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        for key in ("initial_charges", "initial_magmoms"):
            a, b = old.arrays.get(key), atoms.arrays.get(key)
            if a is None or b is None:
                if (a is None) != (b is None):
                    changes.append(key)
            elif not np.array_equal(a, b):
                changes.append(key)
        if "initial_charges" not in changes and any(
            old.info.get(k) != atoms.info.get(k) for k in _INFO_KEYS
        ):
            changes.append("initial_charges")
        return changes

    def get_property(
        self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True
    ) -> Any:
        """ASE's ``get_property``, without a second round trip for a key the client lacks.

        Raises:
            PropertyNotImplementedError: ``name`` is not declared, or the client did not
                return it for this geometry.
        """
        target = atoms if atoms is not None else self.atoms
        if (
            name in self.implemented_properties
            and name not in self.results
            and self.results
            and target is not None
            and not self.check_state(target)
        ):
            raise PropertyNotImplementedError(
                f"{name!r} not returned by the prediction client for this geometry"
            )
        return super().get_property(name, atoms, allow_calculation)

    def pop_verdicts(self) -> list[Verdict]:
        """Return the verdicts of the round trips since the last call, and forget them."""
        verdicts, self._verdicts = self._verdicts, []
        return verdicts

    def prime(self, atoms: Atoms, results: Mapping[str, Any]) -> None:
        """Make ``results`` the cached results for ``atoms`` (no round trip for it).

        Used when a generator jumps back to a frame it has already evaluated.

        Args:
            atoms: The geometry (copied).
            results: Its results, as stored from an earlier :attr:`results`.
        """
        self.atoms = atoms.copy()
        self.results = dict(results)
