"""Flat float64 buffers for generic samples between MPI ranks (the atomistic codec's twin).

Every record has the size its schema fixes (``n_in`` input and ``n_out`` output values)::

    structure   [generator_id, step, inputs (n_in)]                 2 + n_in
    prediction  [verdict, uncertainty, mean (n_out), std (n_out)]   2 + 2 n_out
    label       [inputs (n_in), outputs (n_out)]                    n_in + n_out

:class:`SampleCodec` has the functions of :mod:`pal_atoms.workflow.mpi.codec` as methods,
so the controller and the ranks move samples exactly as they move structures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pal_atoms.core.label import LabelStatus
from pal_atoms.core.protocols import Verdict
from pal_atoms.core.samples import Sample, SampleLabel, Schema

__all__ = ["SampleCodec"]

_CODES = {v: v.severity for v in Verdict}
_VERDICTS = {c: v for v, c in _CODES.items()}


class SampleCodec:
    """Encode and decode samples, predictions and labels of one schema."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.n_in, self.n_out = schema.n_inputs, schema.n_outputs

    @staticmethod
    def _records(buf: np.ndarray, size: int, what: str) -> list[np.ndarray]:
        if buf.size % size:
            raise ValueError(f"truncated {what} record: {buf.size} values, records of {size}")
        return [buf[i : i + size] for i in range(0, buf.size, size)]

    # -- structures (samples) ---------------------------------------------------------
    def encode_structures(self, items: Sequence[tuple[Sample, int, int]]) -> np.ndarray:
        """Concatenated structure records of ``(sample, generator_id, step)``."""
        parts = [np.concatenate([[g, s], self.schema.flat_inputs(x)]) for x, g, s in items]
        return np.concatenate(parts) if parts else np.empty(0)

    def structure_records(self, buf: np.ndarray) -> list[np.ndarray]:
        """Views of the structure records in ``buf``."""
        return self._records(buf, 2 + self.n_in, "sample")

    def read_structure(self, record: np.ndarray) -> tuple[Sample, int, int]:
        """``(sample, generator_id, step)`` of one record."""
        sample = Sample(self.schema.unflat("inputs", np.array(record[2:])))
        return sample, int(record[0]), int(record[1])

    def decode_structures(self, buf: np.ndarray) -> list[tuple[Sample, int, int]]:
        """Inverse of :meth:`encode_structures`."""
        return [self.read_structure(r) for r in self.structure_records(buf)]

    # -- predictions --------------------------------------------------------------------
    def encode_predictions(
        self, results: Sequence[Mapping[str, Any]], verdicts: Sequence[Verdict | None]
    ) -> np.ndarray:
        """Concatenated prediction records (``None`` verdict: not judged yet, code -1)."""
        parts = [
            np.concatenate(
                [
                    [-1 if v is None else _CODES[v], r["uncertainty"]],
                    self.schema.flat_outputs(r["mean"]),
                    self.schema.flat_outputs(r["std"]),
                ]
            )
            for r, v in zip(results, verdicts, strict=True)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def prediction_records(self, buf: np.ndarray) -> list[np.ndarray]:
        """Views of the prediction records in ``buf``."""
        return self._records(buf, 2 + 2 * self.n_out, "prediction")

    def read_prediction(self, record: np.ndarray) -> tuple[dict[str, Any], Verdict | None]:
        """Results and verdict (``None``: not judged yet) of one record."""
        n = self.n_out
        results = {
            "uncertainty": float(record[1]),
            "mean": self.schema.unflat("outputs", np.array(record[2 : 2 + n])),
            "std": self.schema.unflat("outputs", np.array(record[2 + n : 2 + 2 * n])),
        }
        code = int(record[0])
        return results, None if code < 0 else _VERDICTS[code]

    def decode_predictions(self, buf: np.ndarray) -> list[tuple[dict[str, Any], Verdict | None]]:
        """Inverse of :meth:`encode_predictions`."""
        return [self.read_prediction(r) for r in self.prediction_records(buf)]

    @staticmethod
    def set_verdict(record: np.ndarray, verdict: Verdict) -> np.ndarray:
        """Write ``verdict`` into a prediction record (in place) and return it."""
        record[0] = _CODES[verdict]
        return record

    # -- labels -------------------------------------------------------------------------
    def encode_labels(self, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Training items (samples with their outputs) as label records."""
        parts = [
            np.concatenate([self.schema.flat_inputs(s), self.schema.flat_outputs(s)]) for s in items
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def decode_labels(self, buf: np.ndarray) -> list[Sample]:
        """Inverse of :meth:`encode_labels`."""
        out = []
        for r in self._records(buf, self.n_in + self.n_out, "label"):
            sample = Sample(self.schema.unflat("inputs", np.array(r[: self.n_in])))
            sample.update(self.schema.unflat("outputs", np.array(r[self.n_in :])))
            out.append(sample)
        return out

    @staticmethod
    def label_message(
        label: SampleLabel, *, generator_id: int, step: int, uncertainty: float
    ) -> tuple[dict[str, Any], np.ndarray | None]:
        """A label as ``(control, data)``; ``data`` holds the outputs of an ``ok`` label."""
        control = {
            "status": label.status.value,
            "error": label.error,
            "wall_time_s": label.wall_time_s,
            "oracle": label.oracle,
            "method": label.method,
            "settings": label.settings,
            "attempts": label.attempts,
            "generator_id": generator_id,
            "step": step,
            "uncertainty": float(uncertainty),
        }
        if not label.ok or label.values is None:
            return control, None
        flat = np.concatenate([np.asarray(v, float).reshape(-1) for v in label.values.values()])
        return control, flat

    def label_data_size(self, n_atoms: int, control: Mapping[str, Any]) -> int:
        """Length of the ``data`` of :meth:`label_message` (``n_atoms`` is ignored)."""
        return self.n_out if control["status"] == LabelStatus.OK.value else 0

    def label_from_message(
        self, sample: Sample, control: Mapping[str, Any], data: np.ndarray | None
    ) -> SampleLabel:
        """Inverse of :meth:`label_message` on the sample that was sent to the oracle."""
        return SampleLabel(
            sample=sample.copy(),
            status=LabelStatus(control["status"]),
            values=None if data is None else self.schema.unflat("outputs", np.array(data)),
            error=control["error"],
            wall_time_s=control["wall_time_s"],
            oracle=control["oracle"],
            method=control["method"],
            settings=control["settings"],
            attempts=control["attempts"],
        )
