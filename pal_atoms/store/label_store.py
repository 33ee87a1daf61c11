"""HDF5 label store: the single source of truth for labels.

One file holds structures of any size and element mix (ragged arrays, no padding), their
labels when the oracle succeeded, the status and error text when it did not, and the
provenance of every record. See :mod:`pal_atoms.store.schema` for the layout.

Durability: every append (one record, or a batch with :meth:`LabelStore.append_batch`)
flushes before it returns, and a record only counts once its ``id`` is written (last). A
process killed at any point leaves a file that opens and holds every record whose append
returned; a half-written record is ignored on reading and cut off the next time the store
is opened for writing.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import h5py
import numpy as np
from ase import Atoms

from pal_atoms import __version__
from pal_atoms.core.errors import StoreError, StoreFormatError
from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.store.h5file import format_of, open_existing
from pal_atoms.store.read import StoreReader
from pal_atoms.store.schema import (
    DATASETS,
    FORMAT_NAME,
    RECORD_FIELDS,
    SCHEMA_VERSION,
    STATE_DATASETS,
    STATUS_CODES,
    create_datasets,
)
from pal_atoms.store.write import PackedRecord, pack, write_batch

__all__ = ["LabelStore"]

logger = logging.getLogger(__name__)

Mode = Literal["a", "r"]


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
        f = open_existing(self.path, self.mode, kind="label store")
        if f is None:
            return self._create()
        try:
            self._check_format(f)
        except BaseException:
            f.close()
            raise
        return f

    def _check_format(self, f: h5py.File) -> None:
        if format_of(f) != FORMAT_NAME:
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
        create_datasets(f, {**DATASETS, **STATE_DATASETS})
        f["records"].attrs["status_codes"] = json.dumps(STATUS_CODES)
        f["records"].attrs["fields"] = json.dumps({k: v[2] for k, v in RECORD_FIELDS.items()})
        f.create_group("settings")
        f.flush()
        return f

    def _repair_tail(self) -> None:
        """Cut off what an interrupted append left behind (rows past the committed count)."""
        f, n = self._file, self._committed()
        cuts = dict.fromkeys([*DATASETS, *(p for p in STATE_DATASETS if p in f)], 0)
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
                if "states" in f:
                    states = f["states"][:]
                    kept = states[states["label"] < n_labels]
                    cuts["states"] = len(kept)
                    if len(kept):
                        top_state = kept[-1]
                        na = int(
                            f["records"][int(f["labels"][int(top_state["label"])]["record"])][
                                "n_atoms"
                            ]
                        )
                        ns = int(top_state["n_states"])
                        cuts["state_energies"] = int(top_state["energy_start"]) + ns
                        cuts["state_forces"] = int(top_state["force_start"]) + ns * na
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
                (eV/Å³) optionally, and for excited-state labels ``state_energies`` (eV,
                ``(S,)``) with ``state_forces`` (eV/Å, ``(S, n_atoms, 3)``).
                ``atoms.info`` gives ``charge``/``multiplicity`` and any
                JSON-serialisable extras, which are kept.
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
                the caller flushes after a batch).

        Returns:
            The record id.

        Raises:
            InputError: an ``ok`` record without finite energy and forces of the right
                shape, or numbers attached to a record that is not ok.
        """
        record = pack(
            atoms,
            status,
            error=error,
            oracle=oracle,
            method=method,
            settings=settings,
            generator_id=generator_id,
            generator_step=generator_step,
            uncertainty=uncertainty,
            wall_time_s=wall_time_s,
            record_id=record_id,
        )
        (rid,) = self._write([record], flush=flush)
        return rid

    def append_batch(self, entries: Iterable[tuple[Atoms, Mapping[str, Any]]]) -> list[str]:
        """Append many records at once: one write per dataset and one flush for all of them.

        Much cheaper per record than :meth:`append` (``bench/store.py``). All entries are
        checked before anything is written, so one bad entry stores none of them.

        Args:
            entries: ``(atoms, keywords)`` pairs; ``keywords`` are those of :meth:`append`
                (``status`` included, ``flush`` excluded).

        Returns:
            The record ids, in order.

        Raises:
            InputError: an entry is not a valid record (nothing is written).
        """
        return self._write([pack(atoms, **kw) for atoms, kw in entries])

    def append_label(self, label: Label, **provenance: Any) -> str:
        """Append an oracle label (``provenance`` as in :meth:`append`)."""
        (rid,) = self.append_labels([(label, provenance)])
        return rid

    def append_labels(self, items: Iterable[tuple[Label, Mapping[str, Any]]]) -> list[str]:
        """Append ``(label, provenance)`` pairs in one batch (see :meth:`append_batch`)."""
        return self.append_batch(
            (
                label.to_atoms(),
                {
                    "status": label.status,
                    "error": label.error,
                    "oracle": label.oracle,
                    "method": label.method,
                    "settings": label.settings,
                    "wall_time_s": label.wall_time_s,
                    **provenance,
                },
            )
            for label, provenance in items
        )

    def append_many(self, frames: Iterable[Atoms], **provenance: Any) -> list[str]:
        """Append ``ok`` records for labelled frames in one batch (see :meth:`append_batch`)."""
        return self.append_batch((a, {"status": "ok", **provenance}) for a in frames)

    def flush(self) -> None:
        """Push everything appended so far to the operating system (and disk with fsync)."""
        self._file.flush()
        if self.fsync:
            handle = self._file.id.get_vfd_handle()
            if isinstance(handle, int):
                os.fsync(handle)

    def _write(self, records: list[PackedRecord], *, flush: bool = True) -> list[str]:
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only")
        write_batch(self._file, records, self._committed())
        self._invalidate()
        if flush and records:
            self.flush()
        return [r.row["id"][0].decode() for r in records]

    def ids(self) -> Sequence[str]:
        """Ids of all committed records, in order."""
        return [str(v) for v in self.column("id")]
