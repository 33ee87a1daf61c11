"""What happens when trained weights reach the prediction side (both transports).

:func:`apply_published` is called by the single-process loop and by every MPI prediction
rank with the same arguments, so calibration, checkpoints and the held-out error are
computed once, in one place: load the members' weights, refit the calibration of the
force spread on the validation labels, save the committee, measure the held-out error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from pal_atoms.workflow.metrics import force_mae, prediction_mae

__all__ = ["MIN_CALIBRATION_LABELS", "apply_published"]

logger = logging.getLogger(__name__)

#: Validation labels needed before the calibration is refitted (fewer: the scale stays).
MIN_CALIBRATION_LABELS = 4


def apply_published(
    committee: Any,
    weights: Sequence[dict[str, Any]],
    members: Sequence[int],
    *,
    validation: Sequence[Atoms] = (),
    checkpoint: Path | None = None,
    test_set: Sequence[Atoms] = (),
) -> dict[str, Any]:
    """Load published weights; calibrate, checkpoint and measure the committee.

    Args:
        committee: The serving committee (``set_weights``, ``predict_batch``, ``save``).
        weights: State dicts of ``members``.
        members: Member indices the weights belong to.
        validation: Labels the trainers hold out; the calibration is fitted on them.
        checkpoint: Save the committee here (``None``: do not save).
        test_set: Held-out labelled frames for the force MAE (empty: skip).

    Returns:
        ``{"members", "calibration"?, "val_force_mae"?, "path"?, "test_force_mae"?}``:
        calibration as :meth:`ForceCalibration.as_dict`, MAEs in eV/Å.
    """
    from pal_atoms.calculators.calibration import fit_force_calibration, prediction_errors

    committee.set_weights(list(weights), members=list(members))
    info: dict[str, Any] = {"members": [int(m) for m in members]}
    if len(validation) >= MIN_CALIBRATION_LABELS and hasattr(committee, "set_calibration"):
        # One prediction of the validation labels serves both numbers: the calibration
        # scales the spread only, never the mean forces the MAE is taken of.
        preds = committee.predict_batch(list(validation))
        errors, stds = prediction_errors(preds, validation, raw=True)
        calibration = fit_force_calibration(errors, stds)
        committee.set_calibration(calibration)
        info["calibration"] = calibration.as_dict()
        info["val_force_mae"] = prediction_mae(preds, validation)  # per component
    if checkpoint is not None:
        committee.save(checkpoint)
        info["path"] = str(checkpoint)
    if test_set:
        info["test_force_mae"] = force_mae(committee, list(test_set))
    logger.debug("published members %s: %s", list(members), _brief(info))
    return info


def _brief(info: dict[str, Any]) -> str:
    parts = []
    for key in ("val_force_mae", "test_force_mae"):
        if key in info:
            parts.append(f"{key} {info[key]:.4f}")
    if "calibration" in info:
        parts.append(f"scale {info['calibration']['force_std_scale']:.3g}")
    return ", ".join(parts) or "no validation labels yet"
