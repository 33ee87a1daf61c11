"""MACE backend (mace-torch), split into an equivariant backbone and readout heads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar, cast

import numpy as np
import torch

from pal_atoms.core.compat import import_mace

from .backend import BackboneInput, Backend, register_backend

__all__ = ["MaceBackend"]


def _scatter_sum_out_of_place(  # noqa: PLR0917  (mirrors mace's signature)
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: torch.Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """``mace.tools.scatter.scatter_sum`` without the in-place ``scatter_add_``.

    Same result; ``torch.func.vmap`` cannot batch an in-place add into an unbatched zeros
    tensor, which is what mace's version does.
    """
    from mace.tools.scatter import _broadcast

    if out is not None or reduce != "sum":
        raise ValueError("only out=None, reduce='sum' is supported under vmap")
    index = _broadcast(index, src, dim)
    size = list(src.size())
    size[dim] = dim_size if dim_size is not None else int(index.max()) + 1
    return torch.zeros(size, dtype=src.dtype, device=src.device).scatter_add(dim, index, src)


@contextlib.contextmanager
def _vmappable_mace() -> Iterator[None]:
    """Swap mace's in-place scatter for an out-of-place one while a vmapped call runs.

    Only ``mace.modules.blocks`` (the interaction blocks) calls it in our forward. The
    swap is undone on exit; the functions give identical results, so other threads that
    run mace meanwhile are unaffected.
    """
    import_mace()
    from mace.modules import blocks

    original = blocks.scatter_sum
    blocks.scatter_sum = _scatter_sum_out_of_place
    try:
        yield
    finally:
        blocks.scatter_sum = original


def mace_module_kwargs(n_species: int, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments of ``mace.modules.MACE`` for pal-atoms' MACE members.

    The one place that says which MACE a member is: the backend builds its networks from
    it and :mod:`pal_atoms.jobs.export` rebuilds them as mace's own ``ScaleShiftMACE``.
    Node types are ``0..n_species-1`` and the E0s zero (pal-atoms keeps them outside).
    """
    import_mace()
    from e3nn import o3
    from mace import modules

    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return {
        "r_max": float(hyper["r_max"]),
        "num_bessel": int(hyper["num_bessel"]),
        "num_polynomial_cutoff": int(hyper["num_polynomial_cutoff"]),
        "max_ell": int(hyper["max_ell"]),
        "interaction_cls": block,
        "interaction_cls_first": block,
        "num_interactions": int(hyper["num_interactions"]),
        "num_elements": n_species,
        "hidden_irreps": o3.Irreps(str(hyper["hidden_irreps"])),
        "MLP_irreps": o3.Irreps(str(hyper["mlp_irreps"])),
        "atomic_energies": np.zeros(n_species),
        "avg_num_neighbors": float(hyper["avg_num_neighbors"]),
        "atomic_numbers": list(range(n_species)),
        "correlation": int(hyper["correlation"]),
        "gate": torch.nn.functional.silu,
        "radial_MLP": [int(x) for x in hyper["radial_mlp"]],
    }


