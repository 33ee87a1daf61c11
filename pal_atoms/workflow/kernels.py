"""What a run fills in from its kernels: defaults an atomistic or a generic committee brings.

A generic :class:`~pal_atoms.generic.Ensemble` brings its own trainer, selection rule,
store, MPI codec and schema; a generic oracle its labelling function. The atomistic
defaults apply otherwise. Both transports build the run through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pal_atoms.core.label import Label
from pal_atoms.workflow.selection import SelectionRule, TrustWindow

__all__ = ["codec_of", "resolve_kernels"]


def resolve_kernels(
    committee: Any,
    oracle: Any,
    generators: Sequence[Any],
    *,
    trainer: Any | None,
    selection: SelectionRule | None,
    label_fn: Callable[..., Label] | None,
) -> tuple[Any | None, SelectionRule, Callable[..., Label]]:
    """``(trainer, selection, label_fn)`` with defaults filled in; binds the schema.

    A committee with a ``schema`` (generic samples) hands it to every generator and the
    oracle that has ``bind``, so they build and check samples of that schema.
    """
    if trainer is None and callable(getattr(committee, "default_trainer", None)):
        trainer = committee.default_trainer()  # a generic ensemble trains itself
    window = getattr(committee, "trust_window", None)
    if selection is None and window is not None:  # a generic ensemble's relative spread
        selection = TrustWindow(lower=window[0], upper=window[1], key="uncertainty")
    schema = getattr(committee, "schema", None)
    if schema is not None:
        for kernel in (*generators, oracle):
            if callable(getattr(kernel, "bind", None)):
                kernel.bind(schema)
    if label_fn is None:
        label_fn = getattr(oracle, "labeller", None)
    if label_fn is None:
        from pal_atoms.oracles import label as default_label

        label_fn = default_label
    return trainer, selection or TrustWindow(), label_fn


def codec_of(committee: Any) -> Any:
    """How items travel between MPI ranks.

    The committee's own codec (a generic ensemble's samples), or
    :mod:`pal_atoms.workflow.mpi.codec` (structures).
    """
    own = getattr(committee, "codec", None)
    if own is not None:
        return own
    from pal_atoms.workflow.mpi import codec

    return codec
