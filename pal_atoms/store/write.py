"""Writing side of the label store: records checked and packed, then written in one batch.

A batch of records costs one resize and one write per dataset, however many records it
holds: the per-record cost of an HDF5 append is mostly the per-dataset calls (about 3 ms
for the seven datasets of one record), not the bytes. The controller of an MPI run stores
every label that arrived in one pass of its loop as one batch (``bench/store.py``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from ase import Atoms

from pal_atoms import __version__
from pal_atoms.core.checks import charge_and_multiplicity
from pal_atoms.core.errors import InputError
from pal_atoms.core.label import LabelStatus, check_states, settings_hash
from pal_atoms.store.schema import (
    LABEL_DTYPE,
    RECORD_DTYPE,
    SCHEMA_VERSION,
    STATE_DATASETS,
    STATE_DTYPE,
    STATUS_CODES,
    STRESS_DTYPE,
    create_datasets,
)

__all__ = ["PackedRecord", "pack", "write_batch"]


@dataclass(frozen=True, slots=True)
class PackedRecord:
    """One record checked and converted to the arrays it occupies in the file.

    ``row`` is the /records row with its offsets (``atom_start``, ``text_start``,
    ``label_index``) still unset: :func:`write_batch` fills them in.
    """

    row: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    text: np.ndarray
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    state_energies: np.ndarray | None
    state_forces: np.ndarray | None
    settings_hash: str
    settings_json: str


def _json_safe(value: Any) -> Any:
    """Value converted to something JSON can hold, or ``None`` if it cannot."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_json_safe(v) for v in value]
        return None if any(v is None for v in items) else items
    return None


