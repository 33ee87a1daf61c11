"""A committee of any torch modules: the surrogate of a non-atomistic active-learning run.

:class:`Ensemble` builds ``members`` modules with the user's factory
``make_model(inputs, outputs)`` (``{name: shape}`` of the schema), each wrapped with the
input and output standardisation fitted on its training data, so the factory's module
sees inputs of unit scale and predicts standardised outputs. It reports, per output, the
committee mean and the spread (std over members) in the outputs' own units, and for the
workflow one dimensionless ``uncertainty`` per sample: the largest spread over all output
values divided by that output's spread in the training labels, which a
:class:`~pal_atoms.workflow.selection.TrustWindow` on ``"uncertainty"`` judges.

The module is called with a dict of input tensors ``{name: (B, *shape)}`` and returns a
dict ``{name: (B, *shape)}`` (or, for one output, that tensor alone).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pal_atoms.core.errors import InputError
from pal_atoms.core.samples import Schema
from pal_atoms.generic.training import EnsembleTrainer, TrainingSettings

__all__ = ["Ensemble", "Prediction"]

logger = logging.getLogger(__name__)

ModelFactory = Callable[[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]], torch.nn.Module]


class Prediction(NamedTuple):
    """Committee mean and spread of one output, shapes ``(n_samples, *shape)``."""

    mean: np.ndarray
    std: np.ndarray


class Member(torch.nn.Module):
    """One user module between fitted input and output standardisation (buffers)."""

    x_mean: torch.Tensor
    x_scale: torch.Tensor
    y_mean: torch.Tensor
    y_scale: torch.Tensor

    def __init__(self, model: torch.nn.Module, schema: Schema, *, scale_inputs: bool = True):
        super().__init__()
        self.model = model
        self.schema = schema
        self.scale_inputs = scale_inputs
        n_in, n_out = schema.n_inputs, schema.n_outputs
        self.register_buffer("x_mean", torch.zeros(n_in, dtype=torch.float64))
        self.register_buffer("x_scale", torch.ones(n_in, dtype=torch.float64))
        self.register_buffer("y_mean", torch.zeros(n_out, dtype=torch.float64))
        self.register_buffer("y_scale", torch.ones(n_out, dtype=torch.float64))

    def fit_scales(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Standardisation from training inputs ``(N, n_in)`` and outputs ``(N, n_out)``."""
        pairs = [(self.y_mean, self.y_scale, y)]
        if self.scale_inputs:
            pairs.append((self.x_mean, self.x_scale, x))
        for mean, scale, data in pairs:
            mean.copy_(data.mean(0))
            std = data.std(0) if len(data) > 1 else torch.ones_like(mean)
            scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised outputs ``(B, n_out)`` from flat raw inputs ``(B, n_in)``."""
        z = ((x - self.x_mean) / self.x_scale).to(torch.get_default_dtype())
        named = {
            k: v.reshape(len(x), *self.schema.inputs[k])
            for k, v in _split(z, self.schema.inputs).items()
        }
        out = self.model(named)
        if isinstance(out, torch.Tensor):
            if len(self.schema.outputs) != 1:
                raise InputError("a model of several outputs must return a dict of tensors")
            out = {next(iter(self.schema.outputs)): out}
        return torch.cat([out[k].reshape(len(x), -1) for k in self.schema.outputs], dim=1).to(
            torch.float64
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw-unit outputs ``(B, n_out)`` from flat raw inputs ``(B, n_in)``."""
        return self.forward_scaled(x) * self.y_scale + self.y_mean


