"""Node types of a committee: element, total charge and spin multiplicity of the structure.

A committee sees each atom as one *species*: its element together with the total charge
and (optionally) the spin multiplicity of the structure it belongs to, so that structures
with the same geometry but another charge or spin state get other energies. How a species
reaches the network is its *encoding*:

- :attr:`SpeciesEncoding.JOINT`: every (element, charge, multiplicity) combination is a
  node type of its own (a one-hot over the combinations). The same element in another
  charge state shares nothing with it but the interaction weights.
- :attr:`SpeciesEncoding.FACTORISED`: the node attributes are the element's one-hot next
  to a one-hot of the structure's charge and one of its multiplicity. A charged cluster
  then starts from the element's own embedding and learns only what the charge changes;
  the backends' use of node attributes is linear, so this is a sum of an element, a charge
  and a spin embedding.

A dimension that takes a single value (one charge, one multiplicity) adds no column, so
for one state both encodings are the plain element one-hot. E0s are fitted per species
(combination) in either encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from pal_atoms.core.checks import charge_and_multiplicity, validate_structure
from pal_atoms.core.errors import StructureError

__all__ = [
    "SPIN_BLIND",
    "SpeciesEncoding",
    "SpeciesTable",
    "charge_and_spin",
    "node_attribute_table",
    "resolve_numbers",
    "total_charge",
]

#: Multiplicity entry of a species of a spin-blind table (structures of any spin share it).
SPIN_BLIND = 0


class SpeciesEncoding(Enum):
    """How species become node attributes (see the module docstring)."""

    JOINT = "joint"
    FACTORISED = "factorised"

    @classmethod
    def parse(cls, value: str | SpeciesEncoding) -> SpeciesEncoding:
        """The encoding named ``value``.

        Raises:
            ValueError: an unknown name.
        """
        if isinstance(value, SpeciesEncoding):
            return value
        try:
            return cls(str(value).lower().replace("factorized", "factorised"))
        except ValueError:
            known = ", ".join(e.value for e in cls)
            raise ValueError(f"unknown species encoding {value!r}; known: {known}") from None


def total_charge(atoms: Atoms) -> int:
    """Total charge of ``atoms`` in elementary charges, read from ``atoms.info``.

    Reads ``info["charge"]`` (or ``info["total_charge"]``); a missing key means 0.

    Raises:
        StructureError: the value is not an integer.
    """
    for key in ("charge", "total_charge"):
        value = atoms.info.get(key)
        if value is not None:
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                raise StructureError(f"atoms.info[{key!r}] = {value!r} is not a number") from None
            if not as_float.is_integer():
                raise StructureError(f"atoms.info[{key!r}] = {value!r} is not an integer")
            return int(as_float)
    return 0


def resolve_numbers(
    elements: Sequence[str] | None, atomic_numbers: Sequence[int] | None
) -> list[int]:
    """Atomic numbers from exactly one of chemical symbols or atomic numbers.

    Raises:
        ValueError: both or neither given, or an unknown symbol.
    """
    from ase.data import atomic_numbers as table

    if (elements is None) == (atomic_numbers is None):
        raise ValueError("give exactly one of elements= or atomic_numbers=")
    if elements is None:
        return [int(z) for z in atomic_numbers or ()]
    unknown = [s for s in elements if s not in table]
    if unknown:
        raise ValueError(f"unknown element symbol(s) {unknown}")
    return [table[s] for s in elements]


def charge_and_spin(atoms: Atoms) -> tuple[int, object]:
    """What of ``atoms.info`` a committee's prediction depends on besides positions."""
    return total_charge(atoms), atoms.info.get("multiplicity")


def node_attribute_table(
    node_attributes: torch.Tensor | None, n_species: int, backend: Any
) -> torch.Tensor:
    """Checked node attributes, float64, shape ``[n_species, n_attributes]``.

    ``None`` is the one-hot (identity).

    Raises:
        ValueError: a wrong shape, or attributes other than the one-hot for a backend
            that embeds species by index.
    """
    eye = torch.eye(n_species, dtype=torch.float64)
    table = eye if node_attributes is None else torch.as_tensor(node_attributes).double()
    if table.ndim != 2 or table.shape[0] != n_species:
        raise ValueError(
            f"node_attributes must have shape [{n_species}, n_attributes], got {tuple(table.shape)}"
        )
    one_hot = table.shape == eye.shape and bool(torch.equal(table, eye))
    if not one_hot and not backend.reads_node_attributes:
        raise ValueError(
            f"the {backend.name} backend embeds species by index: it supports the joint "
            "species encoding only"
        )
    return table


def _label(z: int, q: int, m: int) -> str:
    spin = "" if m == SPIN_BLIND else f", 2S+1={m}"
    return f"{chemical_symbols[z]}({q:+d}{spin})"


