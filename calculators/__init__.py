"""Committee MLP calculators with uncertainty (MACE, SchNet).

Public API: :class:`CommitteeCalculator` (ASE calculator, ``create``/``load``/``save``/
``predict_batch``/``get_weights``/``set_weights``), :class:`CommitteeTrainer` with
:class:`TrainerSettings` (rounds), :class:`StreamingTrainer` with
:class:`StreamSettings` (continuous training), the calibration of the spread
(:func:`fit_force_calibration`), and the backend interface (:class:`Backend`,
:func:`register_backend`).
"""

from __future__ import annotations

from .backend import BackboneInput, Backend, register_backend
from .calibration import ForceCalibration, calibration_curve, fit_force_calibration
from .committee import CommitteeCalculator
from .delta import DeltaCalculator, delta_labels
from .registry import get_backend
from .species import SpeciesEncoding, SpeciesTable
from .stream import Publish, StreamingTrainer, StreamSettings, is_validation
from .training import CommitteeTrainer, TrainerSettings

__all__ = [
    "BackboneInput",
    "Backend",
    "CommitteeCalculator",
    "CommitteeTrainer",
    "DeltaCalculator",
    "ForceCalibration",
    "Publish",
    "SpeciesEncoding",
    "SpeciesTable",
    "StreamSettings",
    "StreamingTrainer",
    "TrainerSettings",
    "calibration_curve",
    "delta_labels",
    "fit_force_calibration",
    "get_backend",
    "is_validation",
    "register_backend",
]


def __getattr__(name: str) -> object:
    # The on-the-fly calculator is a small controller (selection, store, oracle, trainer),
    # so it lives in the workflow layer; the old name keeps working.
    if name == "OnTheFlyCalculator":
        from pal_atoms.workflow.on_the_fly import OnTheFlyCalculator

        return OnTheFlyCalculator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
