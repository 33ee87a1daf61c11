"""Building committee members, each under its own seed, and per-state readout heads.

Each member is built anew by its backend. (Deep copies of one built MACE member with
redrawn weights would start four times faster, but copies share TorchScript's executor
state with the original, so their forces then depend on how often the original ran, at
round-off level: bitwise reproducibility under a seed is kept instead.)
"""

from __future__ import annotations

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
    builder: Callable[[int, Mapping[str, Any]], torch.nn.Module],
    *,
    n_attributes: int,
    hyper: Mapping[str, Any],
    seed: int,
) -> torch.nn.Module:
    """``builder(n_attributes, hyper)`` under a torch RNG seeded with ``seed`` (restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(n_attributes, hyper)


def new_head(
    backend: Backend, *, n_attributes: int, hyper: Mapping[str, Any], n_states: int, seed: int
) -> torch.nn.Module:
    """A new readout head built under ``seed`` (as :func:`new_module`).

    With several states, a :class:`StateHeads` whose state s is built under
    ``seed + STATE_SEED_STRIDE * s``, so states start apart.
    """
    heads = [
        new_module(
            backend.build_head,
            n_attributes=n_attributes,
            hyper=hyper,
            seed=seed + STATE_SEED_STRIDE * s,
        )
        for s in range(n_states)
    ]
    return heads[0] if n_states == 1 else StateHeads(heads)
