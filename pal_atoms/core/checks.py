"""Sanity checks on structures, shared by every kernel and the command line.

Each check raises :class:`~pal_atoms.core.errors.StructureError` (a ``ValueError``) with a
one-line message naming the problem, before any expensive model or oracle call.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from pal_atoms.core.errors import StructureError

__all__ = [
    "charge_and_multiplicity",
    "min_distance",
    "validate_structure",
]

#: Keys of ``atoms.info`` read for the total charge and spin multiplicity, in order.
CHARGE_KEYS = ("charge", "total_charge")
MULTIPLICITY_KEYS = ("multiplicity", "mult", "spin_multiplicity")


def min_distance(atoms: Atoms) -> float:
    """Smallest interatomic distance in Å (minimum image for periodic cells).

    Returns ``inf`` for a structure with fewer than two atoms.
    """
    n = len(atoms)
    if n < 2:
        return float("inf")
    if atoms.pbc.any():
        d = atoms.get_all_distances(mic=True)
    else:
        pos = atoms.positions
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    d[np.diag_indices(n)] = np.inf
    return float(d.min())


def validate_structure(
    atoms: Atoms,
    *,
    min_distance_A: float | None = 0.5,
    allowed_numbers: Iterable[int] | None = None,
    what: str = "structure",
) -> None:
    """Raise :class:`StructureError` if ``atoms`` is unusable.

    Args:
        atoms: Structure to check.
        min_distance_A: Smallest allowed interatomic distance in Å; ``None`` skips it.
        allowed_numbers: Atomic numbers the caller can handle; ``None`` allows any.
        what: Name of the structure used in messages (e.g. ``"frame 3 of in.xyz"``).

    Raises:
        StructureError: empty structure, non-finite positions or cell, unknown atomic
            numbers, an element outside ``allowed_numbers``, or atoms closer than
            ``min_distance_A``.
    """
    if len(atoms) == 0:
        raise StructureError(f"{what} has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise StructureError(f"{what} has non-finite (NaN or inf) coordinates")
    if not np.all(np.isfinite(atoms.cell.array)):
        raise StructureError(f"{what} has a non-finite cell")
    numbers = atoms.numbers
    if numbers.min() < 1 or numbers.max() >= len(chemical_symbols):
        raise StructureError(f"{what} has unknown atomic numbers {sorted(set(numbers.tolist()))}")
    if allowed_numbers is not None:
        allowed = {int(z) for z in allowed_numbers}
        bad = sorted(set(numbers.tolist()) - allowed)
        if bad:
            names = ", ".join(chemical_symbols[z] for z in bad)
            ok = ", ".join(chemical_symbols[z] for z in sorted(allowed))
            raise StructureError(f"{what} contains {names}, not covered (covered: {ok})")
    if min_distance_A is not None and len(atoms) > 1:
        dmin = min_distance(atoms)
        if dmin < min_distance_A:
            raise StructureError(
                f"{what} has atoms {dmin:.3f} Å apart (closer than {min_distance_A} Å)"
            )


def _info_int(atoms: Atoms, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in atoms.info and atoms.info[key] is not None:
            value = atoms.info[key]
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                raise StructureError(f"atoms.info[{key!r}] = {value!r} is not a number") from None
            if not as_float.is_integer():
                raise StructureError(f"atoms.info[{key!r}] = {value!r} is not an integer")
            return int(as_float)
    return None


def charge_and_multiplicity(
    atoms: Atoms,
    charge: int | None = None,
    multiplicity: int | None = None,
    *,
    core_electrons: int = 0,
) -> tuple[int, int]:
    """Resolve total charge and spin multiplicity and check that they can hold.

    Explicit arguments win over ``atoms.info`` (keys ``charge``/``multiplicity``). Without
    either, the charge is 0 and the multiplicity the lowest one the electron count allows
    (1 for an even count, 2 for an odd one).

    Args:
        atoms: Structure.
        charge: Total charge in elementary charges, or ``None`` to read it.
        multiplicity: Spin multiplicity 2S+1, or ``None`` to read it or choose the lowest.
        core_electrons: Electrons replaced by pseudopotentials (ECPs), which are removed from
            the count; the parity check uses the count after removal.

    Returns:
        ``(charge, multiplicity)``.

    Raises:
        StructureError: the multiplicity is below 1, needs more unpaired electrons than
            there are electrons, or has the wrong parity for the electron count.
    """
    q = charge if charge is not None else _info_int(atoms, CHARGE_KEYS)
    q = 0 if q is None else int(q)
    n_electrons = int(atoms.numbers.sum()) - core_electrons - q
    if n_electrons < 0:
        raise StructureError(f"charge {q:+d} leaves {n_electrons} electrons")
    m = multiplicity if multiplicity is not None else _info_int(atoms, MULTIPLICITY_KEYS)
    if m is None:
        m = 1 if n_electrons % 2 == 0 else 2
    m = int(m)
    unpaired = m - 1
    if m < 1:
        raise StructureError(f"multiplicity must be >= 1, got {m}")
    if unpaired > n_electrons or (n_electrons - unpaired) % 2 != 0:
        raise StructureError(
            f"multiplicity {m} is impossible with {n_electrons} electrons "
            f"(charge {q:+d}): {'even' if n_electrons % 2 == 0 else 'odd'} electron counts "
            f"need an {'odd' if n_electrons % 2 == 0 else 'even'} multiplicity"
        )
    return q, m