def numbers_of(
    atoms: Atoms, status: LabelStatus
) -> tuple[float | None, np.ndarray | None, np.ndarray | None]:
    """Energy (eV), forces (eV/Å, ``(n_atoms, 3)``) and Voigt stress of an ``ok`` record.

    Raises:
        InputError: missing, misshapen or non-finite numbers on an ``ok`` record.
    """
    results: dict[str, Any] = dict(getattr(atoms.calc, "results", None) or {})
    if status is not LabelStatus.OK:
        return None, None, None
    if "energy" not in results or "forces" not in results:
        raise InputError("an ok record needs energy and forces in atoms.calc.results")
    energy = float(results["energy"])
    forces = np.asarray(results["forces"], dtype=float)
    if forces.shape != (len(atoms), 3):
        raise InputError(f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise InputError("refusing to store non-finite energy or forces as an ok label")
    stress = results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (3, 3):
            stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        stress = stress.reshape(6)
        if not np.all(np.isfinite(stress)):
            raise InputError("refusing to store a non-finite stress as an ok label")
    return energy, forces, stress


def states_of(atoms: Atoms) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-state energies ``(S,)`` and forces ``(S, n_atoms, 3)`` of an ``ok`` record, if any.

    Raises:
        InputError: one without the other, misshapen or non-finite.
    """
    results: dict[str, Any] = dict(getattr(atoms.calc, "results", None) or {})
    try:
        return check_states(results.get("state_energies"), results.get("state_forces"), len(atoms))
    except ValueError as exc:
        raise InputError(f"refusing to store per-state labels: {exc}") from None


def pack(
    atoms: Atoms,
    status: str | LabelStatus = "ok",
    *,
    error: str = "",
    oracle: str = "",
    method: str = "",
    settings: dict[str, Any] | None = None,
    generator_id: int = -1,
    generator_step: int = -1,
    uncertainty: float | None = None,
    wall_time_s: float = 0.0,
    record_id: str | None = None,
) -> PackedRecord:
    """Check one record and pack it (arguments as in :meth:`LabelStore.append`).

    Raises:
        InputError: an ``ok`` record without finite energy and forces of the right shape.
        ValueError: an unknown status.
    """
    status = LabelStatus(status)
    energy, forces, stress = numbers_of(atoms, status)
    state_energies, state_forces = states_of(atoms) if forces is not None else (None, None)
    charge, multiplicity = charge_and_multiplicity(atoms)
    info = {k: v for k, v in ((k, _json_safe(v)) for k, v in atoms.info.items()) if v is not None}
    text = json.dumps({"error": error, "info": info}).encode()
    shash = settings_hash(settings) if settings else ""
    row = np.zeros(1, dtype=RECORD_DTYPE)
    row[0] = (
        (record_id or uuid.uuid4().hex).encode(),
        STATUS_CODES[status.value],
        len(atoms),
        -1,  # atom_start: set by write_batch
        np.asarray(atoms.cell.array, dtype=float),
        np.asarray(atoms.pbc, dtype=bool),
        charge,
        multiplicity,
        -1,  # label_index: set by write_batch for ok records
        oracle.encode()[:32],
        method.encode()[:64],
        shash.encode(),
        generator_id,
        generator_step,
        np.nan if uncertainty is None else float(uncertainty),
        float(wall_time_s),
        0.0,  # timestamp: set by write_batch
        __version__.encode()[:16],
        -1,  # text_start: set by write_batch
        len(text),
    )
    return PackedRecord(
        row=row,
        positions=np.asarray(atoms.positions, dtype=float).reshape(-1, 3),
        numbers=atoms.numbers.astype(np.uint8),
        text=np.frombuffer(text, dtype=np.uint8),
        energy=energy,
        forces=forces,
        stress=stress,
        state_energies=state_energies,
        state_forces=state_forces,
        settings_hash=shash,
        settings_json=json.dumps(settings, sort_keys=True, default=str) if settings else "",
    )


def _extend(f: h5py.File, path: str, rows: np.ndarray) -> int:
    """Append ``rows`` to dataset ``path`` (one resize, one write); return the first new row."""
    ds = f[path]
    start = int(ds.shape[0])
    if len(rows):
        ds.resize(start + rows.shape[0], axis=0)
        ds[start:] = rows
    return start


def _starts(base: int, sizes: Sequence[int]) -> np.ndarray:
    """First row of each of consecutive blocks of ``sizes`` rows appended after row ``base``."""
    return base + np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64)]).astype(np.int64)


def _write_states(f: h5py.File, labelled: Sequence[tuple[int, PackedRecord]]) -> None:
    """Append the per-state rows of ``(label row, record)`` pairs that have states."""
    with_states = [(k, r) for k, r in labelled if r.state_energies is not None]
    if not with_states:
        return
    if "states" not in f:  # a version-1 file: its first per-state label makes it version 2
        create_datasets(f, STATE_DATASETS)
        f.attrs["schema_version"] = SCHEMA_VERSION
    energies = [np.asarray(r.state_energies) for _, r in with_states]
    forces = [np.asarray(r.state_forces).reshape(-1, 3) for _, r in with_states]
    table = np.zeros(len(with_states), dtype=STATE_DTYPE)
    table["label"] = [k for k, _ in with_states]
    table["n_states"] = [len(e) for e in energies]
    table["energy_start"] = _starts(
        _extend(f, "state_energies", np.concatenate(energies)), [len(e) for e in energies]
    )
    table["force_start"] = _starts(
        _extend(f, "state_forces", np.concatenate(forces)), [len(x) for x in forces]
    )
    _extend(f, "states", table)


def write_batch(f: h5py.File, records: Sequence[PackedRecord], n_committed: int) -> None:
    """Write packed records after the ``n_committed`` committed ones.

    Every dataset is extended once. The /records rows go in last, in one write: a process
    killed before that leaves rows that do not count and are cut off on the next open.
    """
    if not records:
        return
    rows = np.concatenate([r.row for r in records])
    rows["atom_start"] = _starts(
        _extend(f, "atoms/positions", np.concatenate([r.positions for r in records])),
        [len(r.numbers) for r in records],
    )
    _extend(f, "atoms/numbers", np.concatenate([r.numbers for r in records]))
    rows["text_start"] = _starts(
        _extend(f, "text", np.concatenate([r.text for r in records])),
        [len(r.text) for r in records],
    )
    ok = [i for i, r in enumerate(records) if r.forces is not None]
    if ok:
        force_starts = _starts(
            _extend(f, "forces", np.concatenate([records[i].forces for i in ok])),
            [len(records[i].numbers) for i in ok],
        )
        labels = np.zeros(len(ok), dtype=LABEL_DTYPE)
        labels["record"] = n_committed + np.asarray(ok)
        labels["energy"] = [records[i].energy for i in ok]
        labels["force_start"] = force_starts
        first = _extend(f, "labels", labels)
        rows["label_index"][ok] = first + np.arange(len(ok))
        stressed = [(first + j, records[i].stress) for j, i in enumerate(ok)]
        stress = np.array([(j, s) for j, s in stressed if s is not None], dtype=STRESS_DTYPE)
        _extend(f, "stress", stress)
        _write_states(f, [(first + j, records[i]) for j, i in enumerate(ok)])
    attrs = f["settings"].attrs
    for r in records:
        if r.settings_hash and r.settings_hash not in attrs:
            attrs[r.settings_hash] = r.settings_json
    rows["timestamp"] = time.time()
    # The rows go in last and in one write: only then do the records count.
    _extend(f, "records", rows)
