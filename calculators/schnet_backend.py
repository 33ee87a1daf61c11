"""SchNet backend (schnetpack 2.0), split into the representation and an atomwise MLP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from pal_atoms.core.compat import import_schnetpack

from .backend import BackboneInput, Backend, register_backend

__all__ = ["SchNetBackend"]


class _SchNetBackbone(torch.nn.Module):
    def __init__(self, representation: torch.nn.Module) -> None:
        super().__init__()
        self.representation = representation

    def forward(self, inp: BackboneInput) -> list[torch.Tensor]:
        spk = import_schnetpack()
        props = spk.properties
        out = self.representation(
            {
                props.Z: inp.species,
                props.Rij: inp.vectors,
                props.idx_i: inp.edge_index[1],
                props.idx_j: inp.edge_index[0],
            }
        )
        return [out["scalar_representation"]]


class _SchNetHead(torch.nn.Module):
    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.mlp(features[0]).squeeze(-1)


@register_backend
class SchNetBackend(Backend):
    """SchNet (Schütt et al. 2018): 64 features, 3 interactions, 20 Gaussians, 5 Å cutoff."""

    name: ClassVar[str] = "schnet"
    reads_node_attributes: ClassVar[bool] = False  # schnetpack embeds atomic numbers
    defaults: ClassVar[Mapping[str, Any]] = {
        "r_max": 5.0,
        "n_atom_basis": 64,
        "n_interactions": 3,
        "n_rbf": 20,
        "n_readout_layers": 2,
    }

    def build_backbone(self, n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
        """Build the SchNet representation (see :class:`Backend`)."""
        spk = import_schnetpack()
        r_max = float(hyper["r_max"])
        representation = spk.representation.SchNet(
            n_atom_basis=int(hyper["n_atom_basis"]),
            n_interactions=int(hyper["n_interactions"]),
            radial_basis=spk.nn.GaussianRBF(n_rbf=int(hyper["n_rbf"]), cutoff=r_max),
            cutoff_fn=spk.nn.CosineCutoff(r_max),
            max_z=n_species,
        )
        return _SchNetBackbone(representation)

    def build_head(self, n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
        """Build an atomwise MLP readout (see :class:`Backend`)."""
        spk = import_schnetpack()
        mlp = spk.nn.build_mlp(
            n_in=int(hyper["n_atom_basis"]), n_out=1, n_layers=int(hyper["n_readout_layers"])
        )
        return _SchNetHead(mlp)
