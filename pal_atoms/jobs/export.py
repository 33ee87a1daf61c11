"""Export committee members as mace model files (``pal-atoms export-model``).

Each member becomes a genuine ``mace.modules.ScaleShiftMACE``, pickled whole with
``torch.save`` as mace itself does, so ``mace.calculators.MACECalculator(model_paths=...)``
loads it and gives the member's energies and forces. Its node types are the chemical
elements (in atomic-number order) of one charge and spin state: a pal-atoms species is an
(element, charge, multiplicity) triple, so the per-species weights (node embedding, skip
connections, symmetric contractions) are folded onto the elements of that state (the
node attributes of a species are linear in MACE: a factorised element + charge + spin
attribute folds into one element row exactly), and the E0s, energy scale and shift go
into the module's ``atomic_energies_fn`` and ``scale_shift``.

Loading a pickled module runs code from the file: ``MACECalculator`` calls a plain
``torch.load``, which under torch >= 2.6 only works with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``. Importing ``mace.calculators`` sets it, so a fresh
process needs nothing; set it yourself when ``mace.calculators`` was imported earlier in
a process that also runs pal-atoms (whose own mace import removes the variable).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pal_atoms.core.errors import InputError, ModelError

__all__ = ["export_mace"]

logger = logging.getLogger(__name__)

#: Keys of the exported module that are set when it is built, not copied from the member.
_OWN_KEYS = ("atomic_numbers", "atomic_energies_fn.", "scale_shift.", "r_max", "num_interactions")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _build(
    hyper: dict[str, Any], numbers: list[int], e0: np.ndarray, scale: float, shift: float
) -> torch.nn.Module:
    """A ``ScaleShiftMACE`` with the hyperparameters of pal-atoms' MACE backend."""
    from pal_atoms.calculators.mace_backend import mace_module_kwargs

    kwargs = mace_module_kwargs(len(numbers), hyper)  # imports mace through the compat shim
    from mace import modules

    kwargs.update(atomic_energies=e0, atomic_numbers=numbers)
    module: torch.nn.Module = modules.ScaleShiftMACE(
        atomic_inter_scale=scale, atomic_inter_shift=shift, **kwargs
    )
    return module


def _fold_axis(w: torch.Tensor, axis: int, fold: torch.Tensor) -> torch.Tensor:
    """``fold @ w`` along ``axis`` (the node-attribute axis of a per-species weight)."""
    moved = w.movedim(axis, 0)
    out = (fold @ moved.reshape(moved.shape[0], -1)).reshape(fold.shape[0], *moved.shape[1:])
    return out.movedim(0, axis)


def _slice(key: str, value: torch.Tensor, old: Any, new: Any, fold: torch.Tensor) -> torch.Tensor:
    """The weight ``key`` of ``old`` on the exported elements (as ``new`` lays it out).

    ``fold`` (shape ``[n_elements, n_attributes]``) holds the node attributes of the
    exported species: row selection for the joint encoding, element + charge + spin rows
    summed for the factorised one. e3nn normalises a path by its fan-in, which changes
    with the number of node attributes, so folded e3nn weights are rescaled by
    ``old path_weight / new path_weight``.
    """
    from e3nn import o3

    owner_name = key.rsplit(".", 1)[0]
    old_mod, new_mod = old.get_submodule(owner_name), new.get_submodule(owner_name)
    if isinstance(old_mod, o3.TensorProduct | o3.Linear):
        axis = 1 if isinstance(old_mod, o3.TensorProduct) else 0
        chunks, start = [], 0
        for ins_old, ins_new in zip(old_mod.instructions, new_mod.instructions, strict=True):
            if isinstance(old_mod, o3.TensorProduct) and not ins_old.has_weight:
                continue
            size = int(np.prod(ins_old.path_shape))
            w = value[start : start + size].reshape(ins_old.path_shape)
            start += size
            w = _fold_axis(w, axis, fold)
            chunks.append((w * (ins_old.path_weight / ins_new.path_weight)).reshape(-1))
        return torch.cat(chunks)
    if "symmetric_contractions" in key:
        return _fold_axis(value, 0, fold)
    raise ModelError(f"cannot map the per-species weight {key} to mace's layout")


