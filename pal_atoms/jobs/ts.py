"""``pal-atoms ts``: active learning on transition-state searches (Sella or NEB).

The same job as ``pal-atoms md`` (held-out test set, bootstrap labels, committee, store,
checkpoints, resume), with saddle-point searches on the committee as generators instead of
MD: Sella from randomly perturbed copies of every starting frame, or a climbing-image NEB
between consecutive pairs of frames. Structures the committee is unsure about along the
way are labelled by the oracle and trained on, so the searches end on a committee that
knows the saddle regions. At the end the converged saddles (Sella) or climbing images
(NEB) are checked against the oracle and written to ``saddles.extxyz``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import ase.io
import numpy as np
from ase import Atoms

from pal_atoms.core.errors import ConfigError, InputError
from pal_atoms.jobs.md import run_md
from pal_atoms.jobs.md_config import JobConfig
from pal_atoms.jobs.setup import load_frames
from pal_atoms.workflow import Summary

__all__ = ["TSRunConfig", "check_pairs", "run_ts", "ts_generators"]

logger = logging.getLogger(__name__)

DRIVERS = ("sella", "neb")


@dataclass(frozen=True, kw_only=True)
class TSRunConfig(JobConfig):
    """``pal-atoms ts``: the job settings (:class:`JobConfig`) plus the search settings.

    The MD settings (``temperature_K``, ``timestep_fs``) still make the held-out test set
    (short oracle MD from every frame).

    Args:
        driver: ``"sella"`` (saddle search from each frame) or ``"neb"`` (consecutive
            frames are the endpoints of one band each).
        searches_per_frame: Sella searches per starting frame, each from its own random
            perturbation.
        perturbation_A: Standard deviation of the random displacement of a Sella start, Å.
        fmax_eV_A: Convergence threshold on the largest (NEB: band) force, eV/Å.
        max_iterations: Optimizer steps per attempt.
        neb_images: Movable images per NEB band.
    """

    # Saddle searches take few, expensive steps (an NEB step is a band of images): no cap.
    generator_rate_hz: float | None = None
    driver: str = "sella"
    searches_per_frame: int = 2
    perturbation_A: float = 0.1
    fmax_eV_A: float = 0.05
    max_iterations: int = 200
    neb_images: int = 5

    def n_generators(self, n_frames: int) -> int:
        """Sella searches per frame, or one NEB per reactant/product pair."""
        return (
            n_frames * self.searches_per_frame if self.driver == "sella" else max(1, n_frames // 2)
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.driver not in DRIVERS:
            raise ConfigError(f"unknown driver {self.driver!r}; choose from {', '.join(DRIVERS)}")
        for name in ("searches_per_frame", "max_iterations", "neb_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("perturbation_A", "fmax_eV_A"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if self.fmax_eV_A == 0:
            raise ConfigError("fmax_eV_A must be > 0")


def ts_generators(config: TSRunConfig, frames: list[Atoms]) -> list[Any]:
    """Sella searches (``searches_per_frame`` per frame) or one NEB per pair of frames."""
    from pal_atoms.dynamics import NEBGenerator, NEBSettings, SellaGenerator, SellaSettings

    if config.driver == "sella":
        return [
            SellaGenerator(
                atoms,
                generator_id=i * config.searches_per_frame + k,
                settings=SellaSettings(
                    fmax_eV_A=config.fmax_eV_A,
                    max_iterations=config.max_iterations,
                    perturbation_A=config.perturbation_A,
                    patience=config.patience,
                    seed=config.seed + 1000 * i + k,
                ),
            )
            for i, atoms in enumerate(frames)
            for k in range(config.searches_per_frame)
        ]
    check_pairs(config, frames)
    generators = []
    for j in range(0, len(frames), 2):
        first, last = frames[j], frames[j + 1]
        generators.append(
            NEBGenerator(
                first,
                last,
                generator_id=j // 2,
                settings=NEBSettings(
                    n_images=config.neb_images,
                    fmax_eV_A=config.fmax_eV_A,
                    max_iterations=config.max_iterations,
                    patience=config.patience,
                ),
            )
        )
    return generators


def check_pairs(config: TSRunConfig, frames: list[Atoms]) -> None:
    """NEB takes consecutive frames as (initial, final) pairs of the same atoms."""
    if config.driver != "neb":
        return
    if len(frames) % 2:
        raise InputError(
            f"--driver neb takes pairs of frames (initial, final); {config.system} has "
            f"{len(frames)} frames"
        )
    for j in range(0, len(frames), 2):
        if list(frames[j].numbers) != list(frames[j + 1].numbers):
            raise InputError(
                f"frames {j} and {j + 1} of {config.system} are not the same atoms in the "
                "same order (NEB endpoints)"
            )


def _saddles(config: TSRunConfig, oracle: Any) -> list[Atoms]:
    """Saddle geometries of the finished searches, from the saved generator states."""
    path = config.out / "generators.json"
    if not path.is_file():
        return []
    states = json.loads(path.read_text())
    frames = load_frames(config, oracle)
    out = []
    for gid, state in sorted(states.items(), key=lambda kv: int(kv[0])):
        if not state.get("converged"):
            continue
        g = int(gid)
        if config.driver == "sella":
            if state.get("saddle") is None:
                continue
            atoms = frames[g // config.searches_per_frame].copy()
            atoms.positions = np.asarray(state["saddle"])
        else:
            # The climbing image is the highest one; without energies in the state, take
            # every inner image and let the oracle check below pick the highest.
            band = [np.asarray(p) for p in state["images"][1:-1]]
            base = frames[2 * g]
            candidates = []
            for positions in band:
                image = base.copy()
                image.positions = positions
                candidates.append(image)
            atoms = max(candidates, key=lambda a: _oracle_energy(a, oracle))
        atoms.info["generator_id"] = g
        out.append(atoms)
    return out


def _oracle_energy(atoms: Atoms, oracle: Any) -> float:
    work = atoms.copy()
    work.calc = oracle
    return float(work.get_potential_energy())


def _check_saddles(config: TSRunConfig, saddles: list[Atoms], oracle: Any) -> list[dict[str, Any]]:
    """Oracle and committee energy and largest force at every saddle; write the file."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from pal_atoms.calculators import CommitteeCalculator

    committee = CommitteeCalculator.load(config.out / "committee", device=config.device)
    rows = []
    frames_out = []
    for atoms in saddles:
        ref = atoms.copy()
        ref.calc = oracle
        energy, forces = float(ref.get_potential_energy()), ref.get_forces()
        pred = committee.predict_batch([atoms])[0]
        row = {
            "generator_id": int(atoms.info["generator_id"]),
            "oracle_energy_eV": energy,
            "oracle_fmax_eV_A": float(np.linalg.norm(forces, axis=1).max()),
            "committee_energy_eV": float(pred["energy"]),
            "committee_max_force_std_eV_A": float(pred["max_force_std"]),
        }
        rows.append(row)
        frame = atoms.copy()
        frame.info.update(row)
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
        frames_out.append(frame)
    if frames_out:
        ase.io.write(config.out / "saddles.extxyz", frames_out, format="extxyz", parallel=False)
    return rows


def run_ts(config: TSRunConfig, comm: Any | None = None) -> Summary | None:
    """Run the job (see the module docstring); the summary adds the saddles found.

    Args:
        config: The job.
        comm: MPI communicator under ``mpiexec``/``srun``; ``None`` runs in this process.

    Returns:
        The run's summary; ``None`` on MPI ranks other than 0.
    """
    from pal_atoms.store.exchange import read_structures

    # Before the expensive set-up (test set, bootstrap labels, first training).
    check_pairs(config, read_structures(config.system))

    def make(cfg: Any, frames: list[Atoms]) -> list[Any]:
        return ts_generators(cfg, frames)

    def add_saddles(summary: Summary, oracle: Any) -> None:
        rows = _check_saddles(config, _saddles(config, oracle), oracle)
        summary.report["saddles"] = rows
        logger.info(
            "%d converged saddle(s) checked against the oracle; largest oracle force %s eV/Å",
            len(rows),
            f"{max(r['oracle_fmax_eV_A'] for r in rows):.3f}" if rows else "-",
        )

    return run_md(config, comm, make_generators=make, add_to_report=add_saddles)
