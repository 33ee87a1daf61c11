"""Committee MLP calculators with uncertainty (MACE, SchNet).

Public API: :class:`CommitteeCalculator` (ASE calculator, ``create``/``load``/``save``/
``predict_batch``/``get_weights``/``set_weights``), :class:`CommitteeTrainer` with
:class:`TrainerSettings`, and the backend interface (:class:`Backend`,
:func:`register_backend`).
"""

from __future__ import annotations

from .backend import BackboneInput, Backend, get_backend, register_backend
from .committee import CommitteeCalculator
from .graph import SpeciesTable
from .training import CommitteeTrainer, TrainerSettings

__all__ = [
    "BackboneInput",
    "Backend",
    "CommitteeCalculator",
    "CommitteeTrainer",
    "SpeciesTable",
    "TrainerSettings",
    "get_backend",
    "register_backend",
]
from .on_the_fly import OnTheFlyCalculator as OnTheFlyCalculator
