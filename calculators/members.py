"""Building committee members: the first built by its backend, the others copied from it.

Building a member can cost seconds (MACE generates and compiles code per module), and
under MPI every rank builds the whole committee. So member 0 is built and members 1..
are deep copies of it whose weights the backend redraws (:meth:`Backend.redraw`), each
under its own seed, where the backend can; otherwise each member is built anew.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .backend import Backend

__all__ = ["StateHeads", "new_head", "new_module"]

#: Seed offset between the heads of two states of one member.
STATE_SEED_STRIDE = 7919


class StateHeads(torch.nn.Module):
    """One backend readout per electronic state: features in, ``[n_nodes, n_states]`` out."""

    def __init__(self, heads: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.states = torch.nn.ModuleList(heads)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Per-node energies of every state. Shape: ``[n_nodes, n_states]``."""
        return torch.stack([head(features) for head in self.states], dim=-1)


def new_module(
    backend: Backend,
    builder: Callable[[int, Mapping[str, Any]], torch.nn.Module],
    *,
    n_attributes: int,
    hyper: Mapping[str, Any],
    seed: int,
    like: torch.nn.Module | None = None,
) -> torch.nn.Module:
    """A new untrained module drawn under ``seed``.

    Returns:
        A copy of ``like`` with redrawn weights, or ``builder(n_attributes, hyper)``
        without ``like`` or where the backend cannot redraw.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if like is not None and backend.can_redraw:
            module = copy.deepcopy(like)
            backend.redraw(module)
            return module
        return builder(n_attributes, hyper)


def new_head(
    backend: Backend,
    *,
    n_attributes: int,
    hyper: Mapping[str, Any],
    n_states: int,
    seed: int,
    like: torch.nn.Module | None = None,
) -> torch.nn.Module:
    """A new readout head drawn under ``seed`` (as :func:`new_module`).

    With several states, a :class:`StateHeads` whose state s is drawn under
    ``seed + STATE_SEED_STRIDE * s``, so states start apart.
    """
    build = backend.build_head

    def one(seed: int, like: torch.nn.Module | None) -> torch.nn.Module:
        return new_module(
            backend, build, n_attributes=n_attributes, hyper=hyper, seed=seed, like=like
        )

    if n_states == 1:
        return one(seed, like)
    template = like.states[0] if isinstance(like, StateHeads) else None
    heads: list[torch.nn.Module] = []
    for s in range(n_states):
        heads.append(one(seed + STATE_SEED_STRIDE * s, template))
        template = heads[0] if template is None else template
    return StateHeads(heads)
