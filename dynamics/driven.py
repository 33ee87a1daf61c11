"""Any unmodified ASE dynamics or optimizer as a generator.

:class:`DriverGenerator` steps an ASE object's own ``irun`` and checks the verdicts of all
geometries it visited in that step (an optimizer may visit several: line searches,
Hessian-vector products, NEB images). :class:`DynamicsGenerator` takes a factory for
any ASE dynamics; the Sella and NEB generators build on the same base.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterator
from typing import Any

from ase import Atoms
from ase.md.md import MolecularDynamics

from pal_atoms.core.protocols import PredictionClient, Verdict

from .base import Action, Generator, GeneratorEvent, PatiencePolicy, check_geometry
from .forwarding import ForwardingCalculator, UnphysicalStateError, worst_verdict

__all__ = ["DriverGenerator", "DynamicsGenerator"]

logger = logging.getLogger(__name__)


class DriverGenerator(Generator):
    """Base of generators that drive an ASE optimizer / dynamics through its ``irun``.

    An *attempt* starts from :meth:`_reset` and runs the driver until it converges,
    exhausts ``max_iterations``, or the patience policy (or an unphysical geometry) asks
    for a restart. A restart starts a new attempt; after ``max_restarts`` restarts the
    generator finishes unconverged.

    Args:
        generator_id: Id of this generator.
        fmax_eV_A: Force convergence threshold in eV/Å passed to the driver's ``irun``.
        max_iterations: Driver steps per attempt.
        patience: Consecutive uncertain steps tolerated.
        max_restarts: Restarts allowed before the generator gives up.
        min_distance_A: Closest allowed approach of two atoms in Å (``None``: off).
        max_distance_A: Fragment criterion in Å (``None``: off).

    Attributes:
        converged: True when the last attempt converged.
        attempt: Index of the current attempt (0 for the first).
    """

    def __init__(
        self,
        *,
        generator_id: int = 0,
        fmax_eV_A: float = 0.05,
        max_iterations: int = 200,
        patience: int = 5,
        max_restarts: int = 3,
        min_distance_A: float | None = 0.5,
        max_distance_A: float | None = None,
    ) -> None:
        super().__init__(generator_id=generator_id)
        if not fmax_eV_A > 0:
            raise ValueError(f"fmax_eV_A must be > 0, got {fmax_eV_A}")
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.fmax_eV_A = float(fmax_eV_A)
        self.max_iterations = int(max_iterations)
        self.max_restarts = int(max_restarts)
        self.min_distance_A = min_distance_A
        self.max_distance_A = max_distance_A
        self.policy = PatiencePolicy(patience=patience)
        self.converged = False
        self.attempt = 0
        self._calc: ForwardingCalculator | None = None
        self._iter: Iterator[bool] | None = None
        self._driver: Any = None
        self._needs_reset = True

    @abc.abstractmethod
    def _reset(self, attempt: int) -> None:
        """Set up the starting geometry of ``attempt`` (0 for the first)."""

    @abc.abstractmethod
    def _attach(self, calc: ForwardingCalculator) -> None:
        """Attach ``calc`` to every structure the driver evaluates."""

    @abc.abstractmethod
    def _make_driver(self) -> Any:
        """Build the ASE dynamics/optimizer (rank-local: serial ``comm``, no log file)."""

    def _energy(self) -> float | None:
        """Energy in eV to report in events (``None`` if not meaningful)."""
        calc = self._calc
        return float(calc.results["energy"]) if calc is not None and calc.results else None

    def _guard(self, atoms: Atoms) -> None:
        check_geometry(
            atoms, min_distance_A=self.min_distance_A, max_distance_A=self.max_distance_A
        )

    def _start_attempt(self, client: PredictionClient) -> ForwardingCalculator:
        old = self._calc
        calc = ForwardingCalculator(client, generator_id=self.generator_id, guard=self._guard)
        if old is not None:
            calc.step = old.step
        self._calc = calc
        if self._needs_reset:
            self._reset(self.attempt)
            self._needs_reset = False
        self._attach(calc)
        self._driver = driver = self._make_driver()
        if isinstance(driver, MolecularDynamics):  # MD has no force criterion
            self._iter = iter(driver.irun(steps=self.max_iterations))
        else:
            self._iter = iter(driver.irun(fmax=self.fmax_eV_A, steps=self.max_iterations))
        return calc

    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """Drive the optimizer, one event per driver step (see :meth:`Generator.irun`)."""
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            calc = self._calc
            if calc is None or self._iter is None or calc.client is not client:
                calc = self._start_attempt(client)
            assert self._iter is not None
            calls = calc.step
            calc.pop_verdicts()
            self.step += 1
            problem, converged, exhausted = "", False, False
            try:
                converged = bool(next(self._iter))
            except StopIteration:
                exhausted = True
            except UnphysicalStateError as exc:
                problem = f"unphysical state: {exc}"
            verdict = worst_verdict(calc.pop_verdicts())
            n_eval = calc.step - calls
            taken += 1
            if not problem and verdict is not None:
                problem = self.policy.judge(verdict)
            if not problem and (
                exhausted or (not converged and self._driver.nsteps >= self.max_iterations)
            ):
                problem = f"not converged in {self.max_iterations} iterations"
            if problem:
                yield self._restart(problem, verdict, n_eval)
            elif converged:
                self.converged, self.done = True, True
                logger.info(
                    "generator %d converged at step %d (attempt %d)",
                    self.generator_id,
                    self.step,
                    self.attempt,
                )
                yield self._event(verdict, Action.FINISHED, "converged", n_eval)
            else:
                yield self._event(verdict, Action.CONTINUE, "", n_eval)

    def _restart(self, reason: str, verdict: Verdict | None, n_eval: int) -> GeneratorEvent:
        self.policy.n_uncertain = 0
        self._iter = None  # next step starts a new attempt from _reset
        self._needs_reset = True
        if self.n_restarts >= self.max_restarts:
            self.done = True
            logger.info(
                "generator %d gives up at step %d: %s (%d restarts used)",
                self.generator_id,
                self.step,
                reason,
                self.n_restarts,
            )
            return self._event(
                verdict,
                Action.FINISHED,
                f"{reason}; restart budget ({self.max_restarts}) used up",
                n_eval,
            )
        self.n_restarts += 1
        self.attempt += 1
        logger.info(
            "generator %d: restart %d at step %d: %s",
            self.generator_id,
            self.n_restarts,
            self.step,
            reason,
        )
        return self._event(verdict, Action.RESTART, reason, n_eval)

    def _event(
        self, verdict: Verdict | None, action: Action, reason: str, n_eval: int
    ) -> GeneratorEvent:
        return GeneratorEvent(
            generator_id=self.generator_id,
            step=self.step,
            verdict=verdict,
            action=action,
            reason=reason,
            n_evaluations=n_eval,
            energy=self._energy(),
        )

    def _driver_state(self) -> dict[str, Any]:
        return {
            **self._base_state(),
            "attempt": self.attempt,
            "converged": self.converged,
            "n_uncertain": self.policy.n_uncertain,
        }

    def _restore_driver(self, state: dict[str, Any]) -> None:
        self._restore_base(state)
        self.attempt = int(state["attempt"])
        self.converged = bool(state["converged"])
        self.policy.n_uncertain = int(state["n_uncertain"])
        self._iter = None  # the optimizer's memory (Hessian, ...) is not kept
        self._needs_reset = False  # go on from the restored geometry


class DynamicsGenerator(DriverGenerator):
    """Wrap any ASE dynamics/optimizer factory as a generator.

    Example::

        gen = DynamicsGenerator(atoms, lambda a: BFGS(a, logfile=None, comm=local_comm()))

    Args:
        atoms: Starting structure (copied); every attempt starts from it.
        make_dynamics: ``make_dynamics(atoms) -> dynamics``; called once per attempt with
            the generator's atoms (calculator attached). Pass ``comm=local_comm()`` to
            keep it rank-local.
        **kwargs: Keyword arguments of :class:`DriverGenerator`.
    """

    def __init__(self, atoms: Atoms, make_dynamics: Callable[[Atoms], Any], **kwargs: Any):
        super().__init__(**kwargs)
        if not callable(make_dynamics):
            raise ValueError("make_dynamics must be callable: atoms -> ASE dynamics")
        self.initial = atoms.copy()
        self.initial.calc = None
        self.atoms = self.initial.copy()
        self.make_dynamics = make_dynamics

    def _reset(self, attempt: int) -> None:
        self.atoms = self.initial.copy()

    def _attach(self, calc: ForwardingCalculator) -> None:
        self.atoms.calc = calc

    def _make_driver(self) -> Any:
        return self.make_dynamics(self.atoms)

    def state(self) -> dict[str, Any]:
        """Counters and the current positions (Å)."""
        return {**self._driver_state(), "positions": self.atoms.positions.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume; the next attempt restarts the dynamics from the stored positions."""
        self._restore_driver(state)
        self.atoms.positions = state["positions"]
