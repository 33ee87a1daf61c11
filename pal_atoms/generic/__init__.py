"""The five kernels for any surrogate model, not only interatomic potentials.

A sample is a named set of NumPy arrays with a declared schema
(:class:`~pal_atoms.core.samples.Schema`); a committee is an :class:`Ensemble` of torch
modules from a factory; an oracle is a :class:`FunctionOracle` around any callable (or a
program it runs); generators are a :class:`ParticleSwarm` on the committee and plain
:class:`RandomSampler` / :class:`LatinHypercube` samplers. They plug into the same
:class:`~pal_atoms.workflow.ActiveLearning` as the atomistic kernels, in one process and
under MPI, with the same stop rules, failure statuses, resume and metrics; labels go to a
:class:`~pal_atoms.store.sample_store.SampleStore`.

Example:
    >>> from pal_atoms.generic import Ensemble, FunctionOracle, ParticleSwarm  # doctest: +SKIP
    >>> from pal_atoms.workflow import ActiveLearning
    >>> al = ActiveLearning(
    ...     committee=Ensemble(make_model, members=4, inputs={"x": (2,)}, outputs={"y": ()}),
    ...     oracle=FunctionOracle(lambda s: {"y": branin(s["x"])}),
    ...     generators=[ParticleSwarm(bounds=[(-5, 10), (0, 15)], objective="y")],
    ...     store="run/labels.h5", run_dir="run")
    >>> summary = al.run()
"""

from __future__ import annotations

from typing import Any

from pal_atoms.core.samples import Sample, SampleLabel, Schema
from pal_atoms.generic.oracle import FunctionOracle, label_sample
from pal_atoms.generic.swarm import LatinHypercube, ParticleSwarm, RandomSampler

__all__ = [
    "Ensemble",
    "FunctionOracle",
    "LatinHypercube",
    "ParticleSwarm",
    "Prediction",
    "RandomSampler",
    "Sample",
    "SampleLabel",
    "SampleStore",
    "Schema",
    "TrainingSettings",
    "label_sample",
    "mlp",
    "raster_cnn",
]


def __getattr__(name: str) -> Any:
    # torch is imported only by what needs it: an oracle worker unpickling a
    # FunctionOracle imports this package and must stay light.
    if name in ("Ensemble", "Prediction"):
        from pal_atoms.generic import ensemble

        return getattr(ensemble, name)
    if name == "TrainingSettings":
        from pal_atoms.generic.training import TrainingSettings

        return TrainingSettings
    if name in ("mlp", "raster_cnn"):
        from pal_atoms.generic import models

        return getattr(models, name)
    if name == "SampleStore":
        from pal_atoms.store.sample_store import SampleStore

        return SampleStore
    raise AttributeError(name)
