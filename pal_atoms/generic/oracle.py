"""Oracles for generic samples: any Python callable, run with the atomistic oracles' rules.

:class:`FunctionOracle` wraps ``fn(sample) -> {output: array}``. :func:`label_sample`
labels one sample and never raises for the oracle's failures: an exception, a missing or
misshapen output, a non-finite value, a hang past ``timeout_s`` or a crash of the child
process becomes a :class:`~pal_atoms.core.samples.SampleLabel` with status ``failed`` or
``timeout`` and the error text; only ``ok`` labels carry values. With a timeout or
``isolate`` the call runs in the same persistent worker process as atomistic oracles
(:func:`~pal_atoms.oracles.worker.shared_worker`), so ``fn`` must be picklable (a
module-level function, not a lambda). An external program is a callable that runs it
(see ``examples/thermofluid``).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pal_atoms.core.errors import ConfigError, InputError, OracleSetupError
from pal_atoms.core.label import LabelStatus
from pal_atoms.core.samples import Sample, SampleLabel, Schema

__all__ = ["FunctionOracle", "SampleOutcome", "label_sample"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SampleOutcome:
    """One attempt of a generic oracle (what a worker process sends back)."""

    status: LabelStatus
    values: dict[str, np.ndarray] | None = None
    error: str = ""
    wall_time_s: float = 0.0


class FunctionOracle:
    """A Python callable as the oracle of a generic run.

    Args:
        fn: ``fn(sample) -> {output name: array-like}``; raising records a failure.
        name: Oracle name (provenance).
        method: Method string (provenance; default the function's name).
        settings: What the label depends on (hashed into the provenance).
    """

    def __init__(
        self,
        fn: Callable[[Sample], Mapping[str, Any]],
        *,
        name: str = "function",
        method: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ):
        if not callable(fn):
            raise ConfigError(f"FunctionOracle needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name
        self.method = method or getattr(fn, "__qualname__", type(fn).__name__)
        self.settings = dict(settings or {})
        self.schema: Schema | None = None

    def bind(self, schema: Schema) -> None:
        """Check every result against ``schema`` (the run's committee calls this)."""
        self.schema = schema

    @property
    def labeller(self) -> Callable[..., SampleLabel]:
        """The run's labelling function for this oracle."""
        return label_sample

    def attempt(self, sample: Sample) -> SampleOutcome:
        """Call ``fn`` once; every failure becomes an outcome with a status."""
        t0 = time.perf_counter()
        try:
            raw = self.fn(sample)
            if not isinstance(raw, Mapping):
                raise TypeError(f"the oracle returned {type(raw).__name__}, not a mapping")
            if self.schema is not None:
                values = self.schema.outputs_of(raw)
            else:
                values = {k: np.array(v, dtype=float) for k, v in raw.items()}
            bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
            if bad:
                raise ValueError(f"non-finite output {bad[0]!r}")
            return SampleOutcome(
                status=LabelStatus.OK, values=values, wall_time_s=time.perf_counter() - t0
            )
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as exc:  # the user's code: every failure is data
            logger.debug("oracle %s: %s\n%s", self.name, exc, traceback.format_exc())
            text = f"{type(exc).__name__}: {exc}".strip()[:4000]
            return SampleOutcome(
                status=LabelStatus.FAILED, error=text, wall_time_s=time.perf_counter() - t0
            )


def label_sample(
    sample: Sample,
    oracle: Any,
    *,
    timeout_s: float | None = None,
    isolate: bool = False,
    worker: Any = None,
) -> SampleLabel:
    """Label one sample (see the module docstring); never raises for oracle failures.

    Args:
        sample: The sample (not modified).
        oracle: A :class:`FunctionOracle` (anything with ``attempt(sample)``, ``name``,
            ``method``, ``settings``).
        timeout_s: Kill the attempt after this many seconds (runs it in a worker).
        isolate: Run in the shared worker process.
        worker: Run in this :class:`~pal_atoms.oracles.worker.OracleWorker`.

    Raises:
        InputError: ``oracle`` is not a generic oracle.
        ConfigError: isolation was asked for and ``fn`` cannot be pickled.
    """
    if not callable(getattr(oracle, "attempt", None)):
        raise InputError(f"{type(oracle).__name__} is not an oracle of generic samples")
    if timeout_s is not None or isolate or worker is not None:
        from pal_atoms.oracles.worker import shared_worker

        runner: Any = worker or shared_worker()  # it runs samples as it runs structures
        try:  # the worker pickles the oracle; a lambda or closure cannot be
            outcome = runner.run_attempt(oracle, sample, timeout_s=timeout_s)
        except OracleSetupError as exc:
            raise ConfigError(
                f"oracle {oracle.name!r} cannot run in a worker process ({exc.__cause__}); "
                "use a module-level function instead of a lambda or closure, or no timeout"
            ) from exc
    else:
        outcome = oracle.attempt(sample)
    ok = outcome.status is LabelStatus.OK
    return SampleLabel(
        sample=sample.copy(),
        status=outcome.status,
        values=getattr(outcome, "values", None) if ok else None,
        error="" if ok else outcome.error,
        wall_time_s=outcome.wall_time_s,
        oracle=oracle.name,
        method=oracle.method,
        settings=dict(oracle.settings),
    )
