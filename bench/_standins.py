"""Zero-cost stand-ins for benchmarks of the MPI machinery (no model, no physics, no QM).

Stable API, shared by ``bench/messaging.py``, ``bench/oracle_utilisation.py`` and
``bench/parallel_vs_serial.py``:

- :class:`ZeroCommittee` — ``predict_batch`` returns the keys the real
  :class:`~pal_atoms.calculators.CommitteeCalculator` returns (zero forces), with a
  ``max_force_std`` drawn uniformly from [0, 1) so that
  :func:`selection_for_fraction` sends a chosen fraction of predictions to the oracles;
  optionally sleeps ``sleep_ms`` per call (a model of fixed cost).
- :class:`SleepCalculator` / :func:`sleep_oracle` — an ASE calculator that sleeps and
  returns fixed energy and forces, wrapped as a real oracle (labels go through
  :func:`pal_atoms.oracles.label` and the oracle ranks).
- :class:`TrivialGenerator` — a generator whose step is one ``client.evaluate`` and
  nothing else (measures messaging, not propagation).
- :func:`ethanol` — the 9-atom payload; :func:`md_generators` — real MD generators.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from pal_atoms.dynamics import Action, Generator, GeneratorEvent

from pal_atoms.core.protocols import PredictionClient
from pal_atoms.workflow.selection import TrustWindow

__all__ = [
    "LATENCY_BINS_S",
    "SleepCalculator",
    "TrivialGenerator",
    "ZeroCommittee",
    "ethanol",
    "latency_percentiles",
    "md_generators",
    "selection_for_fraction",
    "sleep_oracle",
    "trivial_generators",
]


#: Upper edges (s) of the latency histogram bins: 1 us to 100 s, 20 bins per decade.
LATENCY_BINS_S = np.logspace(-6, 2, 161)


def latency_percentiles(
    counts: Sequence[int] | np.ndarray, qs: Sequence[float] = (50, 90, 99)
) -> dict[str, float]:
    """Percentiles (s, upper bin edge) of a histogram over :data:`LATENCY_BINS_S`."""
    c = np.asarray(counts, dtype=float)
    total = c.sum()
    edges = np.append(LATENCY_BINS_S, np.inf)
    if total == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    cum = np.cumsum(c) / total
    return {f"p{q:g}": float(edges[np.searchsorted(cum, q / 100)]) for q in qs}


def ethanol() -> Atoms:
    """Ethanol (9 atoms), the payload size of PAL's 89-generator example scale."""
    atoms = molecule("CH3CH2OH")
    atoms.info["charge"] = 0
    return atoms


class ZeroCommittee:
    """Committee stand-in with no model cost.

    Args:
        n_members: Members reported in ``energy_comm`` / ``forces_comm``.
        sleep_ms: Sleep per ``predict_batch`` call in ms (0: none), a fixed-cost model.
        seed: Seed of the ``max_force_std`` draws.
    """

    def __init__(self, n_members: int = 4, *, sleep_ms: float = 0.0, seed: int = 0):
        self.n_members = n_members
        self.sleep_ms = sleep_ms
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.structures = 0

    def predict_batch(self, structures: Sequence[Atoms]) -> list[dict[str, Any]]:
        """One result dict per structure, with the real committee's keys (zero forces)."""
        self.calls += 1
        self.structures += len(structures)
        if self.sleep_ms:
            time.sleep(self.sleep_ms / 1e3)
        uncertainty = self.rng.random(len(structures))
        out = []
        for atoms, u in zip(structures, uncertainty, strict=True):
            n = len(atoms)
            fstd = np.full(n, float(u))
            out.append(
                {
                    "energy": 0.0,
                    "free_energy": 0.0,
                    "forces": np.zeros((n, 3)),
                    "energy_std": float(u),
                    "forces_std": fstd,
                    "max_force_std": float(u),
                    "energy_comm": np.zeros(self.n_members),
                    "forces_comm": np.zeros((self.n_members, n, 3)),
                }
            )
        return out

    # The parts of the committee API the MPI ranks may touch.
    def to(self, device: str = "cpu") -> ZeroCommittee:
        """No-op (no tensors)."""
        return self

    def save(self, path: Any) -> None:
        """No-op (nothing to checkpoint)."""

    def set_weights(self, weights: Any, members: Any = None) -> None:
        """No-op (no weights)."""


