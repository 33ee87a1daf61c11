"""Training and the active-learning run for bench/al_vs_random.py.

:class:`FreshTrainer` trains a freshly created committee (same seed, same recipe) on all
labels it is given and copies the weights into the live committee. The learning curve of
either method is then "a fresh committee trained on the first n labels", and inside the
active-learning loop the committee that drives the generators after a round on n labels
is exactly that committee: no label or training step is spent twice.

:func:`active_learning` runs pal-atoms' single-process :class:`ActiveLearning` loop in
stages: bootstrap labels (rattled frames) first, then one loop per curve point, each
ending with a training round on every label so far.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from pal_atoms.calculators import CommitteeCalculator, CommitteeTrainer, TrainerSettings
from pal_atoms.dynamics import MDGenerator, MDSettings, rattle_sample
from pal_atoms.oracles import XTB, label

from pal_atoms.store import LabelStore
from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.selection import RecentQuantile, TrustWindow
from pal_atoms.workflow.settings import WorkflowSettings

logger = logging.getLogger("al_vs_random")


@dataclass
class FreshTrainer:
    """``train(labels)``: a fresh committee trained on ``labels``, copied into ``live``.

    Args:
        make_committee: Builds an untrained committee (same seed every call).
        settings: Training recipe (``TrainerSettings`` defaults plus the seed).
        live: Committee that receives the weights (the one the generators run on).
        on_trained: Called with ``(labels, committee, record)`` after every round.
        min_epochs: The step budget grows with the labels: at least this many passes over
            them (``ceil(n / batch_size)`` steps each), never fewer than
            ``settings.max_steps``. A fixed budget stops improving once the labels outgrow
            it (measured: the 128-label point of an 800-step budget was worse than 64).
    """

    make_committee: Callable[[], CommitteeCalculator]
    settings: TrainerSettings
    live: CommitteeCalculator | None = None
    on_trained: Callable[[list[Atoms], CommitteeCalculator, dict[str, Any]], None] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    min_epochs: int = 0

    def budget(self, n_labels: int) -> int:
        """Optimizer steps for a round on ``n_labels`` labels."""
        per_epoch = math.ceil(n_labels / self.settings.batch_size)
        return max(self.settings.max_steps, self.min_epochs * per_epoch)

    def train(self, labels: Any) -> list[dict[str, Any]]:
        labels = list(labels)
        committee = self.make_committee()
        t0 = time.perf_counter()
        settings = replace(self.settings, max_steps=self.budget(len(labels)))
        history = CommitteeTrainer(committee, settings).train(labels)
        record = {
            "n_labels": len(labels),
            "train_s": round(time.perf_counter() - t0, 2),
            "epochs": len(history),
            "steps": int(history[-1]["step"]) if history else 0,
        }
        self.rounds.append(record)
        if self.live is not None:
            self.live.set_weights(committee.get_weights())
            self.live.metadata["e0_fitted"] = True
        if self.on_trained is not None:
            self.on_trained(labels, committee, record)
        return history


@dataclass(frozen=True)
class ALSettings:
    """How the active-learning method explores and selects.

    Args:
        bootstrap: Rattled frames labelled before the loop (cycling over the frames);
            they count as labels.
        rattle_A, strain: Bootstrap rattle (Å) and strain range (as ``pal-atoms md``).
        t_start, t_end: Temperature ramp of every MD generator (K).
        ramp_steps: Steps of the ramp, then ``t_end`` is held.
        selection: ``"system-quantile"`` (label the top ``1 - quantile`` of the recent
            ``max_force_std`` of each system, :class:`PerSystem`), ``"quantile"`` (the
            same over all systems together) or ``"window"`` (trust window
            ``lower``..``upper``).
        quantile, window, min_history: :class:`RecentQuantile` settings.
        lower, upper: Trust window (eV/Å); ``upper`` also caps the quantile rule (above:
            untrusted, the generator restarts).
        patience: Uncertain steps tolerated before a restart.
        restart: ``"initial"`` (fresh velocities at the current target temperature) or
            ``"last_trusted"``.
        warmup_steps: Steps per generator on the bootstrap committee before the first
            label (no labelling: the generators heat up and the quantile rule gets a
            history, so the first labels are not simply the first MD steps).
        steps_per_label: Safety cap on generator steps per label of a stage.
    """

    bootstrap: int = 8
    rattle_A: float = 0.1
    strain: tuple[float, float] = (0.92, 1.08)
    t_start: float = 300.0
    t_end: float = 1200.0
    ramp_steps: int = 120
    selection: str = "system-quantile"
    quantile: float = 0.9
    window: int = 250
    min_history: int = 25
    lower: float = 0.04
    upper: float = float("inf")
    patience: int = 5
    restart: str = "initial"
    warmup_steps: int = 10
    steps_per_label: int = 200


def bootstrap_structures(frames: list[Atoms], n: int, s: ALSettings, seed: int) -> list[Atoms]:
    """``n`` rattled copies, cycling over the frames (frame 0, 1, ..., then 0 again)."""
    per = -(-n // len(frames))
    samples = rattle_sample(frames, per, rattle_std_A=s.rattle_A, strain_range=s.strain, seed=seed)
    interleaved = [samples[f * per + k] for k in range(per) for f in range(len(frames))]
    return interleaved[:n]


class PerSystem:
    """One selection rule per system (formula and charge), made by ``factory``.

    With several clusters in one run, a single quantile on the absolute ``max_force_std``
    lets the system the committee knows least (here a charge state with its own node
    types) take nearly every label; judging each system against its own recent history
    spreads the labels while still picking each system's most uncertain geometries.
    """

    key = "max_force_std"

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory
        self.rules: dict[tuple[str, int], Any] = {}

    def __call__(self, atoms: Atoms, results: Any) -> Any:
        k = (atoms.get_chemical_formula(mode="hill"), int(atoms.info.get("charge", 0)))
        if k not in self.rules:
            self.rules[k] = self.factory()
        return self.rules[k](atoms, results)

    @property
    def lower(self) -> float:
        """Smallest current threshold (queue re-scoring keeps what is above it)."""
        return min((float(r.lower) for r in self.rules.values()), default=0.0)


def make_selection(s: ALSettings) -> Any:
    if s.selection == "system-quantile":
        return PerSystem(
            lambda: RecentQuantile(
                quantile=s.quantile,
                window=max(s.window // 5, 10),
                min_history=max(s.min_history // 5, 2),
                upper=s.upper,
            )
        )
    if s.selection == "quantile":
        return RecentQuantile(
            quantile=s.quantile, window=s.window, min_history=s.min_history, upper=s.upper
        )
    if s.selection == "window":
        return TrustWindow(lower=s.lower, upper=s.upper)
    raise ValueError(f"unknown selection {s.selection!r}")


def make_generators(frames: list[Atoms], s: ALSettings, timestep_fs: float, seed: int) -> list:
    return [
        MDGenerator(
            atoms,
            generator_id=i,
            settings=MDSettings(
                integrator="langevin",
                temperature_K=s.t_start,
                end_temperature_K=s.t_end,
                ramp_steps=s.ramp_steps,
                timestep_fs=timestep_fs,
                patience=s.patience,
                restart=s.restart,
                restart_velocities="fresh",
                seed=seed * 100 + i,
            ),
        )
        for i, atoms in enumerate(frames)
    ]


def active_learning(
    frames: list[Atoms],
    *,
    counts: list[int],
    trainer: FreshTrainer,
    live: CommitteeCalculator,
    store_path: Path,
    s: ALSettings,
    timestep_fs: float,
    seed: int,
) -> dict[str, Any]:
    """Bootstrap, then one ActiveLearning stage per count in ``counts`` above the bootstrap.

    Every stage ends with a training round on all ``ok`` labels so far (``trainer``).
    Returns the labels in the order they were made and per-stage statistics.
    """
    oracle = XTB()
    n_boot = min(s.bootstrap, counts[-1])
    if n_boot != s.bootstrap:
        logger.warning("bootstrap cut to %d labels", n_boot)
    store_path.unlink(missing_ok=True)
    stages: list[dict[str, Any]] = []
    failed_bootstrap = 0
    with LabelStore(store_path) as store:
        for atoms in bootstrap_structures(frames, n_boot, s, seed):
            lab = label(atoms, oracle)
            failed_bootstrap += not lab.ok
            store.append_label(lab, generator_id=-1)
        t0 = time.perf_counter()
        trainer.train(store.read(status="ok"))
        stages.append(
            {"labels": len(store.read(status="ok")), "wall_s": round(time.perf_counter() - t0, 1)}
        )
        selection = make_selection(s)  # one instance for the whole run (it keeps history)
        generators = make_generators(frames, s, timestep_fs, seed)
        if s.warmup_steps:
            t0 = time.perf_counter()
            warmup = ActiveLearning(
                committee=live,
                oracle=oracle,
                generators=generators,
                store=store,
                selection=selection,
                settings=WorkflowSettings(
                    max_labels=1,
                    max_steps=s.warmup_steps * len(generators),
                    convergence_fraction=0.0,
                    seed=seed,
                ),
            )
            warmup.labelling = False  # as after convergence in "ml_md" mode: MD only
            summary = warmup.run()
            stages.append(
                {
                    "warmup_steps": summary.generator_steps,
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            )
        for target in [c for c in counts if c > n_boot]:
            have = len(store.read(status="ok"))
            want = target - have
            if want <= 0:
                continue
            t0 = time.perf_counter()
            loop = ActiveLearning(
                committee=live,
                oracle=oracle,
                generators=generators,
                store=store,
                trainer=trainer,
                selection=selection,
                settings=WorkflowSettings(
                    max_labels=want,
                    retrain_size=want,
                    max_steps=want * s.steps_per_label,
                    convergence_fraction=0.0,  # never stop early: the budget is the labels
                    seed=seed,
                ),
            )
            summary = loop.run()
            ok = list(store.read(status="ok"))
            temps = [g.settings.target_temperature_K(g.step) for g in generators]
            stages.append(
                {
                    "labels": len(ok),
                    "new_labels": summary.labels_ok,
                    "failed": summary.labels_failed,
                    "generator_steps": summary.generator_steps,
                    "restarts": sum(g.n_restarts for g in generators),
                    "target_temperature_K": round(float(np.mean(temps)), 1),
                    "stop_reason": summary.stop_reason,
                    "wall_s": round(time.perf_counter() - t0, 1),
                    "busy_s": {k: round(v, 1) for k, v in summary.timings_s.items()},
                }
            )
            logger.info("AL stage: %s", stages[-1])
        labels = list(store.read(status="ok"))
        counts_by_status = store.counts()
    return {
        "labels": labels,
        "stages": stages,
        "bootstrap_failed": failed_bootstrap,
        "store_counts": counts_by_status,
    }