def _member_module(committee: Any, m: int, idx: list[int], dtype: torch.dtype) -> torch.nn.Module:
    model = committee.model
    pairs = committee.species.pairs
    numbers = [pairs[i][0] for i in idx]
    fold = committee.species.attributes()[idx].double()
    e0 = model.e0.detach().double().cpu().numpy()[idx]
    with _default_dtype(torch.float64):
        new = _build(model.hyper, numbers, e0, float(model.scale), float(model.shift))
    backbone = model.backbones[0 if model.mode == "shared" else m]
    source = {k: v.detach().cpu().double() for k, v in backbone.state_dict().items()}
    source.update({k: v.detach().cpu().double() for k, v in model.heads[m].state_dict().items()})
    state = new.state_dict()
    for key, target in state.items():
        if key.startswith(_OWN_KEYS):
            continue
        if key not in source:
            raise ModelError(f"member {m} has no weight {key} that mace's module needs")
        value = source[key]
        if value.shape != target.shape:
            value = _slice(key, value, backbone, new, fold)
        state[key] = value.to(target.dtype)
    new.load_state_dict(state)
    return new.to(dtype).eval()


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads((path / "committee.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is not a committee directory (no committee.json)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path / 'committee.json'} is not valid JSON: {exc}") from None
    return meta


def _state_species(
    committee: Any, charge: int, multiplicity: int | None
) -> tuple[list[int], int | None]:
    """Species indices of one charge and spin state, and the multiplicity chosen.

    Raises:
        InputError: the multiplicity is not covered, or none is given where several are.
    """
    keys = committee.species.keys
    mults = sorted({m for _, q, m in keys if q == charge})
    if committee.species.spin_aware:
        if multiplicity is None:
            if len(mults) > 1:
                raise InputError(
                    f"the committee covers multiplicities {mults} at charge {charge}: "
                    "choose one with --multiplicity"
                )
            multiplicity = mults[0]
        if multiplicity not in mults:
            raise InputError(
                f"the committee covers multiplicities {mults} at charge {charge}, "
                f"not {multiplicity}"
            )
    else:
        multiplicity = mults[0]  # spin-blind: the one (placeholder) multiplicity
    idx = [i for i, (_, q, m) in enumerate(keys) if q == charge and m == multiplicity]
    return idx, multiplicity


def export_mace(
    committee_dir: str | Path,
    out_dir: str | Path,
    *,
    charge: int | None = None,
    multiplicity: int | None = None,
    dtype: str = "float64",
) -> list[Path]:
    """Write each member of a MACE committee as ``member_<m>.model`` in ``out_dir``.

    Args:
        committee_dir: A committee saved by ``CommitteeCalculator.save``.
        out_dir: Folder for the model files (created if needed).
        charge: Total charge whose node types to export; needed when the committee
            covers several charges.
        multiplicity: Spin multiplicity to export; needed when a spin-aware committee
            covers several at that charge.
        dtype: ``"float64"`` or ``"float32"`` (in float32 the E0s are rounded as well).

    Returns:
        The written paths, one per member.

    Raises:
        InputError: not a committee directory, a SchNet committee, a charge or multiplicity
            the committee does not cover (or none given when it covers several), an
            unknown dtype.
    """
    from pal_atoms.calculators import CommitteeCalculator
    from pal_atoms.calculators.device import resolve_dtype
    from pal_atoms.core.compat import import_mace, keep_torch_load_safe

    path = Path(committee_dir)
    if not path.is_dir():
        raise InputError(f"committee directory {path} does not exist")
    try:
        torch_dtype = resolve_dtype(dtype)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    meta = _read_meta(path)
    backend = str(meta.get("backend"))
    if backend != "mace":
        name = {"schnet": "SchNet"}.get(backend, backend)
        raise InputError(
            f"export to mace format needs MACE members; {name} export is not supported"
        )
    if int(meta.get("n_states", 1)) > 1:
        raise InputError(
            f"the committee predicts {meta['n_states']} electronic states; a mace model file "
            "holds one energy surface (load the committee with CommitteeCalculator.load)"
        )
    try:
        charges = sorted({int(entry[1]) for entry in meta["species"]})
    except (KeyError, TypeError, ValueError, IndexError):
        raise InputError(f"{path / 'committee.json'} lists no species") from None
    if charge is None:
        if len(charges) > 1:
            raise InputError(f"the committee covers charges {charges}: choose one with --charge")
        charge = charges[0]
    if charge not in charges:
        raise InputError(f"the committee covers charges {charges}, not {charge}")
    committee = CommitteeCalculator.load(path, device="cpu")
    idx, multiplicity = _state_species(committee, charge, multiplicity)
    import_mace()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for m in range(committee.n_members):
        with keep_torch_load_safe():  # building mace modules may import more of mace
            module = _member_module(committee, m, idx, torch_dtype)
        target = out / f"member_{m}.model"
        torch.save(module, target)
        written.append(target)
    logger.info(
        "exported %d mace members (charge %d, multiplicity %s) to %s",
        len(written),
        charge,
        multiplicity if committee.species.spin_aware else "any",
        out,
    )
    return written
