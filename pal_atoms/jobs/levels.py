"""The second oracle level of ``pal-atoms reaction``: which structures, and how to learn them.

After the active-learning loop on the cheap oracle, the expensive one labels
``high_budget`` structures that matter most for a barrier: the highest image of the
reaction path (energies from the cheap oracle) and its first image (the barrier's two
ends), then further path images and the stored cheap-level structures on which the
committee is least certain. Its labels go to their own store (``labels_high.h5``, with the
expensive oracle's provenance), and the committee learns that level from them in one of
two ways (:class:`HighLevelLearning`), measured in ``bench/two_levels.py``.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.store import LabelStore

__all__ = ["HighLevelLearning", "label_high", "learn_high", "select_high"]

logger = logging.getLogger(__name__)


class HighLevelLearning(str, enum.Enum):
    """How the committee learns the expensive level from few labels."""

    #: Train the cheap-level committee further on the expensive labels (E0s refitted):
    #: a plain committee at the expensive level, usable without the cheap oracle.
    FINE_TUNE = "fine-tune"
    #: Train a committee on expensive minus cheap and predict cheap + correction
    #: (:class:`~pal_atoms.calculators.DeltaCalculator`): needs the cheap oracle at use.
    DELTA = "delta"


def select_high(
    committee: Any,
    paths: Sequence[Sequence[Atoms]],
    pool: Sequence[Atoms],
    budget: int,
    *,
    exclude: Sequence[Atoms] = (),
) -> list[Atoms]:
    """Up to ``budget`` structures for the expensive oracle, most important first.

    Path images come first: the highest image of each path (energy relative to the
    path's first image, so paths of different systems compare), then each path's first
    image, then the other images, highest first. The first image is the barrier's
    reference (a barrier is the highest image less the first), so both ends of that
    difference carry an expensive label. Path images fill
    ``max(ceil(budget / 2), 2 * len(paths))`` of the slots (no more than there are
    images); the rest go to the structures of ``pool`` with the largest committee
    ``max_force_std``, and slots that the pool cannot fill go back to the remaining
    path images.

    Args:
        committee: The cheap-level committee (``predict_batch``).
        paths: Reaction paths (:func:`~pal_atoms.dynamics.transfer_path`) with
            ``info["energy"]`` (eV) per image; a non-finite energy ranks lowest.
        pool: Cheap-level labelled structures (e.g. the store's ok records).
        budget: Structures to pick.
        exclude: Structures that already have an expensive label (a resumed stage): the
            result is the selection for ``budget`` without them (same numbers, positions
            within 1e-8 Å), at most ``budget - len(exclude)`` structures, so a resumed
            stage labels what the uninterrupted one would have.

    Returns:
        Copies of the picked structures without calculator; ``info["high_source"]`` is
        ``"path"`` or ``"uncertain"``.
    """
    if budget <= 0:
        return []
    ranked = _path_order(paths)
    n_path = min(len(ranked), budget, max(math.ceil(budget / 2), 2 * len(paths)))
    picked = [_plain(im, "path") for im in ranked[:n_path]]
    rest = budget - n_path
    if rest > 0 and pool:
        spread = [float(r["max_force_std"]) for r in committee.predict_batch(list(pool))]
        for i in np.argsort(spread)[::-1][:rest]:
            picked.append(_plain(pool[int(i)], "uncertain"))
    # A pool smaller than its share: the other path images take the slots left.
    picked += [_plain(im, "path") for im in ranked[n_path : n_path + budget - len(picked)]]
    return [a for a in picked if not _seen(a, exclude)][: max(budget - len(exclude), 0)]


def _seen(atoms: Atoms, exclude: Sequence[Atoms]) -> bool:
    return any(
        len(x) == len(atoms)
        and np.array_equal(x.numbers, atoms.numbers)
        and np.allclose(x.positions, atoms.positions, rtol=0.0, atol=1e-8)
        for x in exclude
    )


def _path_order(paths: Sequence[Sequence[Atoms]]) -> list[Atoms]:
    """Images of ``paths``: each path's highest, each path's first, then the rest by energy."""

    def height(im: Atoms, ref: Atoms) -> float:
        e = float(im.info["energy"]) - float(ref.info["energy"])
        return e if math.isfinite(e) else -math.inf

    relative = [[height(im, path[0]) for im in path] for path in paths]
    by_height = sorted(
        ((e, p, i) for p, energies in enumerate(relative) for i, e in enumerate(energies)),
        key=lambda item: -item[0],
    )
    highest = {p: int(np.argmax(energies)) for p, energies in enumerate(relative) if energies}
    key = sorted(((relative[p][i], p, i) for p, i in highest.items()), key=lambda t: -t[0])
    order = [(p, i) for _, p, i in key]
    order += [(p, 0) for _, p, _ in key if highest[p] != 0]
    seen = set(order)
    order += [(p, i) for _, p, i in by_height if (p, i) not in seen]
    return [paths[p][i] for p, i in order]


def _plain(atoms: Atoms, source: str) -> Atoms:
    out = Atoms(atoms.numbers, atoms.positions.copy(), cell=atoms.cell, pbc=atoms.pbc)
    out.info = {k: atoms.info[k] for k in ("charge", "multiplicity", "transfer") if k in atoms.info}
    out.info["high_source"] = source
    return out


def label_high(
    structures: Sequence[Atoms],
    oracle: Any,
    store_path: Path,
    *,
    timeout_s: float | None = None,
) -> list[Atoms]:
    """Label ``structures`` with the expensive ``oracle``; store every record.

    Labels go through the same guard as the loop's, so a structure the oracle refuses
    (atoms too close, an impossible spin) or an exception it raises is a ``failed``
    record, not the end of the run. Failures are stored with their status and left out
    of the result.

    Args:
        structures: Geometries to label (``info["high_source"]`` is stored with them).
        oracle: The expensive oracle.
        store_path: HDF5 store of the expensive level (appended to).
        timeout_s: Kill a label after this many s (in a child process); ``None``: no limit.

    Returns:
        The ok labels as structures with a calculator holding energy and forces.
    """
    from pal_atoms.oracles import label
    from pal_atoms.workflow.guards import label_guarded

    ok = []
    with LabelStore(store_path) as store:
        for i, atoms in enumerate(structures):
            lab = label_guarded(
                label, atoms, oracle, timeout_s=timeout_s, isolate=timeout_s is not None
            )
            store.append_label(lab)  # info["high_source"] goes with the record
            logger.info(
                "expensive label %d/%d (%s): %s in %.1f s",
                i + 1, len(structures), atoms.info.get("high_source", "?"),
                lab.status.value, lab.wall_time_s,
            )  # fmt: skip
            if lab.ok:
                ok.append(lab.to_atoms())
    return ok


def stored_high(store_path: Path) -> list[Atoms]:
    """The ok expensive labels a previous attempt stored (none if no store)."""
    if not store_path.exists():
        return []
    with LabelStore(store_path, mode="r") as store:
        return list(store.read(status="ok"))


def learn_high(
    how: HighLevelLearning,
    labels: Sequence[Atoms],
    *,
    cheap_committee_dir: Path,
    out_dir: Path,
    cheap_oracle: Any,
    steps: int,
    seed: int,
    device: str | None,
) -> Any:
    """A calculator at the expensive level, learnt from ``labels``; saved in ``out_dir``.

    Args:
        how: Fine-tuning or a Δ model.
        labels: Expensive labels (structures with a calculator).
        cheap_committee_dir: The cheap-level committee (fine-tuned from, or the Δ model's
            architecture).
        out_dir: Folder for the expensive-level committee.
        cheap_oracle: The cheap oracle (Δ: the base of the prediction).
        steps: Optimizer steps.
        seed: Seed of the training.
        device: Torch device.

    Returns:
        The committee (fine-tune) or a :class:`~pal_atoms.calculators.DeltaCalculator`.
    """
    from pal_atoms.calculators import (
        CommitteeCalculator,
        CommitteeTrainer,
        DeltaCalculator,
        TrainerSettings,
        delta_labels,
    )

    committee = CommitteeCalculator.load(cheap_committee_dir, device=device)
    data = list(labels)
    delta = how is HighLevelLearning.DELTA
    if delta:
        data = delta_labels(data, cheap_oracle)
    settings = TrainerSettings(
        max_steps=steps,
        validation_fraction=0.0,
        refit_e0=True,
        seed=seed,
        # Δ: the same architecture with fresh weights (the correction is another function).
        reinitialise=delta,
    )
    CommitteeTrainer(committee, settings).train(data)
    committee.save(out_dir)
    if delta:
        return DeltaCalculator(cheap_oracle, committee)
    return committee