def _split(flat: torch.Tensor, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = flat[:, i : i + n]
        i += n
    return out


class Ensemble:
    """Committee of torch modules for samples of one schema (see the module docstring).

    Args:
        make_model: ``make_model(inputs, outputs) -> torch.nn.Module``; called once per
            member, each under its own seed.
        members: Committee size (>= 2: the spread needs two).
        inputs: ``{name: shape}`` of a sample's inputs.
        outputs: ``{name: shape}`` of the labels.
        training: How the members are trained (:class:`TrainingSettings`).
        seed: Seed of the first member (member ``m`` uses ``seed + m``).
        device: Torch device (``"cpu"``, ``"cuda"``).
        scale_inputs: Standardise the inputs for the model (off for a model that needs
            them in their own units, e.g. :class:`~pal_atoms.generic.models.RasterCNN`).

    Raises:
        InputError: bad schema or committee size.
    """

    def __init__(
        self,
        make_model: ModelFactory,
        members: int = 4,
        *,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        training: TrainingSettings | None = None,
        seed: int = 0,
        device: str = "cpu",
        scale_inputs: bool = True,
    ):
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise InputError(f"an ensemble needs members >= 2, got {members!r}")
        self.schema = Schema(inputs, outputs)
        self.make_model = make_model
        self.training = training or TrainingSettings()
        self.seed = int(seed)
        self.device = torch.device(device)
        self.members: list[Member] = []
        for m in range(members):
            torch.manual_seed(self.seed + m)
            model = make_model(dict(self.schema.inputs), dict(self.schema.outputs))
            if not isinstance(model, torch.nn.Module):
                raise InputError(f"make_model must return a torch.nn.Module, got {type(model)}")
            member = Member(model, self.schema, scale_inputs=scale_inputs)
            self.members.append(member.to(self.device))
        #: Default trust window of a run on ``uncertainty`` (relative spread): trusted
        #: below 5 % of the labels' spread, untrusted above 100 %.
        self.trust_window = (0.05, 1.0)
        #: Spread of each output value in the training labels (scales ``uncertainty``).
        self.label_scale = np.ones(self.schema.n_outputs)
        self.trained = False

    def __len__(self) -> int:
        return len(self.members)

    @property
    def n_members(self) -> int:
        """Committee size."""
        return len(self.members)

    def to(self, device: str | torch.device) -> Ensemble:
        """Move every member to ``device`` (in place)."""
        self.device = torch.device(device)
        for m in self.members:
            m.to(self.device)
        return self

    # -- predicting -----------------------------------------------------------------------
    def _inputs(self, samples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        x = np.stack([self.schema.flat_inputs(s) for s in samples]) if samples else None
        if x is None:
            return torch.zeros((0, self.schema.n_inputs), dtype=torch.float64)
        return torch.as_tensor(x, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def _raw(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Member predictions, shape ``(members, n_samples, n_outputs)``."""
        x = self._inputs(samples)
        outs = []
        for member in self.members:
            member.eval()
            outs.append(member(x).cpu().numpy())
        return np.stack(outs)

    def predict(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Prediction]:
        """Committee mean and std per output (``{name: Prediction(mean, std)}``).

        Args:
            samples: Mappings with the schema's inputs (a :class:`Sample`, a dict).

        Returns:
            Per output name, arrays of shape ``(n_samples, *shape)`` in the output's unit.
        """
        raw = self._raw(list(samples))
        mean = self.schema.unflat("outputs", raw.mean(0))
        std = self.schema.unflat("outputs", raw.std(0))
        return {k: Prediction(mean[k], std[k]) for k in self.schema.outputs}

    def predict_batch(self, frames: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """What the workflow asks for: per sample ``{"mean", "std", "uncertainty"}``.

        ``mean`` and ``std`` are ``{output: array}``; ``uncertainty`` is the largest
        spread over the output values relative to their spread in the training labels.

        Raises:
            ValueError: a prediction is not finite (the workflow records a failure).
        """
        raw = self._raw(list(frames))
        mean, std = raw.mean(0), raw.std(0)
        if not np.all(np.isfinite(mean)):
            raise ValueError("the ensemble predicted a non-finite value")
        rel = (std / self.label_scale).max(axis=1)
        return [
            {
                "mean": self.schema.unflat("outputs", mean[i]),
                "std": self.schema.unflat("outputs", std[i]),
                "uncertainty": float(rel[i]),
            }
            for i in range(len(rel))
        ]

    def failed_prediction(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """The NaN results that travel with a ``FAILED`` verdict."""
        nan = np.full(self.schema.n_outputs, np.nan)
        return {
            "mean": self.schema.unflat("outputs", nan),
            "std": self.schema.unflat("outputs", nan),
            "uncertainty": float("nan"),
        }

    def errors(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Mean absolute error of the committee mean per output (output units)."""
        if not samples:
            raise ValueError("errors() needs at least one labelled sample")
        pred = self.predict(samples)
        return {
            k: float(np.mean(np.abs(pred[k].mean - np.stack([np.asarray(s[k]) for s in samples]))))
            for k in self.schema.outputs
        }

    def test_error(self, samples: Sequence[Mapping[str, Any]]) -> float:
        """Held-out error of the workflow's learning curve: :meth:`errors` averaged."""
        return float(np.mean(list(self.errors(samples).values())))

    # -- what the workflow asks of a committee ------------------------------------------
    def default_trainer(self) -> EnsembleTrainer:
        """The trainer used when a run is given none."""
        return EnsembleTrainer(self, self.training)

    def open_store(self, path: str | Path) -> Any:
        """The run's :class:`~pal_atoms.store.sample_store.SampleStore` for this schema."""
        from pal_atoms.store.sample_store import SampleStore

        return SampleStore(path, self.schema)

    @property
    def codec(self) -> Any:
        """How samples and predictions travel between MPI ranks."""
        from pal_atoms.generic.codec import SampleCodec

        return SampleCodec(self.schema)

    # -- weights --------------------------------------------------------------------------
    def get_weights(self) -> list[dict[str, torch.Tensor]]:
        """State dicts of every member (standardisation included), on the CPU."""
        return [
            {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in self.members
        ]

    def set_weights(
        self, weights: Sequence[Mapping[str, torch.Tensor]], members: Sequence[int] | None = None
    ) -> None:
        """Load state dicts into ``members`` (default all), in order."""
        idx = list(range(len(self.members))) if members is None else list(members)
        for m, w in zip(idx, weights, strict=True):
            self.members[m].load_state_dict(dict(w))
        self._update_label_scale()
        self.trained = True

    def _update_label_scale(self) -> None:
        self.label_scale = np.mean([m.y_scale.cpu().numpy() for m in self.members], axis=0)

    def save(self, path: str | Path) -> Path:
        """Write the committee (schema, member weights) to ``path`` (a torch file).

        Load it with :meth:`load` and the same ``make_model``; no code is pickled.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "format": "pal-atoms ensemble",
                "schema": self.schema.as_dict(),
                "seed": self.seed,
                "trained": self.trained,
                "scale_inputs": self.members[0].scale_inputs,
                "weights": self.get_weights(),
            },
            tmp,
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, make_model: ModelFactory, *, device: str = "cpu", **kwargs: Any
    ) -> Ensemble:
        """Rebuild a saved committee (``weights_only``: nothing but tensors is unpickled).

        Raises:
            InputError: not an ensemble file.
        """
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != "pal-atoms ensemble":
            raise InputError(f"{path} is not a pal-atoms ensemble")
        schema = Schema.from_dict(data["schema"])
        ens = cls(
            make_model,
            len(data["weights"]),
            inputs=schema.inputs,
            outputs=schema.outputs,
            seed=int(data["seed"]),
            device=device,
            scale_inputs=bool(data.get("scale_inputs", True)),
            **kwargs,
        )
        ens.set_weights(data["weights"])
        ens.trained = bool(data["trained"])
        return ens
