"""Save and load committees: state dicts (``weights.pt``) plus JSON metadata.

Layout of a committee directory::

    committee.json   format version, pal-atoms version, backend, mode, n_members,
                     n_states (absent before 0.x: 1), dtype,
                     species [(Z, charge, multiplicity), ...] (pairs before 0.x: spin-blind),
                     species_encoding (absent: joint), hyperparameters, E0s (eV), scale, shift,
                     training history
    weights.pt       the model's state dict (tensors only; loaded with weights_only=True)

Nothing is pickled, so loading a committee never runs code from the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import pal_atoms
from pal_atoms.core.compat import torch_load
from pal_atoms.core.errors import ModelError

from .model import CommitteeModel
from .registry import get_backend
from .species import SpeciesTable

if TYPE_CHECKING:
    from .committee import CommitteeCalculator

__all__ = ["FORMAT_VERSION", "load_committee", "save_committee"]

logger = logging.getLogger(__name__)

#: Version of the on-disk layout.
FORMAT_VERSION = 1
_META = "committee.json"
_WEIGHTS = "weights.pt"


def save_committee(committee: CommitteeCalculator, directory: str | Path) -> Path:
    """Write ``committee`` to ``directory`` (created if needed); returns the directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model = committee.model
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "pal_atoms_version": pal_atoms.__version__,
        "torch_version": torch.__version__,
        "backend": model.backend.name,
        "mode": model.mode,
        "n_members": model.n_members,
        "n_states": model.n_states,
        "dtype": str(committee.dtype).removeprefix("torch."),
        "species": [list(k) for k in committee.species.keys],
        "species_encoding": committee.species.encoding.value,
        "cutoff_A": committee.cutoff,
        "hyperparameters": model.hyper,
        "e0_eV": {
            ":".join(str(v) for v in key): float(e)
            for key, e in zip(committee.species.keys, model.e0.tolist(), strict=True)
        },
        "scale": float(model.scale),
        "shift": float(model.shift),
        **dict(committee.metadata),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path / (_WEIGHTS + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path / _WEIGHTS)
    (path / _META).write_text(json.dumps(meta, indent=1, default=str))
    logger.info("saved %s committee (%d members) to %s", meta["backend"], meta["n_members"], path)
    return path


def load_committee(
    cls: type[CommitteeCalculator], directory: str | Path, *, device: torch.device
) -> CommitteeCalculator:
    """Rebuild a committee saved by :func:`save_committee` on ``device``.

    Raises:
        ModelError: the directory is missing files, or they do not fit together.
    """
    path = Path(directory)
    try:
        meta = json.loads((path / _META).read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is not a committee directory (no {_META})") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path / _META} is not valid JSON: {exc}") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(
            f"{path} was written by a newer pal-atoms ({meta.get('pal_atoms_version')}); "
            f"format {meta['format_version']} > {FORMAT_VERSION}"
        )
    try:
        species = SpeciesTable.from_metadata(meta["species"], meta.get("species_encoding", "joint"))
        backend = get_backend(meta["backend"])
        model = CommitteeModel(
            backend,
            len(species),
            meta["hyperparameters"],
            int(meta["n_members"]),
            mode=meta["mode"],
            seed=int(meta.get("seed", 0)),
            n_states=int(meta.get("n_states", 1)),
            node_attributes=species.attributes(),
        )
        model.to(getattr(torch, meta["dtype"]))
        model.load_state_dict(torch_load(path / _WEIGHTS))
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        raise ModelError(f"cannot load committee from {path}: {exc}") from exc
    keep = {"seed", "history", "e0_fitted", "calibration"}
    metadata = {k: v for k, v in meta.items() if k in keep}
    return cls(model, species, device=device, metadata=metadata)