def selection_for_fraction(fraction: float) -> TrustWindow:
    """Trust window that marks about ``fraction`` of :class:`ZeroCommittee` predictions
    as uncertain (they go to the oracle queue); none are untrusted.

    Raises:
        ValueError: ``fraction`` outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return TrustWindow(key="max_force_std", lower=1.0 - fraction, upper=2.0)


class SleepCalculator(Calculator):
    """ASE calculator that sleeps ``sleep_ms`` and returns fixed energy and zero forces."""

    implemented_properties = ["energy", "free_energy", "forces"]  # noqa: RUF012 (ASE API)
    default_parameters: dict[str, Any] = {"sleep_ms": 10.0, "energy": -1.0}  # noqa: RUF012

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Sleep, then fill the results."""
        super().calculate(atoms, properties, system_changes)
        time.sleep(float(self.parameters.sleep_ms) / 1e3)
        e = float(self.parameters.energy)
        n = len(self.atoms) if self.atoms is not None else 0
        self.results = {"energy": e, "free_energy": e, "forces": np.zeros((n, 3))}


def sleep_oracle(sleep_ms: float = 10.0) -> Any:
    """:class:`SleepCalculator` as a pal-atoms oracle (name ``sleep``)."""
    from pal_atoms.oracles import Wrapped

    return Wrapped(
        SleepCalculator(sleep_ms=sleep_ms),
        name="sleep",
        method=f"sleep {sleep_ms:g} ms",
        parameters={"sleep_ms": sleep_ms},
    )


class TrivialGenerator(Generator):
    """A generator whose step is one prediction round trip and nothing else.

    Args:
        atoms: The structure sent every step (not modified).
        generator_id: Id of this generator.
        n_steps: Finish after this many steps (``None``: never).
        warmup_steps: Steps left out of the latency histogram (start-up of the job).
    """

    def __init__(
        self,
        atoms: Atoms,
        *,
        generator_id: int = 0,
        n_steps: int | None = None,
        warmup_steps: int = 3,
    ):
        super().__init__(generator_id=generator_id)
        self.atoms = atoms.copy()
        self.n_steps = n_steps
        self.warmup_steps = warmup_steps
        #: Histogram of ``evaluate`` round-trip times over :data:`LATENCY_BINS_S`.
        self.latency_counts = np.zeros(len(LATENCY_BINS_S) + 1, dtype=np.int64)
        self.latency_sum_s = 0.0

    def irun(
        self, client: PredictionClient, max_steps: int | None = None
    ) -> Iterator[GeneratorEvent]:
        """One ``evaluate`` per step; records its latency."""
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            self.step += 1
            taken += 1
            t0 = time.perf_counter()
            results, verdict = client.evaluate(
                self.atoms, generator_id=self.generator_id, step=self.step
            )
            dt = time.perf_counter() - t0
            if self.step > self.warmup_steps:  # the first answers wait for start-up
                self.latency_counts[np.searchsorted(LATENCY_BINS_S, dt)] += 1
                self.latency_sum_s += dt
            finished = self.n_steps is not None and self.step >= self.n_steps
            self.done = finished
            yield GeneratorEvent(
                generator_id=self.generator_id,
                step=self.step,
                verdict=verdict,
                action=Action.FINISHED if finished else Action.CONTINUE,
                n_evaluations=1,
                energy=float(results["energy"]),
            )

    def state(self) -> dict[str, Any]:
        """Counters and the latency histogram (the structure never changes)."""
        return {
            **self._base_state(),
            "n_steps": self.n_steps,
            "latency_counts": self.latency_counts.tolist(),
            "latency_sum_s": self.latency_sum_s,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        self._restore_base(state)
        self.n_steps = state["n_steps"]


def trivial_generators(
    n: int, atoms: Atoms | None = None, n_steps: int | None = None
) -> list[TrivialGenerator]:
    """``n`` trivial generators (ids 0..n-1) on ``atoms`` (default ethanol)."""
    atoms = atoms if atoms is not None else ethanol()
    return [TrivialGenerator(atoms, generator_id=i, n_steps=n_steps) for i in range(n)]


def md_generators(
    n: int, atoms: Atoms | None = None, n_steps: int | None = None, temperature_K: float = 300.0
) -> list[Generator]:
    """``n`` Langevin MD generators on ``atoms`` (default ethanol).

    Fragment and force checks are off: with a :class:`ZeroCommittee` the molecule flies
    apart freely, which is propagation cost without restarts.
    """
    from pal_atoms.dynamics import MDGenerator, MDSettings

    atoms = atoms if atoms is not None else ethanol()
    return [
        MDGenerator(
            atoms,
            generator_id=i,
            settings=MDSettings(
                temperature_K=temperature_K,
                n_steps=n_steps,
                patience=10**9,
                max_distance_A=None,
                min_distance_A=None,
                max_force_eV_A=None,
                seed=i,
            ),
        )
        for i in range(n)
    ]
