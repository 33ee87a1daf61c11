"""User code run guarded, the same way in the serial loop and on MPI ranks.

:func:`label_guarded` calls the labelling function: an exception becomes a ``failed``
label with the error text, never a lost structure or a dead oracle rank.

:class:`GuardedGenerator` steps a generator. User code (a generator, the ASE dynamics
inside it) may raise. A recoverable error
(:class:`~pal_atoms.core.errors.PalAtomsError`, arithmetic, value or runtime errors: an
exploding geometry, a failed prediction, a neighbour-list overflow) restarts that
generator from the state it had when the run started; anything else is a bug and
propagates. Both modes count steps the same way: a step is one event other than
``FINISHED``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from ase import Atoms

from pal_atoms.core.errors import PalAtomsError
from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.dynamics import Action

__all__ = ["RECOVERABLE", "GuardedGenerator", "StepOutcome", "label_guarded"]

logger = logging.getLogger(__name__)

#: Exceptions of a generator step that restart the generator instead of ending the run.
RECOVERABLE: tuple[type[BaseException], ...] = (
    PalAtomsError,
    ArithmeticError,
    ValueError,
    RuntimeError,
)


class StepOutcome(enum.Enum):
    """What one guarded step did."""

    STEPPED = "stepped"
    RESTARTED = "restarted"  # the step raised a recoverable error; back to the start
    FINISHED = "finished"  # the generator is done; further steps do nothing


class GuardedGenerator:
    """A generator stepped under the run's error policy (see the module docstring).

    Args:
        generator: A :class:`~pal_atoms.dynamics.Generator`.
        client: Its :class:`~pal_atoms.core.protocols.PredictionClient`.

    Attributes:
        steps: Steps taken (every event the generator yielded, the last one included).
        restarts: Restarts after a recoverable error.
        finished: Whether the generator is done.
    """

    def __init__(self, generator: Any, client: Any):
        self.generator = generator
        self.client = client
        self._initial = generator.state()
        self._iter = generator.irun(client)
        self.steps = 0
        self.restarts = 0
        self.finished = False

    @property
    def generator_id(self) -> int:
        """The generator's id."""
        return int(self.generator.generator_id)

    def step(self) -> StepOutcome:
        """Advance the generator by one event; restart it after a recoverable error."""
        if self.finished:
            return StepOutcome.FINISHED
        try:
            event = next(self._iter)
        except StopIteration:
            self.finished = True
            return StepOutcome.FINISHED
        except RECOVERABLE as exc:
            logger.warning(
                "generator %d failed (%s: %s); restarting it",
                self.generator_id,
                type(exc).__name__,
                exc,
            )
            self.generator.restore(self._initial)
            self._iter = self.generator.irun(self.client)
            self.restarts += 1
            return StepOutcome.RESTARTED
        self.steps += 1  # a step that ends the generator (n_steps reached) is a step too
        if getattr(event, "action", None) is Action.FINISHED:
            self.finished = True
            return StepOutcome.FINISHED
        return StepOutcome.STEPPED


def label_guarded(
    label_fn: Callable[..., Label],
    atoms: Atoms,
    oracle: Any,
    *,
    timeout_s: float | None,
    isolate: bool,
) -> Label:
    """``label_fn(atoms, oracle, timeout_s=..., isolate=...)``; an exception is a failed label.

    Oracle failures are normally labels with a status already (the labelling function
    records them); this catches what escapes it (invalid input found by the oracle's
    checks, a bug in a custom labelling function).
    """
    t0 = time.perf_counter()
    try:
        return label_fn(atoms, oracle, timeout_s=timeout_s, isolate=isolate)
    except Exception as exc:
        logger.warning("labelling raised %s: %s", type(exc).__name__, exc)
        if not isinstance(atoms, Atoms):  # a generic sample
            from pal_atoms.core.samples import SampleLabel

            return SampleLabel(
                sample=atoms,
                status=LabelStatus.FAILED,
                error=f"{type(exc).__name__}: {exc}",
                wall_time_s=time.perf_counter() - t0,
                oracle=getattr(oracle, "name", ""),
                method=getattr(oracle, "method", ""),
            )
        return Label(
            atoms=atoms,
            status=LabelStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            wall_time_s=time.perf_counter() - t0,
            oracle=getattr(oracle, "name", ""),
            method=getattr(oracle, "method", ""),
        )
