"""The committee as one torch module: N members (or N heads on one backbone) evaluated together.

Each member differentiates its own copy of the positions (and strain), so one backward
pass on the sum of all member energies yields every member's forces and stress.

* ``"full"``: N independent members. At inference, backends that allow it (MACE) run all
  members as one member-batched pass: ``torch.func.vmap`` over the stacked weights, with
  ``torch.func.grad`` for forces (no ``requires_grad_`` inside, as our own forward owns
  the positions). Otherwise, and in training, members run one after another on a shared
  graph, still with one backward pass.
* ``"shared"``: one backbone with N readout heads (the cheap mode). The backbone runs once
  on N disjoint replicas of the graph (one batched pass) and head m reads replica m; at
  inference the N heads run as one ``vmap`` over their stacked weights.

Several electronic states (``n_states > 1``): each member's head is one backend readout
per state on the member's backbone (:class:`StateHeads`), so a member predicts S energies
per structure; the forces of state s are minus the gradient of energy s (one backward
pass per state). With one state (the default) the model is exactly the one-state model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .backend import BackboneInput, Backend
from .graph import Graph
from .members import StateHeads, new_head, new_module
from .species import node_attribute_table

__all__ = ["MODES", "CommitteeModel", "StateHeads"]

logger = logging.getLogger(__name__)

#: Committee modes: independent members, or N heads on one shared backbone.
MODES = ("full", "shared")


class CommitteeModel(torch.nn.Module):
    """N potentials of one backend with per-species E0s and a common energy scale.

    Member ``m``'s energy of structure ``g`` is
    ``sum_i [scale * head_m(backbone_m(graph))_i + shift] + sum_i E0[species_i]``
    (the E0 sum is returned separately, in float64, so float32 models keep precision).

    Args:
        backend: Backend that builds backbones and heads.
        n_species: Number of node types.
        hyper: Backend hyperparameters.
        n_members: Committee size (>= 1).
        mode: ``"full"`` (independent members) or ``"shared"`` (one backbone, N heads).
        seed: Seed of the initial weights; member ``m`` is built under ``seed + m``.
        n_states: Electronic states predicted per structure (>= 1).
        node_attributes: Per-species node attributes ``[n_species, n_attributes]``
            (:meth:`SpeciesTable.attributes`; ``None``: one-hot), the backend's input.
    """

    # Buffers registered in ``__init__`` (declared here so type checkers see tensors, not
    # ``nn.Module.__getattr__``'s ``Tensor | Module``).
    e0: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    attributes: torch.Tensor

    def __init__(
        self,
        backend: Backend,
        n_species: int,
        hyper: Mapping[str, Any],
        n_members: int,
        *,
        mode: str = "full",
        seed: int = 0,
        n_states: int = 1,
        node_attributes: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        attributes = node_attribute_table(node_attributes, n_species, backend)
        if n_states < 1:
            raise ValueError(f"n_states must be >= 1, got {n_states}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        self.backend = backend
        self.hyper = dict(hyper)
        self.n_species = n_species
        #: Width of the node attributes, the node types the backend is built for.
        self.n_attributes = int(attributes.shape[1])
        self.n_members = n_members
        self.mode = mode
        self.n_states = n_states
        n_backbones = 1 if mode == "shared" else n_members
        self.backbones = torch.nn.ModuleList(
            [self._build(backend.build_backbone, seed + m) for m in range(n_backbones)]
        )
        self.heads = torch.nn.ModuleList([self._build_head(seed + m) for m in range(n_members)])
        self.register_buffer("e0", torch.zeros(n_species, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))
        # Derived from the species table on load, so not part of the saved weights.
        self.register_buffer("attributes", attributes, persistent=False)
        #: Evaluate a full committee member-batched (vmap) at inference when possible.
        self.batched = True
        self._vmap_failed = False
        self._stack_cache: tuple[Any, dict[str, Any], dict[str, Any]] | None = None

    def _apply(self, fn: Any, recurse: bool = True) -> CommitteeModel:
        # .to(dtype) must not round the E0s (hundreds of eV) to float32: keep them float64.
        e0 = self.e0.detach().clone()
        super()._apply(fn, recurse)
        self.e0.data = e0.to(device=self.e0.device, dtype=torch.float64)
        return self

    def _build(self, builder: Any, seed: int) -> torch.nn.Module:
        return new_module(builder, n_attributes=self.n_attributes, hyper=self.hyper, seed=seed)

    def _build_head(self, seed: int) -> torch.nn.Module:
        n, hyper, states = self.n_attributes, self.hyper, self.n_states
        return new_head(self.backend, n_attributes=n, hyper=hyper, n_states=states, seed=seed)

    def reinitialise(self, members: Sequence[int], seed: int) -> None:
        """Draw fresh weights for ``members`` (and the backbone in shared mode)."""
        device = self.scale.device
        dtype = self.scale.dtype
        build = self.backend.build_backbone
        for m in members:
            self.heads[m] = self._build_head(seed + m).to(device, dtype)
            if self.mode == "full":
                self.backbones[m] = self._build(build, seed + m).to(device, dtype)
        if self.mode == "shared":
            self.backbones[0] = self._build(build, seed).to(device, dtype)

    def member_parameters(self, members: Sequence[int]) -> list[torch.nn.Parameter]:
        """Trainable parameters of ``members`` (the shared backbone counts for all)."""
        params: list[torch.nn.Parameter] = []
        for m in members:
            params.extend(self.heads[m].parameters())
            if self.mode == "full":
                params.extend(self.backbones[m].parameters())
        if self.mode == "shared":
            params.extend(self.backbones[0].parameters())
        return params

    def e0_sum(self, graph: Graph) -> torch.Tensor:
        """Sum of E0s per structure in eV, float64. Shape: ``[n_graphs]``."""
        node = self.e0[graph.species].double()
        out = torch.zeros(graph.n_graphs, dtype=torch.float64, device=node.device)
        return out.index_add_(0, graph.batch, node)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Evaluation mode for one call, restored afterwards.

        ``eval()``/``train()`` walk every submodule (about 5 ms of a 65 ms prediction of a
        4-member committee on one thread), so a model already in evaluation mode is left
        alone.
        """
        if not self.training:
            yield
            return
        self.eval()
        try:
            yield
        finally:
            self.train()

    def forward(
        self,
        graph: Graph,
        *,
        forces: bool = True,
        stress: bool = False,
        members: Sequence[int] | None = None,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Interaction energies (without E0s), forces and stress of the selected members.

        Args:
            graph: Batched structures.
            forces: Compute forces.
            stress: Compute the stress (periodic structures; zeros for molecules).
            members: Member indices to evaluate; ``None`` means all.
            create_graph: Keep the graph of the derivatives (force training).

        Returns:
            ``energy`` in eV, shape ``[n_sel, n_graphs]``; ``forces`` in eV/Å, shape
            ``[n_sel, n_nodes, 3]``; ``stress`` in eV/Å³, shape ``[n_sel, n_graphs, 3, 3]``
            (ASE sign convention: ``dE/dstrain / volume``). With several states, energy
            ``[n_sel, n_graphs, n_states]`` and forces ``[n_sel, n_nodes, n_states, 3]``.

        Raises:
            ValueError: stress asked of a model of several states.
        """
        if stress and self.n_states > 1:
            raise ValueError("per-state stress is not implemented (states are for molecules)")
        sel = list(range(self.n_members)) if members is None else list(members)
        dtype = self.scale.dtype
        base = graph.positions.detach().to(dtype)
        n_sel = len(sel)
        # One copy of positions (and strain) per member: the gradient of the summed energy
        # with respect to copy m is member m's gradient, all from one backward pass.
        pos0 = base.unsqueeze(0).repeat(n_sel, 1, 1).requires_grad_(forces)
        strain = torch.zeros(
            (n_sel, graph.n_graphs, 3, 3), dtype=dtype, device=base.device, requires_grad=stress
        )
        use_vmap = (
            self.mode == "full"
            and self.n_states == 1
            and self.batched
            and n_sel > 1
            and not create_graph
            and self.backend.vmap_context is not None
            and not self._vmap_failed
        )
        if use_vmap:
            try:
                return self._forward_vmap(graph, sel, pos0, strain, forces=forces, stress=stress)
            except RuntimeError as exc:  # an op without a batching rule in this backend
                self._vmap_failed = True
                logger.warning("member-batched (vmap) evaluation failed, looping: %s", exc)
        energy = self._energies(graph, sel, pos0, strain, batched=self.batched and not create_graph)
        out = {"energy": energy}
        leaves = [x for x, want in ((pos0, forces), (strain, stress)) if want]
        if leaves and self.n_states > 1:
            # One backward pass per state: forces of state s are minus its own gradient.
            per_state = [
                torch.autograd.grad(
                    energy[..., s].sum(),
                    pos0,
                    create_graph=create_graph,
                    retain_graph=create_graph or s < self.n_states - 1,
                    allow_unused=True,
                )[0]
                for s in range(self.n_states)
            ]
            out["forces"] = -torch.stack(
                [g if g is not None else torch.zeros_like(pos0) for g in per_state], dim=-2
            )
        elif leaves:
            grads = torch.autograd.grad(
                energy.sum(), leaves, create_graph=create_graph, allow_unused=True
            )
            grads = tuple(
                g if g is not None else torch.zeros_like(x)
                for g, x in zip(grads, leaves, strict=True)
            )
            self._fill(out, graph, grads, forces, stress)
        return out

    def _strained(self, graph: Graph, pos: torch.Tensor, strain: torch.Tensor) -> torch.Tensor:
        """Edge vectors of one member's copy. pos ``[n, 3]``, strain ``[n_graphs, 3, 3]``."""
        return self._strained_replicas(graph, pos[None], strain[None])[0]

    def _strained_replicas(
        self, graph: Graph, pos: torch.Tensor, strain: torch.Tensor
    ) -> torch.Tensor:
        """Edge vectors of S copies (positions and strain each): ``[S, n_edges, 3]``.

        pos ``[S, n, 3]`` in Å, strain ``[S, n_graphs, 3, 3]`` (symmetrised here); the
        derivative with respect to copy s's positions and strain is member s's.
        """
        dtype = pos.dtype
        sym = 0.5 * (strain + strain.transpose(-1, -2))
        pos = pos + torch.einsum("sni,snij->snj", pos, sym[:, graph.batch])
        cell = graph.cell.to(dtype)
        cell = cell + torch.einsum("gij,sgjk->sgik", cell, sym)
        send, recv = graph.edge_index
        shifts = torch.einsum(
            "ei,seij->sej", graph.unit_shifts.to(dtype), cell[:, graph.batch[send]]
        )
        return pos[:, recv] - pos[:, send] + shifts

    def _heads(self, sel: list[int], feats: list[torch.Tensor], *, batched: bool) -> torch.Tensor:
        """Node energies of heads ``sel``, head ``sel[c]`` on replica ``c``: ``[n_sel, n_nodes]``.

        With ``batched`` (inference: the stacked weights are copies, so no gradient reaches
        the heads' own) they run as one member-batched call, ``vmap`` over their stacked
        weights, where the backend allows it: one set of small ops instead of one per head.
        Otherwise (training) they run one after another.
        """
        ctx = self.backend.vmap_context
        if batched and len(sel) > 1 and ctx is not None and not self._vmap_failed:
            from torch.func import functional_call, vmap

            params, buffers = self._stacked_heads(sel)
            head0 = self.heads[sel[0]]
            try:
                with ctx():
                    return vmap(lambda p, b, f: functional_call(head0, (p, b), (f,)))(
                        params, buffers, feats
                    )
            except RuntimeError as exc:  # an op without a batching rule in this backend
                self._vmap_failed = True
                logger.warning("member-batched (vmap) heads failed, looping: %s", exc)
        return torch.stack([self.heads[m]([f[c] for f in feats]) for c, m in enumerate(sel)])

    def _stacked_heads(self, sel: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Stacked weights of heads ``sel`` (``torch.func.stack_module_state``), cached.

        Stacking costs about 0.15 ms, 1-2 % of a small prediction; the copy is reused until
        a weight changes (training steps and ``load_state_dict`` write in place, which bumps
        a tensor's version; new modules or a move to another device change its storage).
        """
        from torch.func import stack_module_state

        tensors = [t for m in sel for t in (*self.heads[m].parameters(), *self.heads[m].buffers())]
        key = (tuple(sel), tuple((t.data_ptr(), t._version) for t in tensors))
        if self._stack_cache is None or self._stack_cache[0] != key:
            self._stack_cache = (key, *stack_module_state([self.heads[m] for m in sel]))
        return self._stack_cache[1], self._stack_cache[2]

    def _node_to_graph(self, graph: Graph, node_e: torch.Tensor) -> torch.Tensor:
        """Per-graph energies of node energies ``[n_nodes(, n_states)]``."""
        shape = (graph.n_graphs, *node_e.shape[1:])
        e = torch.zeros(shape, dtype=node_e.dtype, device=node_e.device)
        return e.index_add(0, graph.batch, node_e * self.scale + self.shift)

    def _energies(
        self,
        graph: Graph,
        sel: list[int],
        pos: torch.Tensor,
        strain: torch.Tensor,
        *,
        batched: bool = False,
    ) -> torch.Tensor:
        dtype = self.scale.dtype
        one_hot = self.attributes[graph.species].to(dtype)
        n_sel, n_nodes = pos.shape[0], pos.shape[1]
        if self.mode == "shared":
            # The backbone runs once on n_sel disjoint replicas of the graph (one batched
            # pass, barely dearer than one copy for small structures); head m reads replica m.
            vectors = self._strained_replicas(graph, pos, strain).reshape(-1, 3)
            offsets = n_nodes * torch.arange(n_sel, device=pos.device)
            edge_index = (graph.edge_index[:, None, :] + offsets[None, :, None]).reshape(2, -1)
            inp = BackboneInput(
                graph.species.repeat(n_sel), one_hot.repeat(n_sel, 1), vectors, edge_index
            )
            feats = [f.reshape(n_sel, n_nodes, *f.shape[1:]) for f in self.backbones[0](inp)]
            node_e = self._heads(sel, feats, batched=batched)  # [n_sel, n_nodes(, n_states)]
            shape = (n_sel, graph.n_graphs, *node_e.shape[2:])
            e = torch.zeros(shape, dtype=node_e.dtype, device=node_e.device)
            return e.index_add(1, graph.batch, node_e * self.scale + self.shift)
        energies = []
        for c, m in enumerate(sel):
            inp = BackboneInput(
                graph.species, one_hot, self._strained(graph, pos[c], strain[c]), graph.edge_index
            )
            energies.append(self._node_to_graph(graph, self.heads[m](self.backbones[m](inp))))
        return torch.stack(energies)

    def _forward_vmap(
        self,
        graph: Graph,
        sel: list[int],
        pos: torch.Tensor,
        strain: torch.Tensor,
        *,
        forces: bool,
        stress: bool,
    ) -> dict[str, torch.Tensor]:
        """Full committee as one member-batched pass (``torch.func`` ``vmap`` over weights)."""
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        dtype = self.scale.dtype
        one_hot = self.attributes[graph.species].to(dtype)
        bb_p, bb_b = stack_module_state([self.backbones[m] for m in sel])
        hd_p, hd_b = stack_module_state([self.heads[m] for m in sel])
        bb0, hd0 = self.backbones[sel[0]], self.heads[sel[0]]

        def member_energy(  # noqa: PLR0917  (vmap passes arguments positionally)
            bp: Any, bb: Any, hp: Any, hb: Any, p: torch.Tensor, s: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            inp = BackboneInput(
                graph.species, one_hot, self._strained(graph, p, s), graph.edge_index
            )
            feats = functional_call(bb0, (bp, bb), (inp,))
            node_e = functional_call(hd0, (hp, hb), (feats,))
            e = self._node_to_graph(graph, node_e)
            return e.sum(), e

        pos = pos.detach()
        strain = strain.detach()
        assert self.backend.vmap_context is not None
        with self.backend.vmap_context():
            if forces or stress:
                fn = grad_and_value(member_energy, argnums=(4, 5), has_aux=True)
                (g_pos, g_strain), (_, energy) = vmap(fn)(bb_p, bb_b, hd_p, hd_b, pos, strain)
            else:
                _, energy = vmap(member_energy)(bb_p, bb_b, hd_p, hd_b, pos, strain)
        out = {"energy": energy}
        grads = (
            tuple(g for g, want in ((g_pos, forces), (g_strain, stress)) if want)
            if (forces or stress)
            else ()
        )
        self._fill(out, graph, grads, forces, stress)
        return out

    def _fill(
        self,
        out: dict[str, torch.Tensor],
        graph: Graph,
        grads: tuple[torch.Tensor, ...],
        forces: bool,
        stress: bool,
    ) -> None:
        if forces:
            out["forces"] = -grads[0]
        if stress:
            dtype = self.scale.dtype
            volume = torch.linalg.det(graph.cell.to(dtype)).abs()
            volume = torch.where(graph.periodic, volume, torch.ones_like(volume))
            st = grads[-1] / volume[None, :, None, None]
            out["stress"] = torch.where(graph.periodic[None, :, None, None], st, 0.0 * st)
