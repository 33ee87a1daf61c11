"""HDF5 label store: the single source of truth for labels.

One file holds structures of any size and element mix (ragged arrays, no padding), their
labels when the oracle succeeded, the status and error text when it did not, and the
provenance of every record. See :mod:`pal_atoms._h5schema` for the layout.

Durability: every :meth:`LabelStore.append` flushes before it returns, and a record only
counts once its ``id`` is written (last). A process killed at any point leaves a file that
opens and holds every record whose ``append`` returned; a half-written record is ignored
on reading and cut off the next time the store is opened for writing.

Example:
    >>> with LabelStore("labels.h5") as store:           # doctest: +SKIP
    ...     store.append(atoms, status="ok", oracle="xtb", method="GFN2-xTB")
    ...     frames = store.read(status="ok")
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import h5py
import numpy as np
from ase import Atoms

from pal_atoms import __version__
from pal_atoms._h5schema import (
    DATASETS,
    FORMAT_NAME,
    LABEL_DTYPE,
    RECORD_DTYPE,
    RECORD_FIELDS,
    SCHEMA_VERSION,
    STATUS_CODES,
    STRESS_DTYPE,
    chunk_rows,
)
from pal_atoms._store_read import StoreReader
from pal_atoms.checks import charge_and_multiplicity
from pal_atoms.errors import InputError, StoreError, StoreFormatError
from pal_atoms.label import Label, LabelStatus, settings_hash

__all__ = ["LabelStore"]

logger = logging.getLogger(__name__)

Mode = Literal["a", "r"]


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


class LabelStore(StoreReader):
    """Append-only HDF5 store of oracle labels with provenance.

    Args:
        path: File to open; created (with parent folders) in mode ``"a"`` if missing.
        mode: ``"a"`` to read and append (one writer at a time; HDF5 locks the file),
            ``"r"`` to read only.
        fsync: Also ``fsync`` after every append, for durability against power loss (the
            default flush is enough against a killed process).

    Raises:
        StoreFormatError: the file is not a pal-atoms label store, or it is damaged.
        StoreError: the file cannot be opened (e.g. locked by a running writer).
    """

    def __init__(self, path: str | os.PathLike[str], mode: Mode = "a", *, fsync: bool = False):
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.fsync = fsync
        self._file = self._open()
        super().__init__(self._file)
        if mode == "a":
            self._repair_tail()

    # -- opening --------------------------------------------------------------------------
    def _open(self) -> h5py.File:
        exists = self.path.exists()
        if not exists and self.mode == "r":
            raise StoreError(f"label store {self.path} does not exist")
        if exists and self.path.is_dir():
            raise StoreFormatError(f"{self.path} is a directory, not a label store")
        if not exists:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._create()
        try:
            f = h5py.File(self.path, self.mode)
        except BlockingIOError as exc:
            raise StoreError(f"{self.path} is open for writing by another process") from exc
        except OSError as exc:
            text = str(exc)
            if "unable to lock" in text.lower():
                raise StoreError(f"{self.path} is open for writing by another process") from exc
            if self.path.stat().st_size == 0:
                raise StoreFormatError(f"{self.path} is empty, not a label store") from exc
            raise StoreFormatError(
                f"{self.path} is not a label store or is damaged (HDF5 could not open it)"
            ) from exc
        try:
            self._check_format(f)
        except BaseException:
            f.close()
            raise
        return f

    def _check_format(self, f: h5py.File) -> None:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT_NAME:
            raise StoreFormatError(f"{self.path} is an HDF5 file but not a pal-atoms label store")
        version = int(f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise StoreFormatError(
                f"{self.path} has schema version {version}; this pal-atoms reads up to "
                f"{SCHEMA_VERSION} (upgrade pal-atoms)"
            )
        missing = [p for p in (*DATASETS, "settings") if p not in f]
        if not missing and set(f["records"].dtype.names or ()) < set(RECORD_FIELDS):
            missing = ["record fields"]
        if missing:
            raise StoreFormatError(f"{self.path} is damaged: missing {', '.join(missing[:3])}")

    def _create(self) -> h5py.File:
        f = h5py.File(self.path, "w")
        f.attrs["format"] = FORMAT_NAME
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        f.attrs["created_by"] = f"pal-atoms {__version__}"
        for path, (dtype, trailing) in DATASETS.items():
            f.create_dataset(
                path,
                shape=(0, *trailing),
                maxshape=(None, *trailing),
                dtype=dtype,
                chunks=(chunk_rows(trailing, dtype), *trailing),
            )
        f["records"].attrs["status_codes"] = json.dumps(STATUS_CODES)
        f["records"].attrs["fields"] = json.dumps({k: v[2] for k, v in RECORD_FIELDS.items()})
        f.create_group("settings")
        f.flush()
        return f

    def _repair_tail(self) -> None:
        """Cut off what an interrupted append left behind (rows past the committed count)."""
        f, n = self._file, self._committed()
        cuts = dict.fromkeys(DATASETS, 0)
        cuts["records"] = n
        if n:
            last = f["records"][n - 1]
            cuts["atoms/positions"] = cuts["atoms/numbers"] = int(
                last["atom_start"] + last["n_atoms"]
            )
            cuts["text"] = int(last["text_start"] + last["text_len"])
            n_labels = int(f["records"].fields("label_index")[:n].max()) + 1
            cuts["labels"] = n_labels
            if n_labels:
                top = f["labels"][n_labels - 1]
                cuts["forces"] = int(top["force_start"]) + int(
                    f["records"][int(top["record"])]["n_atoms"]
                )
                cuts["stress"] = int(np.sum(f["stress"].fields("label")[:] < n_labels))
        repaired = [p for p, size in cuts.items() if f[p].shape[0] > size]
        for p in repaired:
            f[p].resize(cuts[p], axis=0)
        if repaired:
            logger.warning("%s: removed an interrupted append (%s)", self.path, ", ".join(repaired))
            f.flush()

    # -- context manager ----------------------------------------------------------------------
    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def append(
        self,
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
        flush: bool = True,
    ) -> str:
        """Append one record and return its id.

        Args:
            atoms: Geometry; for ``status="ok"`` its calculator's results must hold
                ``energy`` (eV) and ``forces`` (eV/Å, shape ``(n_atoms, 3)``), ``stress``
                (eV/Å³) optionally. ``atoms.info`` gives ``charge``/``multiplicity`` and
                any JSON-serialisable extras, which are kept.
            status: ``ok``, ``failed``, ``unconverged``, ``timeout`` or ``cancelled``.
            error: Error text (records that are not ok).
            oracle: Oracle name.
            method: Method string.
            settings: Oracle settings; hashed, and stored once per distinct hash.
            generator_id: Generator that proposed the geometry (-1: none).
            generator_step: That generator's step (-1: none).
            uncertainty: Committee ``max_force_std`` (eV/Å) that triggered the label.
            wall_time_s: Oracle wall time in s.
            record_id: Unique id; a new UUID4 hex by default.
            flush: Flush to the operating system before returning (keep ``True`` unless
                the caller flushes after a batch, as :meth:`append_many` does).

        Returns:
            The record id.

        Raises:
            InputError: an ``ok`` record without finite energy and forces of the right
                shape, or numbers attached to a record that is not ok.
        """
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only")
        status = LabelStatus(status)
        energy, forces, stress = self._numbers_of(atoms, status)
        charge, multiplicity = charge_and_multiplicity(atoms)
        rid = record_id or uuid.uuid4().hex
        f, n = self._file, self._committed()
        atom_start = self._extend("atoms/positions", np.asarray(atoms.positions, dtype=float))
        self._extend("atoms/numbers", atoms.numbers.astype(np.uint8))
        info = {
            k: v for k, v in ((k, _json_safe(v)) for k, v in atoms.info.items()) if v is not None
        }
        text = json.dumps({"error": error, "info": info}).encode()
        text_start = self._extend("text", np.frombuffer(text, dtype=np.uint8))
        label_index = -1
        if energy is not None and forces is not None:
            force_start = self._extend("forces", forces)
            label_index = self._extend(
                "labels", np.array([(n, energy, force_start)], dtype=LABEL_DTYPE)
            )
            if stress is not None:
                self._extend("stress", np.array([(label_index, stress)], dtype=STRESS_DTYPE))
        shash = ""
        if settings:
            shash = settings_hash(settings)
            if shash not in f["settings"].attrs:
                f["settings"].attrs[shash] = json.dumps(settings, sort_keys=True, default=str)
        row = np.zeros(1, dtype=RECORD_DTYPE)
        row[0] = (
            rid.encode(),
            STATUS_CODES[status.value],
            len(atoms),
            atom_start,
            np.asarray(atoms.cell.array, dtype=float),
            np.asarray(atoms.pbc, dtype=bool),
            charge,
            multiplicity,
            label_index,
            oracle.encode()[:32],
            method.encode()[:64],
            shash.encode(),
            generator_id,
            generator_step,
            np.nan if uncertainty is None else float(uncertainty),
            float(wall_time_s),
            time.time(),
            __version__.encode()[:16],
            text_start,
            len(text),
        )
        # The row goes in last and in one write: only then does the record count.
        self._extend("records", row)
        self._invalidate()
        if flush:
            self.flush()
        return rid

    def append_label(self, label: Label, **provenance: Any) -> str:
        """Append an oracle :class:`~pal_atoms.label.Label`; ``provenance`` as in :meth:`append`."""
        return self.append(
            label.to_atoms(),
            label.status,
            error=label.error,
            oracle=label.oracle,
            method=label.method,
            settings=label.settings,
            wall_time_s=label.wall_time_s,
            **provenance,
        )

    def append_many(self, frames: Iterable[Atoms], **provenance: Any) -> list[str]:
        """Append ``ok`` records for labelled frames with one flush at the end."""
        ids = [self.append(a, "ok", flush=False, **provenance) for a in frames]
        self.flush()
        return ids

    def flush(self) -> None:
        """Push everything appended so far to the operating system (and disk with fsync)."""
        self._file.flush()
        if self.fsync:
            handle = self._file.id.get_vfd_handle()
            if isinstance(handle, int):
                os.fsync(handle)

    # -- helpers ------------------------------------------------------------------------------
    def _extend(self, path: str, rows: np.ndarray) -> int:
        ds = self._file[path]
        start = ds.shape[0]
        ds.resize(start + rows.shape[0], axis=0)
        ds[start:] = rows
        return start

    @staticmethod
    def _numbers_of(
        atoms: Atoms, status: LabelStatus
    ) -> tuple[float | None, np.ndarray | None, np.ndarray | None]:
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

    def ids(self) -> Sequence[str]:
        """Ids of all committed records, in order."""
        return [str(v) for v in self.column("id")]
