"""Small model factories for :class:`~pal_atoms.generic.Ensemble` (``make_model``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

__all__ = ["MLP", "RasterCNN", "mlp", "raster_cnn"]

Shapes = dict[str, tuple[int, ...]]


class MLP(torch.nn.Module):
    """Fully connected network on all inputs flattened, predicting all outputs."""

    def __init__(self, inputs: Shapes, outputs: Shapes, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        self.inputs, self.outputs = dict(inputs), dict(outputs)
        sizes = [sum(math.prod(s) for s in inputs.values()), *hidden]
        layers: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(a, b), torch.nn.SiLU()]
        layers.append(torch.nn.Linear(sizes[-1], sum(math.prod(s) for s in outputs.values())))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{input: (B, *shape)}`` -> ``{output: (B, *shape)}``."""
        x = torch.cat(
            [batch[k].reshape(len(next(iter(batch.values()))), -1) for k in self.inputs], 1
        )
        y = self.net(x)
        out, i = {}, 0
        for name, shape in self.outputs.items():
            n = math.prod(shape)
            out[name] = y[:, i : i + n].reshape(len(y), *shape)
            i += n
        return out


def mlp(hidden: tuple[int, ...] = (64, 64)) -> Callable[[Shapes, Shapes], MLP]:
    """A ``make_model`` factory of :class:`MLP` with these hidden widths."""

    def make_model(inputs: Shapes, outputs: Shapes) -> MLP:
        return MLP(inputs, outputs, hidden)

    return make_model


class RasterCNN(torch.nn.Module):
    """A CNN on an image of square objects placed at the input's points.

    The input ``(B, n_points, 2)`` of ``(x, y)`` centres (raw units; build the ensemble
    with ``scale_inputs=False``) is drawn as soft squares of side ``size`` on a
    ``pixels`` grid over ``extent``; convolutions follow, then average and max pooling
    along ``x`` only, and a small head predicts every output from the pooled features of
    every row. Pooling along ``x`` makes the prediction invariant to shifts along the
    channel (PAL's CNNs are shift and flip invariant) while it still sees how far an
    object is from the walls. With ``mirror`` the prediction is averaged over the image
    and its mirror image in ``y`` (``y -> height - y``), so it is flip invariant exactly.

    Args:
        inputs: The schema's inputs (one, of shape ``(n_points, 2)``).
        outputs: The schema's outputs.
        extent: ``(width, height)`` of the image in input units.
        pixels: ``(rows, columns)`` of the image.
        size: Side of each square in input units.
        channels: Channels of the convolution layers.
        mirror: Average over the mirror image in ``y``.
    """

    xs: torch.Tensor
    ys: torch.Tensor

    def __init__(
        self,
        inputs: Shapes,
        outputs: Shapes,
        *,
        extent: tuple[float, float] = (8.0, 1.0),
        pixels: tuple[int, int] = (16, 64),
        size: float = 0.2,
        channels: tuple[int, ...] = (8, 16),
        mirror: bool = True,
    ):
        super().__init__()
        self.mirror = mirror
        (self.name, shape), *rest = inputs.items()
        if rest or len(shape) != 2 or shape[1] != 2:
            raise ValueError(f"RasterCNN takes one input of shape (n, 2), got {inputs}")
        self.outputs = dict(outputs)
        rows, cols = pixels
        xs = (torch.arange(cols) + 0.5) / cols * extent[0]
        ys = (torch.arange(rows) + 0.5) / rows * extent[1]
        self.register_buffer("xs", xs)
        self.register_buffer("ys", ys)
        self.half_size = size / 2
        self.sharp = min(extent[0] / cols, extent[1] / rows) / 2
        layers: list[torch.nn.Module] = []
        last = 1
        for c in channels:
            layers += [torch.nn.Conv2d(last, c, 3, padding=1), torch.nn.SiLU()]
            last = c
        self.conv = torch.nn.Sequential(*layers)
        n_out = sum(math.prod(s) for s in outputs.values())
        self.head = torch.nn.Sequential(
            torch.nn.Linear(2 * last * rows, 32), torch.nn.SiLU(), torch.nn.Linear(32, n_out)
        )

    def image(self, points: torch.Tensor) -> torch.Tensor:
        """The soft-square image ``(B, 1, rows, cols)`` of points ``(B, n, 2)``."""
        dx = (self.half_size - (self.xs[None, None, :] - points[..., :1]).abs()) / self.sharp
        dy = (self.half_size - (self.ys[None, None, :] - points[..., 1:]).abs()) / self.sharp
        squares = torch.sigmoid(dy)[..., :, None] * torch.sigmoid(dx)[..., None, :]
        return squares.amax(dim=1, keepdim=True)

    def _predict(self, img: torch.Tensor) -> torch.Tensor:
        z = self.conv(img)  # (B, C, rows, cols): pool along the channel only
        return self.head(torch.cat([z.mean(dim=3), z.amax(dim=3)], dim=1).flatten(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{input: (B, n, 2)}`` -> ``{output: (B, *shape)}``."""
        img = self.image(batch[self.name])
        y = self._predict(img)
        if self.mirror:
            y = (y + self._predict(torch.flip(img, dims=(2,)))) / 2
        out, i = {}, 0
        for name, shape in self.outputs.items():
            n = math.prod(shape)
            out[name] = y[:, i : i + n].reshape(len(y), *shape)
            i += n
        return out


def raster_cnn(**kwargs: object) -> Callable[[Shapes, Shapes], RasterCNN]:
    """A ``make_model`` factory of :class:`RasterCNN` with these settings."""

    def make_model(inputs: Shapes, outputs: Shapes) -> RasterCNN:
        return RasterCNN(inputs, outputs, **kwargs)  # type: ignore[arg-type]

    return make_model
