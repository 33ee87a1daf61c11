"""Samples that are not atoms: named NumPy arrays with a declared schema, and their labels.

A :class:`Schema` names the arrays a surrogate reads (``inputs``) and predicts
(``outputs``) with their shapes, e.g. ``inputs={"x": (2,)}, outputs={"y": ()}``. A
:class:`Sample` is a dict of those input arrays (``sample["x"]``); a
:class:`SampleLabel` is what an oracle made of one sample, with the same statuses as an
atomistic :class:`~pal_atoms.core.label.Label`: only an ``ok`` label carries values.
Shapes are fixed per schema, so every sample has the same number of values
(:attr:`Schema.n_inputs`, :attr:`Schema.n_outputs`): the store and the MPI codec lay them
out flat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pal_atoms.core.errors import InputError
from pal_atoms.core.label import LabelStatus, settings_hash

__all__ = ["Sample", "SampleLabel", "Schema"]

Shape = tuple[int, ...]


def _shapes(what: str, spec: Mapping[str, Any]) -> dict[str, Shape]:
    if not isinstance(spec, Mapping) or not spec:
        raise InputError(f"{what} must be a non-empty mapping of name -> shape")
    out: dict[str, Shape] = {}
    for name, shape in spec.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(f"{what} names must be identifiers, got {name!r}")
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise InputError(f"{what}[{name!r}] must be a shape of positive ints, got {shape!r}")
        out[name] = dims
    return out


@dataclass(frozen=True)
class Schema:
    """Names and shapes of a surrogate's inputs and outputs.

    Args:
        inputs: ``{name: shape}`` of the arrays a sample holds (``()`` for a scalar).
        outputs: ``{name: shape}`` of the arrays an oracle returns and the committee
            predicts. Input and output names must differ.

    Raises:
        InputError: empty mappings, bad names or shapes, a name used twice.
    """

    inputs: dict[str, Shape]
    outputs: dict[str, Shape]

    def __init__(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]):
        object.__setattr__(self, "inputs", _shapes("inputs", inputs))
        object.__setattr__(self, "outputs", _shapes("outputs", outputs))
        both = set(self.inputs) & set(self.outputs)
        if both:
            raise InputError(f"names used as input and output: {sorted(both)}")

    @property
    def n_inputs(self) -> int:
        """Number of input values of one sample (all input arrays flattened)."""
        return sum(math.prod(s) for s in self.inputs.values())

    @property
    def n_outputs(self) -> int:
        """Number of output values of one label."""
        return sum(math.prod(s) for s in self.outputs.values())

    def as_dict(self) -> dict[str, dict[str, list[int]]]:
        """JSON form (stored with the committee and in the store's attributes)."""
        return {
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "outputs": {k: list(v) for k, v in self.outputs.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        """Inverse of :meth:`as_dict`."""
        return cls(data["inputs"], data["outputs"])

    # -- arrays <-> flat vectors --------------------------------------------------------
    def sample(self, values: Mapping[str, Any]) -> Sample:
        """A checked :class:`Sample` (float64 arrays of the declared input shapes)."""
        return Sample(_checked("input", self.inputs, values))

    def outputs_of(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Checked output arrays (float64, declared shapes) from ``values``.

        Raises:
            InputError: a missing output or a wrong shape.
        """
        return _checked("output", self.outputs, values)

    def flat_inputs(self, sample: Mapping[str, Any]) -> np.ndarray:
        """The input values of ``sample`` as one vector, shape ``(n_inputs,)``."""
        return np.concatenate([np.asarray(sample[k], float).reshape(-1) for k in self.inputs])

    def flat_outputs(self, values: Mapping[str, Any]) -> np.ndarray:
        """Output values as one vector, shape ``(n_outputs,)``."""
        return np.concatenate([np.asarray(values[k], float).reshape(-1) for k in self.outputs])

    def unflat(self, which: str, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Split a vector (or a ``(..., n)`` batch) back into named arrays."""
        shapes = self.inputs if which == "inputs" else self.outputs
        out: dict[str, np.ndarray] = {}
        i = 0
        lead = flat.shape[:-1]
        for name, shape in shapes.items():
            n = math.prod(shape)
            out[name] = np.array(flat[..., i : i + n]).reshape(lead + shape)
            i += n
        return out


def _checked(kind: str, shapes: Mapping[str, Shape], values: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise InputError(f"a sample's {kind}s must be a mapping of name -> array")
    out = {}
    for name, shape in shapes.items():
        if name not in values:
            raise InputError(f"{kind} {name!r} is missing (have {sorted(values)})")
        arr = np.array(values[name], dtype=float)
        if arr.shape != shape:
            raise InputError(f"{kind} {name!r} must have shape {shape}, got {arr.shape}")
        out[name] = arr
    return out


class Sample(dict[str, np.ndarray]):
    """One sample: ``{input name: float64 array}``, plus ``info`` for provenance.

    What the workflow's queue asks of a sample (a copy, a fingerprint for its diversity
    filter, a key of comparable samples) it asks here, so the same queue serves atoms
    and samples.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.info: dict[str, Any] = {}

    def copy(self) -> Sample:
        """Deep copy (arrays and ``info``)."""
        out = Sample({k: np.array(v) for k, v in self.items()})
        out.info = dict(self.info)
        return out

    def fingerprint(self) -> np.ndarray:
        """Every input value in one vector (the queue's diversity filter compares RMS)."""
        return np.concatenate([np.asarray(v, float).reshape(-1) for v in self.values()])

    def system_key(self) -> tuple[str, int]:
        """Samples of one schema are all comparable."""
        return ",".join(self), 0


@dataclass(frozen=True, kw_only=True)
class SampleLabel:
    """One oracle result for a :class:`Sample` (the generic twin of a ``Label``).

    Attributes:
        sample: The sample that was labelled.
        status: Outcome; only ``ok`` labels carry values.
        values: Output arrays by name (``ok`` only; finite).
        error: Error text for a label that is not ``ok``.
        wall_time_s: Wall time of the oracle call(s) in s.
        oracle: Oracle name.
        method: Method string.
        settings: Settings the label was made with (what the hash covers).
        attempts: Number of attempts.
    """

    sample: Sample
    status: LabelStatus
    values: dict[str, np.ndarray] | None = None
    error: str = ""
    wall_time_s: float = 0.0
    oracle: str = ""
    method: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1

    def __post_init__(self) -> None:
        status = LabelStatus(self.status)
        object.__setattr__(self, "status", status)
        if status is LabelStatus.OK:
            if self.values is None:
                raise ValueError("an ok label needs values")
            if not all(np.all(np.isfinite(v)) for v in self.values.values()):
                raise ValueError("an ok label must have finite values")
        elif self.values is not None:
            raise ValueError(f"a label with status {status.value!r} must not carry values")

    @property
    def atoms(self) -> Sample:
        """The labelled sample (the name the workflow uses for what was labelled)."""
        return self.sample

    @property
    def ok(self) -> bool:
        """True when the label carries usable values."""
        return self.status is LabelStatus.OK

    @property
    def settings_hash(self) -> str:
        """Stable hash of :attr:`settings`."""
        return settings_hash(self.settings)

    def to_atoms(self) -> Sample:
        """The training item: a copy of the sample with its output values added."""
        item = self.sample.copy()
        if self.values is not None:
            item.update({k: np.array(v) for k, v in self.values.items()})
        return item
