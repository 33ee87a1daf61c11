"""Reading side of the label store: committed-record count, filters, ``ase.Atoms`` out."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import h5py
import numpy as np
from ase import Atoms

from pal_atoms.core.label import LabelCalculator, LabelStatus
from pal_atoms.store.schema import RECORD_FIELDS, STATE_DTYPE, STATUS_CODES, STATUS_NAMES

__all__ = ["StoreReader"]

_STRING_FIELDS = frozenset(k for k, (dt, _, _) in RECORD_FIELDS.items() if dt.startswith("S"))


class StoreReader:
    """Read access to an open label-store file (base of :class:`~pal_atoms.store.LabelStore`)."""

    def __init__(self, file: h5py.File):
        self._file = file
        self._n_cache: int | None = None

    def _invalidate(self) -> None:
        self._n_cache = None

    def _committed(self) -> int:
        """Number of committed records: rows of /records, minus a torn last row."""
        if self._n_cache is None:
            records = self._file["records"]
            n = records.shape[0]
            # A row whose id is still empty was cut off mid-write by a killed process.
            while n and not records[n - 1]["id"]:
                n -= 1
            self._n_cache = n
        return self._n_cache

    def __len__(self) -> int:
        return self._committed()

    def _rows(self) -> np.ndarray:
        return self._file["records"][: self._committed()]

    def column(self, name: str) -> np.ndarray:
        """One per-record field as an array of length ``len(store)`` (strings decoded)."""
        if name not in RECORD_FIELDS:
            raise ValueError(f"unknown column {name!r}; columns: {', '.join(RECORD_FIELDS)}")
        values = self._file["records"].fields(name)[: self._committed()]
        if name in _STRING_FIELDS:
            return np.array([v.decode() for v in values], dtype=object)
        return np.asarray(values)

    def statuses(self) -> np.ndarray:
        """Status of every record as strings, shape ``(len(store),)``."""
        codes = self.column("status")
        return np.array([STATUS_NAMES[int(c)] for c in codes], dtype=object)

    def counts(self) -> dict[str, int]:
        """Number of records per status."""
        counted = Counter(self.statuses().tolist())
        return {name: counted.get(name, 0) for name in STATUS_CODES}

    def settings(self, settings_hash: str) -> dict[str, Any]:
        """Oracle settings stored under ``settings_hash``."""
        text = self._file["settings"].attrs[settings_hash]
        return dict(json.loads(text))

    def select(
        self,
        *,
        status: str | LabelStatus | Iterable[str | LabelStatus] | None = None,
        oracle: str | None = None,
        generator_id: int | None = None,
        start: int = 0,
    ) -> np.ndarray:
        """Indices of the records matching every given filter, in order.

        Args:
            status: One status or several; ``None`` for any.
            oracle: Oracle name; ``None`` for any.
            generator_id: Generator id; ``None`` for any.
            start: Only records with index ``>= start`` (e.g. the ones added since).
        """
        n = self._committed()
        mask = np.zeros(n, dtype=bool)
        mask[start:] = True
        if status is not None:
            wanted = [status] if isinstance(status, (str, LabelStatus)) else list(status)
            codes = [STATUS_CODES[LabelStatus(s).value] for s in wanted]
            mask &= np.isin(self.column("status"), codes)
        if oracle is not None:
            mask &= self.column("oracle") == oracle
        if generator_id is not None:
            mask &= self.column("generator_id") == generator_id
        return np.flatnonzero(mask)

    def read(
        self,
        *,
        status: str | LabelStatus | Iterable[str | LabelStatus] | None = "ok",
        oracle: str | None = None,
        generator_id: int | None = None,
        start: int = 0,
        indices: Iterable[int] | None = None,
    ) -> list[Atoms]:
        """Records as ``ase.Atoms``; ``ok`` ones carry their label in a SinglePointCalculator.

        Filters are those of :meth:`select` (default: ``ok`` records only); ``indices``
        instead picks records directly. Provenance goes into ``atoms.info``: ``record_id``,
        ``record_index``, ``status``, ``error`` (records that are not ok), ``oracle``,
        ``method``, ``settings_hash``, ``generator_id``, ``generator_step``,
        ``uncertainty`` (eV/Å, absent if none), ``oracle_wall_time_s``, ``timestamp``,
        ``pal_atoms_version``, ``charge``, ``multiplicity``, plus the extras stored with it.
        Labels of several electronic states also hold ``state_energies`` (eV, ``(S,)``) and
        ``state_forces`` (eV/Å, ``(S, n_atoms, 3)``) in ``atoms.calc.results``.
        """
        if indices is None:
            idx = self.select(status=status, oracle=oracle, generator_id=generator_id, start=start)
        else:
            idx = np.asarray(list(indices), dtype=np.int64)
            n = self._committed()
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"record index out of range for a store of {n} records")
            idx = np.where(idx < 0, idx + n, idx)
        if idx.size == 0:
            return []
        f = self._file
        rec = self._rows()[idx]
        positions, numbers, text = f["atoms/positions"], f["atoms/numbers"], f["text"]
        labels, forces = f["labels"], f["forces"]
        stress = f["stress"][:]
        stress_of = dict(zip(stress["label"].tolist(), stress["value"], strict=True))
        states = f["states"][:] if "states" in f else np.zeros(0, dtype=STATE_DTYPE)
        states_of = {int(row["label"]): row for row in states}
        out: list[Atoms] = []
        for j, i in enumerate(idx.tolist()):
            a0, na = int(rec["atom_start"][j]), int(rec["n_atoms"][j])
            t0, tl = int(rec["text_start"][j]), int(rec["text_len"][j])
            extra = json.loads(bytes(text[t0 : t0 + tl]).decode()) if tl else {}
            atoms = Atoms(
                numbers=numbers[a0 : a0 + na],
                positions=positions[a0 : a0 + na],
                cell=rec["cell"][j],
                pbc=rec["pbc"][j],
            )
            atoms.info.update(extra.get("info", {}))
            status_name = STATUS_NAMES[int(rec["status"][j])]
            unc = float(rec["uncertainty"][j])
            atoms.info.update(
                record_id=rec["id"][j].decode(),
                record_index=i,
                status=status_name,
                oracle=rec["oracle"][j].decode(),
                method=rec["method"][j].decode(),
                settings_hash=rec["settings_hash"][j].decode(),
                generator_id=int(rec["generator_id"][j]),
                generator_step=int(rec["generator_step"][j]),
                oracle_wall_time_s=float(rec["wall_time_s"][j]),
                timestamp=float(rec["timestamp"][j]),
                pal_atoms_version=rec["version"][j].decode(),
                charge=int(rec["charge"][j]),
                multiplicity=int(rec["multiplicity"][j]),
            )
            if np.isfinite(unc):
                atoms.info["uncertainty"] = unc
            else:
                atoms.info.pop("uncertainty", None)
            if status_name != "ok":
                atoms.info["error"] = extra.get("error", "")
            k = int(rec["label_index"][j])
            if k >= 0:
                lab = labels[k]
                f0 = int(lab["force_start"])
                results: dict[str, Any] = {
                    "energy": float(lab["energy"]),
                    "free_energy": float(lab["energy"]),
                    "forces": forces[f0 : f0 + na],
                }
                if k in stress_of:
                    results["stress"] = stress_of[k]
                if k in states_of:
                    row = states_of[k]
                    ns, e0, s0 = (
                        int(row["n_states"]),
                        int(row["energy_start"]),
                        int(row["force_start"]),
                    )
                    results["state_energies"] = f["state_energies"][e0 : e0 + ns]
                    results["state_forces"] = f["state_forces"][s0 : s0 + ns * na].reshape(
                        ns, na, 3
                    )
                atoms.calc = LabelCalculator(atoms, **results)
            out.append(atoms)
        return out