@dataclass(frozen=True)
class SpeciesTable:
    """The node types of a committee: ordered ``(atomic number, charge, multiplicity)``.

    Attributes:
        keys: Species as ``(Z, total charge, multiplicity)``; the index in this tuple is
            the node type. Multiplicity :data:`SPIN_BLIND` (0) in every key makes the
            table spin-blind (committees written before multiplicities were species).
        encoding: How species become node attributes.
    """

    keys: tuple[tuple[int, int, int], ...]
    encoding: SpeciesEncoding = SpeciesEncoding.JOINT

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a committee needs at least one species")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("species keys must be unique")
        blind = {m == SPIN_BLIND for _, _, m in self.keys}
        if len(blind) > 1:
            raise ValueError("species are either all spin-blind (multiplicity 0) or none")
        if any(m < 0 for *_, m in self.keys):
            raise ValueError("multiplicities are >= 1 (or 0 for a spin-blind table)")
        object.__setattr__(self, "encoding", SpeciesEncoding.parse(self.encoding))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_elements(
        cls,
        numbers: Sequence[int],
        charges: Sequence[int] = (0,),
        multiplicities: Sequence[int] | None = None,
        encoding: str | SpeciesEncoding = SpeciesEncoding.JOINT,
    ) -> SpeciesTable:
        """Every combination of atomic numbers, total charges and multiplicities, sorted.

        Args:
            numbers: Atomic numbers covered.
            charges: Total charges covered.
            multiplicities: Spin multiplicities covered; ``None`` makes a spin-blind table
                (a structure's multiplicity is then not seen by the committee).
            encoding: How species become node attributes.

        Raises:
            ValueError: an empty list, an unknown atomic number, a multiplicity below 1.
        """
        if len(numbers) == 0:
            raise ValueError("a committee needs at least one element")
        if len(charges) == 0:
            raise ValueError("a committee needs at least one total charge (e.g. charges=(0,))")
        for z in numbers:
            if not 1 <= int(z) < len(chemical_symbols):
                raise ValueError(f"unknown atomic number {z}")
        if multiplicities is None:
            mults = [SPIN_BLIND]
        else:
            mults = sorted({int(m) for m in multiplicities})
            if not mults or mults[0] < 1:
                raise ValueError(f"multiplicities must be >= 1, got {list(multiplicities)}")
        keys = sorted({(int(z), int(q), m) for z in numbers for q in charges for m in mults})
        return cls(tuple(keys), SpeciesEncoding.parse(encoding))

    @classmethod
    def from_metadata(
        cls, species: Sequence[Sequence[int]], encoding: str = "joint"
    ) -> SpeciesTable:
        """Rebuild a saved table; ``(Z, charge)`` pairs of older files become spin-blind."""
        keys = []
        for entry in species:
            z, q, *rest = (int(v) for v in entry)
            keys.append((z, q, rest[0] if rest else SPIN_BLIND))
        return cls(tuple(keys), SpeciesEncoding.parse(encoding))

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.keys)

    @property
    def spin_aware(self) -> bool:
        """Whether the structure's multiplicity is part of a species."""
        return self.keys[0][2] != SPIN_BLIND

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """``(Z, charge)`` of every species, in node-type order."""
        return tuple((z, q) for z, q, _ in self.keys)

    @property
    def numbers(self) -> list[int]:
        """Atomic numbers covered, sorted."""
        return sorted({z for z, _, _ in self.keys})

    @property
    def charges(self) -> list[int]:
        """Total charges covered, sorted."""
        return sorted({q for _, q, _ in self.keys})

    @property
    def multiplicities(self) -> list[int]:
        """Multiplicities covered, sorted (``[]`` for a spin-blind table)."""
        return [] if not self.spin_aware else sorted({m for _, _, m in self.keys})

    def attributes(self) -> torch.Tensor:
        """Node attributes of every species, float64. Shape: ``[n_species, n_attributes]``.

        The identity for the joint encoding; element, charge and multiplicity one-hots side
        by side for the factorised one (a dimension with one value adds no column).
        """
        if self.encoding is SpeciesEncoding.JOINT:
            return torch.eye(len(self.keys), dtype=torch.float64)
        columns = []
        for dim in range(3):
            values = sorted({key[dim] for key in self.keys})
            if dim > 0 and len(values) == 1:
                continue
            block = torch.zeros(len(self.keys), len(values), dtype=torch.float64)
            for i, key in enumerate(self.keys):
                block[i, values.index(key[dim])] = 1.0
            columns.append(block)
        return torch.cat(columns, dim=1)

    def indices(self, atoms: Atoms, what: str = "structure") -> np.ndarray:
        """Species index of every atom of ``atoms``, shape ``(n_atoms,)``.

        Raises:
            StructureError: empty structure, non-finite coordinates, an impossible charge
                and multiplicity, or an element, charge or multiplicity the committee was
                not built for.
        """
        validate_structure(atoms, min_distance_A=None, allowed_numbers=self.numbers, what=what)
        q = total_charge(atoms)
        m = SPIN_BLIND
        if self.spin_aware:
            try:
                _, m = charge_and_multiplicity(atoms, q)
            except StructureError as exc:
                raise StructureError(f"{what}: {exc}") from None
        lookup = {key: i for i, key in enumerate(self.keys)}
        out = np.empty(len(atoms), dtype=np.int64)
        for k, z in enumerate(atoms.numbers.tolist()):
            idx = lookup.get((z, q, m))
            if idx is None:
                covered = ", ".join(_label(*key) for key in self.keys)
                spin = "" if m == SPIN_BLIND else f", multiplicity {m}"
                raise StructureError(
                    f"{what}: {chemical_symbols[z]} at total charge {q:+d}{spin} is not "
                    f"covered by this committee (covered: {covered})"
                )
            out[k] = idx
        return out
