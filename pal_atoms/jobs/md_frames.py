"""The md job's structures: held-out test set, bootstrap and generators.

The held-out frames and the bootstrap come from Langevin MD on the oracle itself (or,
for the bootstrap, rattled copies); the generators are Langevin MD on the committee,
``generators_per_frame`` per starting frame, steered across a transfer coordinate where
one is given.
"""

from __future__ import annotations

import logging
from typing import Any

from ase import Atoms

from pal_atoms.jobs.md_config import JobConfig, MDRunConfig
from pal_atoms.jobs.setup import transfer_indices

__all__ = ["md_bootstrap", "md_generators", "md_test_set", "steering_bias"]

logger = logging.getLogger(__name__)


def _oracle_md(
    config: JobConfig,
    oracle: Any,
    frames: list[Atoms],
    *,
    n_per_frame: int,
    seed: int,
    what: str,
    trajectories: int = 1,
) -> list[Atoms]:
    """Frames of Langevin MD on the oracle, ``n_per_frame`` per starting frame.

    Per trajectory ``test_equilibration_fs`` of MD first, then a frame every
    ``test_spacing_fs``.
    """
    from pal_atoms.dynamics import reference_md_frames

    dt = config.timestep_fs
    equilibration = round(config.test_equilibration_fs / dt)
    stride = max(1, round(config.test_spacing_fs / dt))
    logger.info(
        "making %d %s by MD on the oracle (trajectories per frame: %d; %d + %d x %d steps)",
        n_per_frame * len(frames),
        what,
        min(trajectories, n_per_frame),
        equilibration,
        n_per_frame,
        stride,
    )
    return reference_md_frames(
        oracle,
        frames,
        n_per_frame=n_per_frame,
        temperature_K=config.temperature_K,
        timestep_fs=dt,
        stride=stride,
        equilibration_steps=equilibration,
        seed=seed,
        trajectories=trajectories,
    )


def md_test_set(config: JobConfig, oracle: Any, frames: list[Atoms]) -> list[Atoms]:
    """Held-out frames of Langevin MD on the oracle itself, per starting frame.

    ``test_trajectories`` trajectories per frame, each ``test_equilibration_fs`` of MD
    first, then a frame every ``test_spacing_fs``.
    """
    return _oracle_md(
        config,
        oracle,
        frames,
        n_per_frame=config.test_per_frame,
        seed=config.seed + 1000,
        what="held-out test frames",
        trajectories=config.test_trajectories,
    )


def md_bootstrap(config: JobConfig, oracle: Any, frames: list[Atoms]) -> list[Atoms]:
    """The structures labelled before the loop (``config.bootstrap``).

    ``"md"``: ``bootstrap_per_frame`` frames of oracle MD per starting frame, as for the
    test set, from another seed; ``"rattle"``: rattled and strained copies of the
    starting frames.
    """
    from pal_atoms.dynamics import rattle_sample

    if config.bootstrap == "md":
        if config.bootstrap_per_frame == 0:
            return []
        return _oracle_md(
            config,
            oracle,
            frames,
            n_per_frame=config.bootstrap_per_frame,
            seed=config.seed + 2000,
            what="bootstrap structures",
        )
    return rattle_sample(
        frames,
        config.bootstrap_per_frame,
        rattle_std_A=0.1,
        strain_range=(0.92, 1.08),
        seed=config.seed,
    )


def md_generators(config: MDRunConfig, frames: list[Atoms]) -> list[Any]:
    """Langevin MD generators, ``generators_per_frame`` per starting frame.

    Steered where a transfer is given; copy ``k`` of frame ``i`` has id
    ``i + k * len(frames)`` and seed ``seed + id``.
    """
    from pal_atoms.dynamics import MDGenerator, MDSettings

    n = len(frames)
    return [
        MDGenerator(
            atoms,
            generator_id=i + k * n,
            settings=MDSettings(
                integrator="langevin",
                temperature_K=config.temperature_K,
                timestep_fs=config.timestep_fs,
                patience=config.patience,
                n_steps=config.steps,
                # Fresh velocities on restart: kept ones replay the same path (duplicates).
                restart_velocities="fresh",
                seed=config.seed + i + k * n,
            ),
            bias=steering_bias(config, atoms, what=f"frame {i}"),
        )
        for k in range(config.generators_per_frame)
        for i, atoms in enumerate(frames)
    ]


def steering_bias(config: MDRunConfig, atoms: Atoms, *, what: str = "frame") -> Any:
    """The restraint that steers ``atoms`` across its transfer coordinate, or ``None``.

    The centre moves from the frame's own ``d(D-H) - d(A-H)`` to minus that value (the
    mirror image: the product side of a symmetric transfer) over ``steer_steps`` steps,
    once or back and forth (``config.steering``).

    Raises:
        InputError: the frame's ``info["transfer"]`` is malformed or an index lies outside
            the frame.
    """
    from pal_atoms.dynamics import DistanceCV, UmbrellaBias

    triple = transfer_indices(config, atoms, what=what)
    if triple is None:
        return None
    cv = DistanceCV.transfer(*triple)
    start = cv(atoms)
    return UmbrellaBias(
        cv=cv,
        k_eV_A2=config.bias_k_eV_A2,
        center_A=start,
        end_center_A=-start,
        steer_steps=config.steer_steps,
        sweep=config.steering == "sweep",
    )
