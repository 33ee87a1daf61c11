"""Layout of the HDF5 label store (schema version 2).

Kept apart from :mod:`pal_atoms.store` so the layout can be read (and documented) in one
place. All per-atom data is *ragged*: structures of any size share concatenated arrays,
addressed by per-record offsets, so no padding is stored. Per-record fields live in one
compound table, so an append writes one row there.

::

    /                      attrs: format, schema_version, created_utc, created_by
    /records               (n_records,) compound, fields in RECORD_FIELDS; a row counts
                           (is committed) once its ``id`` field is non-empty
    /atoms/positions       (n_atoms_total, 3) float64, Å
    /atoms/numbers         (n_atoms_total,) uint8, atomic numbers
    /labels                (n_ok,) compound: record (row in /records), energy (eV),
                           force_start (first row in /forces)
    /forces                (n_force_rows, 3) float64, eV/Å (rows = atoms of ok records)
    /stress                (n_stress,) compound: label (row in /labels), value (6,) eV/Å³,
                           Voigt order (xx, yy, zz, yz, xz, xy)
    /states                (n_state_labels,) compound: label (row in /labels), n_states,
                           energy_start (first row in /state_energies), force_start (first
                           row in /state_forces); only labels of several electronic states
    /state_energies        (n_state_rows,) float64, eV: S0..S(n-1) of each such label
    /state_forces          (n_state_force_rows, 3) float64, eV/Å: n_states x n_atoms rows
                           per label, state-major
    /text                  (n_bytes,) uint8, UTF-8 JSON per record ({"error": ..., "info": {...}})
    /settings              group; attrs: settings hash -> JSON of the oracle settings

Records that are not ``ok`` have ``label_index = -1`` and no rows in /labels or /stress:
a failed label has no energy or forces at all, not NaN or zero.

Version history: 1 had no per-state tables. A version-1 file opens and reads (its labels
have one state); appending a per-state label to it adds the three tables and marks the
file version 2, and nothing else changes.
"""

from __future__ import annotations

from typing import Final

import h5py
import numpy as np

FORMAT_NAME: Final = "pal-atoms label store"
SCHEMA_VERSION: Final = 2

#: Status codes stored in /records/status (the mapping is also written as an attribute).
STATUS_CODES: Final[dict[str, int]] = {
    "ok": 0,
    "failed": 1,
    "unconverged": 2,
    "timeout": 3,
    "cancelled": 4,
}
STATUS_NAMES: Final[dict[int, str]] = {v: k for k, v in STATUS_CODES.items()}

#: Per-record fields: name -> (dtype, trailing shape, description).
RECORD_FIELDS: Final[dict[str, tuple[str, tuple[int, ...], str]]] = {
    "id": ("S32", (), "unique record id (UUID4 hex); empty while a write is incomplete"),
    "status": ("u1", (), "status code, see the status_codes attribute"),
    "n_atoms": ("i4", (), "number of atoms"),
    "atom_start": ("i8", (), "first row of this record in /atoms"),
    "cell": ("f8", (3, 3), "cell vectors in Å (rows)"),
    "pbc": ("?", (3,), "periodic boundary conditions"),
    "charge": ("i4", (), "total charge in e"),
    "multiplicity": ("i4", (), "spin multiplicity 2S+1"),
    "label_index": ("i8", (), "row in /labels, -1 for records that are not ok"),
    "oracle": ("S32", (), "oracle name"),
    "method": ("S64", (), "method, e.g. GFN2-xTB or PBE/def2-SVP"),
    "settings_hash": ("S16", (), "hash of the oracle settings (JSON in /settings)"),
    "generator_id": ("i4", (), "generator that proposed the structure, -1 if none"),
    "generator_step": ("i8", (), "generator step, -1 if none"),
    "uncertainty": ("f8", (), "committee max_force_std (eV/Å) that triggered it; NaN: none"),
    "wall_time_s": ("f8", (), "oracle wall time in s"),
    "timestamp": ("f8", (), "UNIX time the record was stored"),
    "version": ("S16", (), "pal-atoms version that stored it"),
    "text_start": ("i8", (), "first byte of this record's JSON in /text"),
    "text_len": ("i4", (), "length of this record's JSON in bytes"),
}
RECORD_DTYPE: Final = np.dtype([(k, dt, shape) for k, (dt, shape, _) in RECORD_FIELDS.items()])
LABEL_DTYPE: Final = np.dtype([("record", "i8"), ("energy", "f8"), ("force_start", "i8")])
STRESS_DTYPE: Final = np.dtype([("label", "i8"), ("value", "f8", (6,))])
STATE_DTYPE: Final = np.dtype(
    [("label", "i8"), ("n_states", "i4"), ("energy_start", "i8"), ("force_start", "i8")]
)

#: Appendable datasets: path -> (dtype, trailing shape).
DATASETS: Final[dict[str, tuple[np.dtype[np.void] | str, tuple[int, ...]]]] = {
    "records": (RECORD_DTYPE, ()),
    "atoms/positions": ("f8", (3,)),
    "atoms/numbers": ("u1", ()),
    "labels": (LABEL_DTYPE, ()),
    "forces": ("f8", (3,)),
    "stress": (STRESS_DTYPE, ()),
    "text": ("u1", ()),
}

#: Datasets added in schema version 2 (absent from version-1 files until a state label).
STATE_DATASETS: Final[dict[str, tuple[np.dtype[np.void] | str, tuple[int, ...]]]] = {
    "states": (STATE_DTYPE, ()),
    "state_energies": ("f8", ()),
    "state_forces": ("f8", (3,)),
}


def chunk_rows(trailing: tuple[int, ...], dtype: object) -> int:
    """Rows per HDF5 chunk: about 64 kB per chunk, at least 64 rows."""
    itemsize = np.dtype(dtype).itemsize * int(np.prod(trailing, dtype=np.int64))  # type: ignore[call-overload]
    return max(64, 65536 // max(1, itemsize))


def create_datasets(
    f: h5py.File, specs: dict[str, tuple[np.dtype[np.void] | str, tuple[int, ...]]]
) -> None:
    """Create the empty appendable datasets ``specs`` (path -> dtype, trailing shape)."""
    for path, (dtype, trailing) in specs.items():
        f.create_dataset(
            path,
            shape=(0, *trailing),
            maxshape=(None, *trailing),
            dtype=dtype,
            chunks=(chunk_rows(trailing, dtype), *trailing),
        )