def _build_mace(n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
    kwargs = mace_module_kwargs(n_species, hyper)  # imports mace through the compat shim
    from mace import modules

    return modules.MACE(**kwargs)


class _MaceBackbone(torch.nn.Module):
    """MACE embedding, interactions and products; returns each layer's node features."""

    # Registered in ``__init__``; declared so type checkers see a tensor, not
    # ``nn.Module.__getattr__``'s ``Tensor | Module``.
    type_ids: torch.Tensor

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        # Submodules of ``mace.modules.MACE`` (untyped): name what they are.
        self.node_embedding = cast(torch.nn.Module, model.node_embedding)
        self.spherical_harmonics = cast(torch.nn.Module, model.spherical_harmonics)
        self.radial_embedding = cast(torch.nn.Module, model.radial_embedding)
        self.interactions = cast(torch.nn.ModuleList, model.interactions)
        self.products = cast(torch.nn.ModuleList, model.products)
        self.register_buffer("type_ids", cast(torch.Tensor, model.atomic_numbers).clone())

    def forward(self, inp: BackboneInput) -> list[torch.Tensor]:
        lengths = torch.linalg.vector_norm(inp.vectors, dim=-1, keepdim=True)
        node_feats = self.node_embedding(inp.one_hot)
        edge_attrs = self.spherical_harmonics(inp.vectors)
        edge_feats, cutoff = self.radial_embedding(
            lengths, inp.one_hot, inp.edge_index, self.type_ids
        )
        features: list[torch.Tensor] = []
        for i, (interaction, product) in enumerate(
            zip(self.interactions, self.products, strict=True)
        ):
            node_feats, sc = interaction(
                node_attrs=inp.one_hot,
                node_feats=node_feats,
                edge_attrs=edge_attrs,
                edge_feats=edge_feats,
                edge_index=inp.edge_index,
                cutoff=cutoff,
                first_layer=(i == 0),
            )
            node_feats = product(node_feats=node_feats, sc=sc, node_attrs=inp.one_hot)
            features.append(node_feats)
        return features


class _MaceHead(torch.nn.Module):
    """MACE readouts (linear per layer, non-linear on the last): features -> node energy."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.readouts = cast(torch.nn.ModuleList, model.readouts)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros_like(features[0][:, 0])
        for readout, feats in zip(self.readouts, features, strict=True):
            out = out + readout(feats).squeeze(-1)
        return out


@register_backend
class MaceBackend(Backend):
    """MACE (Batatia et al. 2022) with small defaults for clusters and molecules.

    Defaults: ``r_max`` 5 Å, 8 Bessel functions, 2 interactions, 32 scalar channels,
    ``max_ell`` 2, correlation order 3, a 16-channel non-linear readout: about 50k
    parameters, a Bi8 or ethanol forward+forces in roughly 10-20 ms on one CPU core.
    """

    name: ClassVar[str] = "mace"
    defaults: ClassVar[Mapping[str, Any]] = {
        "r_max": 5.0,
        "num_bessel": 8,
        "num_polynomial_cutoff": 5,
        "max_ell": 2,
        "num_interactions": 2,
        "hidden_irreps": "32x0e",
        "mlp_irreps": "16x0e",
        "correlation": 3,
        "avg_num_neighbors": 8.0,
        "radial_mlp": [32, 32, 32],
    }
    vmap_context: Callable[[], AbstractContextManager[None]] | None = staticmethod(_vmappable_mace)

    def build_backbone(self, n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
        """Build the MACE backbone (see :class:`Backend`)."""
        return _MaceBackbone(_build_mace(n_species, hyper))

    def build_head(self, n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
        """Build MACE readouts alone, as ``mace.modules.MACE`` lays them out."""
        import_mace()
        from e3nn import o3
        from mace.modules.blocks import LinearReadoutBlock, NonLinearReadoutBlock

        hidden = o3.Irreps(str(hyper["hidden_irreps"]))
        n_layers = int(hyper["num_interactions"])
        scalar = o3.Irreps(str(hidden[0]))
        out = o3.Irreps("1x0e")
        readouts = torch.nn.ModuleList(
            [LinearReadoutBlock(hidden if n_layers > 1 else scalar, out)]
        )
        for i in range(n_layers - 1):
            if i == n_layers - 2:
                readouts.append(
                    NonLinearReadoutBlock(
                        scalar,
                        o3.Irreps(str(hyper["mlp_irreps"])),
                        torch.nn.functional.silu,
                        out,
                        1,
                    )
                )
            else:
                readouts.append(LinearReadoutBlock(hidden, out))
        head = _MaceHead.__new__(_MaceHead)
        torch.nn.Module.__init__(head)
        head.readouts = readouts
        return head
