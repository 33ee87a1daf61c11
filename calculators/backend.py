"""The backend interface: what a machine-learned potential must provide to a committee.

A backend splits its model into a *backbone* (graph in, per-node features out) and a
*head* (features in, per-node energy out). A full committee owns one backbone and one head
per member; the cheap ``"shared"`` mode owns one backbone and N heads. Everything else
(E0s, scaling, forces, stress, uncertainty, training) is generic and lives outside the
backend, so another MLP is one file with one :class:`Backend` subclass, registered with
:func:`register_backend`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch

__all__ = ["REGISTRY", "BackboneInput", "Backend", "register_backend"]


class BackboneInput:
    """What a backbone sees of a batched graph (one committee member's view).

    Attributes:
        species: Species index of each node. Shape: ``[n_nodes]``.
        one_hot: Node attributes: the species one-hot, or element, charge and spin one-hots
            side by side (factorised species encoding). Shape: ``[n_nodes, n_attributes]``.
        vectors: Edge vectors receiver minus sender in Å. Shape: ``[n_edges, 3]``.
        edge_index: ``(sender, receiver)``. Shape: ``[2, n_edges]``.
    """

    __slots__ = ("edge_index", "one_hot", "species", "vectors")

    def __init__(
        self,
        species: torch.Tensor,
        one_hot: torch.Tensor,
        vectors: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> None:
        self.species = species
        self.one_hot = one_hot
        self.vectors = vectors
        self.edge_index = edge_index


class Backend(abc.ABC):
    """One machine-learned potential family (MACE, SchNet, ...).

    Subclasses set :attr:`name` and :attr:`defaults` and implement the two builders. The
    builders are called under a seeded torch RNG, so they must draw all random
    initialisation from torch's global generator.
    """

    #: Name used in ``CommitteeCalculator.create(backend=...)`` and in saved metadata.
    name: ClassVar[str] = ""
    #: Default hyperparameters (JSON-serialisable); must contain ``r_max`` (Å).
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: Whether the backbone reads ``BackboneInput.one_hot`` linearly (any node attributes,
    #: e.g. the factorised species encoding) rather than embedding ``species`` by index.
    reads_node_attributes: ClassVar[bool] = True
    #: Context manager factory under which ``torch.func.vmap`` over stacked member weights
    #: works for this backend's modules, or ``None`` if the backend cannot be vmapped
    #: (members are then evaluated one after another). Subclasses set it to
    #: ``staticmethod(factory)``. (Not declared ``ClassVar``: type checkers would bind a
    #: callable class variable as a method and reject ``backend.vmap_context()``.)
    vmap_context: Callable[[], AbstractContextManager[None]] | None = None

    def hyperparameters(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``overrides``.

        Raises:
            ValueError: an unknown hyperparameter name or a non-positive ``r_max``.
        """
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown {self.name} hyperparameter(s) {unknown}; known: {sorted(self.defaults)}"
            )
        hyper = {**self.defaults, **overrides}
        if float(hyper["r_max"]) <= 0:
            raise ValueError(f"r_max must be positive (Å), got {hyper['r_max']}")
        return hyper

    @abc.abstractmethod
    def build_backbone(self, n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
        """Build an untrained backbone.

        The module's ``forward(inp: BackboneInput) -> list[Tensor]`` returns per-node
        features (each of shape ``[n_nodes, n_features_k]``) and must be differentiable
        with respect to ``inp.vectors`` (forces and stress come from that gradient).
        """

    @abc.abstractmethod
    def build_head(self, n_species: int, hyper: Mapping[str, Any]) -> torch.nn.Module:
        """Build an untrained readout head.

        The module's ``forward(features: list[Tensor]) -> Tensor`` maps the backbone's
        features to per-node energies before scaling. Shape: ``[n_nodes]``.
        """


#: Backend classes by name (:func:`register_backend` fills it).
REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Register a backend class under ``cls.name`` (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}.name is empty")
    REGISTRY[cls.name] = cls
    return cls
