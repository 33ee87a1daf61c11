"""HDF5 store of generic samples and their labels (the sibling of :class:`LabelStore`).

Same rules as the atomistic store: append-only; every record keeps its status, error text
and provenance (generator, step, the committee's uncertainty when selected, oracle,
method, settings hash, wall time, attempts, time); only ``ok`` records carry outputs
(the others hold NaN there and are never read as data); every append flushes before it
returns. A sample's schema fixes its size, so a record is one row:

``/records``  structured rows ``(status, generator_id, generator_step, uncertainty,
wall_time_s, attempts, time_unix)``; ``/inputs`` ``(N, n_inputs)`` and ``/outputs``
``(N, n_outputs)`` float64 (flattened in schema order); ``/text`` JSON per record
(``error``, ``oracle``, ``method``, ``settings_hash``); ``/settings/<hash>`` the settings.
The attribute ``committed`` counts finished records and is written last: rows past it
(a process killed mid-append) are ignored on reading and cut off when the store is next
opened for writing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from pal_atoms import __version__
from pal_atoms.core.errors import StoreError, StoreFormatError
from pal_atoms.core.label import LabelStatus
from pal_atoms.core.samples import Sample, SampleLabel, Schema
from pal_atoms.store.h5file import format_of, open_existing
from pal_atoms.store.schema import STATUS_CODES, STATUS_NAMES

__all__ = ["SampleStore"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "pal-atoms sample store"
SCHEMA_VERSION = 1
_ROW = np.dtype(
    [
        ("status", "u1"),
        ("generator_id", "i4"),
        ("generator_step", "i8"),
        ("uncertainty", "f8"),
        ("wall_time_s", "f8"),
        ("attempts", "i2"),
        ("time_unix", "f8"),
    ]
)
_ARRAYS = ("records", "inputs", "outputs", "text")
_FIELDS: tuple[str, ...] = tuple(_ROW.names or ())


class SampleStore:
    """Append-only HDF5 store of :class:`~pal_atoms.core.samples.Sample` labels.

    Args:
        path: File; created (with parent folders) in mode ``"a"`` if missing.
        schema: The samples' schema; required to create a store, checked against the
            file's otherwise (``None``: take the file's).
        mode: ``"a"`` (read and append, one writer) or ``"r"``.

    Raises:
        StoreFormatError: not a sample store, damaged, or a different schema.
        StoreError: missing (mode ``"r"``, or no schema to create it), or locked.
    """

    def __init__(self, path: str | os.PathLike[str], schema: Schema | None = None, mode: str = "a"):
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        f = open_existing(self.path, mode, kind="sample store")
        if f is None:
            if schema is None:
                raise StoreError(f"sample store {self.path} does not exist and has no schema")
            f = self._create(schema)
        self._file = f
        try:
            self.schema = self._check(schema)
            if mode == "a":
                self._repair_tail()
        except BaseException:
            f.close()
            raise

    # -- opening ----------------------------------------------------------------------------
    def _create(self, schema: Schema) -> h5py.File:
        f = h5py.File(self.path, "w")
        f.attrs.update(
            format=FORMAT_NAME,
            schema_version=SCHEMA_VERSION,
            schema=json.dumps(schema.as_dict()),
            status_codes=json.dumps(STATUS_CODES),
            created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            created_by=f"pal-atoms {__version__}",
            committed=0,
        )
        chunk = 256
        f.create_dataset("records", (0,), dtype=_ROW, maxshape=(None,), chunks=(chunk,))
        for name, n in (("inputs", schema.n_inputs), ("outputs", schema.n_outputs)):
            f.create_dataset(name, (0, n), dtype="f8", maxshape=(None, n), chunks=(chunk, n))
        f.create_dataset("text", (0,), dtype=h5py.string_dtype(), maxshape=(None,), chunks=(chunk,))
        f.create_group("settings")
        f.flush()
        return f

    def _check(self, schema: Schema | None) -> Schema:
        f = self._file
        if format_of(f) != FORMAT_NAME:
            raise StoreFormatError(f"{self.path} is an HDF5 file but not a pal-atoms sample store")
        if int(f.attrs.get("schema_version", -1)) > SCHEMA_VERSION:
            raise StoreFormatError(f"{self.path} is newer than this pal-atoms (upgrade it)")
        missing = [p for p in (*_ARRAYS, "settings") if p not in f]
        if missing:
            raise StoreFormatError(f"{self.path} is damaged: missing {', '.join(missing)}")
        stored = Schema.from_dict(json.loads(f.attrs["schema"]))
        if schema is not None and schema != stored:
            raise StoreFormatError(
                f"{self.path} holds samples of schema {stored.as_dict()}, not {schema.as_dict()}"
            )
        return stored

    def _committed(self) -> int:
        return int(self._file.attrs["committed"])

    def _repair_tail(self) -> None:
        n = self._committed()
        cut = [p for p in _ARRAYS if self._file[p].shape[0] > n]
        for p in cut:
            self._file[p].resize(n, axis=0)
        if cut:
            logger.warning("%s: removed an interrupted append (%s)", self.path, ", ".join(cut))
            self._file.flush()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self._committed()

    # -- writing ------------------------------------------------------------------------------
    def append_labels(self, items: Iterable[tuple[SampleLabel, Mapping[str, Any]]]) -> int:
        """Store labels with provenance in one flushed append; return how many.

        Provenance: ``generator_id``, ``generator_step``, ``uncertainty``.
        """
        entries = [
            (
                label.sample,
                {
                    **prov,
                    "status": label.status,
                    "values": label.values,
                    "error": label.error,
                    "oracle": label.oracle,
                    "method": label.method,
                    "settings": label.settings,
                    "settings_hash": label.settings_hash,
                    "wall_time_s": label.wall_time_s,
                    "attempts": label.attempts,
                },
            )
            for label, prov in items
        ]
        return self.append_batch(entries)

    def append_batch(self, entries: Iterable[tuple[Sample, Mapping[str, Any]]]) -> int:
        """Store samples with their fields in one flushed append; return how many.

        Fields: ``status``, ``values`` (``ok`` only), ``error``, and the provenance.

        Raises:
            StoreError: read-only store.
            ValueError: an ``ok`` entry without values, or values on another status.
        """
        if self.mode == "r":
            raise StoreError(f"{self.path} is open read-only")
        entries = list(entries)
        if not entries:
            return 0
        schema = self.schema
        n_out = schema.n_outputs
        rows = np.zeros(len(entries), dtype=_ROW)
        inputs = np.empty((len(entries), schema.n_inputs))
        outputs = np.full((len(entries), n_out), np.nan)
        text = []
        for i, (sample, fields) in enumerate(entries):
            status = LabelStatus(fields.get("status", LabelStatus.OK))
            values = fields.get("values")
            if (status is LabelStatus.OK) != (values is not None):
                raise ValueError(
                    f"a {status.value} record must {'' if values is None else 'not '}carry values"
                )
            inputs[i] = schema.flat_inputs(sample)
            if values is not None:
                outputs[i] = schema.flat_outputs(values)
            rows[i] = (
                STATUS_CODES[status.value],
                int(fields.get("generator_id", -1)),
                int(fields.get("generator_step", -1)),
                float(fields.get("uncertainty", np.nan)),
                float(fields.get("wall_time_s", 0.0)),
                int(fields.get("attempts", 1)),
                time.time(),
            )
            settings_hash = str(fields.get("settings_hash", ""))
            if settings_hash and settings_hash not in self._file["settings"]:
                self._file["settings"].attrs[settings_hash] = json.dumps(
                    fields.get("settings", {}), default=str
                )
            text.append(
                json.dumps(
                    {
                        "error": str(fields.get("error", "")),
                        "oracle": str(fields.get("oracle", "")),
                        "method": str(fields.get("method", "")),
                        "settings_hash": settings_hash,
                    }
                )
            )
        f, n = self._file, self._committed()
        for name, data in (("records", rows), ("inputs", inputs), ("outputs", outputs)):
            f[name].resize(n + len(entries), axis=0)
            f[name][n:] = data
        f["text"].resize(n + len(entries), axis=0)
        f["text"][n:] = text
        f.flush()
        f.attrs["committed"] = n + len(entries)  # last: the records count from here
        f.flush()
        return len(entries)

    # -- reading ------------------------------------------------------------------------------
    def statuses(self) -> np.ndarray:
        """Status of every record as strings, shape ``(len(store),)``."""
        codes = self._file["records"].fields("status")[: len(self)]
        return np.array([STATUS_NAMES[int(c)] for c in codes], dtype=object)

    def counts(self) -> dict[str, int]:
        """Number of records per status."""
        values, counts = np.unique(self.statuses(), return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts, strict=True)}

    def column(self, name: str) -> np.ndarray:
        """A provenance column, length ``len(store)``.

        A ``records`` field, or ``error``, ``oracle``, ``method``, ``settings_hash``.
        """
        n = len(self)
        if name in _FIELDS:
            return np.asarray(self._file["records"].fields(name)[:n])
        texts = [json.loads(t) for t in self._file["text"].asstr()[:n]]
        if texts and name not in texts[0]:
            raise ValueError(f"unknown column {name!r}")
        return np.array([t[name] for t in texts], dtype=object)

    def settings(self, settings_hash: str) -> dict[str, Any]:
        """The oracle settings stored under ``settings_hash``."""
        return dict(json.loads(self._file["settings"].attrs[settings_hash]))

    def read(self, status: str | None = "ok") -> list[Sample]:
        """Samples of one status (``None``: all), oldest first.

        ``ok`` samples carry their outputs next to the inputs (``sample["y"]``); every
        sample's ``info`` holds ``status`` and its provenance.
        """
        n = len(self)
        keep = np.arange(n) if status is None else np.flatnonzero(self.statuses() == status)
        if not len(keep):
            return []
        f = self._file
        inputs = f["inputs"][:n][keep]
        outputs = f["outputs"][:n][keep]
        rows = f["records"][:n][keep]
        texts = f["text"].asstr()[:n]
        out = []
        for i, idx in enumerate(keep):
            sample = Sample(self.schema.unflat("inputs", inputs[i]))
            code = int(rows[i]["status"])
            if code == STATUS_CODES["ok"]:
                sample.update(self.schema.unflat("outputs", outputs[i]))
            sample.info = {
                "status": STATUS_NAMES[code],
                **{k: rows[i][k].item() for k in _FIELDS if k != "status"},
                **json.loads(texts[idx]),
            }
            out.append(sample)
        return out
