"""``pal-atoms reaction``: an atom transfer learnt at two oracle levels, and its barrier.

1. **Cheap level, active learning.** The ``md`` job with steered MD along
   ``d(donor-H) - d(acceptor-H)`` (every frame needs its transfer, ``--transfer`` or
   ``info["transfer"]``): the cheap oracle (``--oracle``, xTB by default) labels what the
   committee is unsure about on the way over the barrier.
2. **Expensive level** (with ``--high-oracle``). The reaction path on the cheap committee
   (adiabatic mapping on the cheap oracle, :func:`~pal_atoms.dynamics.transfer_path`);
   the expensive oracle labels ``--high-budget`` structures (the path's highest and
   first images, further images, and the most uncertain cheap-level ones,
   :func:`~pal_atoms.jobs.levels.select_high`) into ``labels_high.h5``; the committee
   learns the expensive level by fine-tuning or a Δ model (``--high-learning``) and is
   saved as ``committee_high``.
3. **Report.** The path on the final committee; on the same geometries, the energies of
   the committee, of the cheap oracle and (if given) of the expensive one; the barrier of
   each (highest image less the first); labels spent per level. Written to
   ``summary.json`` (``report["reaction"]``), ``path.extxyz``, ``path.csv`` and
   ``path.png``.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
from ase import Atoms

from pal_atoms.core.errors import ConfigError, InputError, OracleError
from pal_atoms.jobs.levels import HighLevelLearning
from pal_atoms.jobs.md import MDRunConfig, run_md
from pal_atoms.jobs.md_config import ORACLES
from pal_atoms.workflow import Summary

__all__ = ["ReactionRunConfig", "check_transfers", "reaction_generators", "run_reaction"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReactionRunConfig(MDRunConfig):
    """``pal-atoms reaction``: everything of :class:`MDRunConfig` plus the two levels.

    Args:
        high_oracle: The expensive oracle (``None``: one level only).
        high_method: Its method (DFT: the functional; default the oracle's).
        high_basis: Its basis set (default the oracle's).
        high_budget: Expensive labels for training (a stored earlier attempt's count).
        high_learning: ``"delta"`` (the committee learns expensive - cheap and predicts
            cheap + correction; needs the cheap oracle at use) or ``"fine-tune"`` (a plain
            committee at the expensive level) (:class:`~pal_atoms.jobs.levels.HighLevelLearning`).
        high_steps: Optimizer steps of the expensive-level training.
        path_images: Images of the reaction path, both ends included.
        path_k_eV_A2: Force constant that holds each path image at its coordinate, eV/Å².
        path_steps: Optimizer steps per path image.
        transfer_samples: Per frame, a :class:`~pal_atoms.dynamics.TransferSampler` with
            this many random geometries of the H atom between donor and acceptor, judged
            like MD steps, next to the steered MD (0: none).
    """

    # Steered MD back and forth across the barrier (400 steps each way), at a time step
    # and temperature that suit a moving hydrogen.
    steer_steps: int = 400
    steering: str = "sweep"
    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    high_oracle: str | None = None
    high_method: str | None = None
    high_basis: str | None = None
    high_budget: int = 16
    # Measured (bench/reaction.py, bench/two_levels.py): Δ on xTB reaches a barrier within
    # 0.043 eV with half the expensive labels, and the lowest force error at every budget.
    high_learning: str = HighLevelLearning.DELTA.value
    high_steps: int = 1000
    path_images: int = 11
    path_k_eV_A2: float = 20.0
    path_steps: int = 200
    transfer_samples: int = 0

    def n_generators(self, n_frames: int) -> int:
        """Steered MD (``generators_per_frame`` per frame), plus ``transfer_samples`` samplers."""
        md = super().n_generators(n_frames)
        return md + n_frames if self.transfer_samples else md

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.high_oracle is not None and self.high_oracle not in ORACLES:
            raise ConfigError(
                f"unknown high_oracle {self.high_oracle!r}; choose from {', '.join(ORACLES)}"
            )
        if self.high_oracle is None and (self.high_method or self.high_basis):
            raise ConfigError("high_method and high_basis need high_oracle")
        try:
            HighLevelLearning(self.high_learning)
        except ValueError:
            names = ", ".join(h.value for h in HighLevelLearning)
            raise ConfigError(
                f"unknown high_learning {self.high_learning!r}; choose from {names}"
            ) from None
        for name in ("high_budget", "high_steps", "path_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.transfer_samples < 0:
            raise ConfigError(f"transfer_samples must be >= 0, got {self.transfer_samples}")
        if self.path_images < 3:
            raise ConfigError(f"path_images must be >= 3, got {self.path_images}")
        if not (math.isfinite(self.path_k_eV_A2) and self.path_k_eV_A2 > 0):
            raise ConfigError(f"path_k_eV_A2 must be positive, got {self.path_k_eV_A2}")

    def high_settings(self) -> dict[str, Any]:
        """Settings of the expensive oracle from ``high_method`` and ``high_basis``."""
        from pal_atoms.jobs.setup import oracle_settings

        assert self.high_oracle is not None
        return oracle_settings(self.high_oracle, self.high_method, self.high_basis)


def check_transfers(config: MDRunConfig, frames: list[Atoms]) -> list[tuple[int, int, int]]:
    """The transfer of every frame.

    Raises:
        InputError: a frame has none (neither ``--transfer`` nor ``info["transfer"]``).
    """
    from pal_atoms.jobs.setup import transfer_indices

    out = []
    for i, atoms in enumerate(frames):
        triple = transfer_indices(config, atoms, what=f"frame {i} of {config.system}")
        if triple is None:
            raise InputError(
                f"frame {i} of {config.system} has no transfer: give --transfer D,H,A or "
                "transfer=D,H,A in the frame's comment line"
            )
        out.append(triple)
    return out


def run_reaction(config: ReactionRunConfig, comm: Any | None = None) -> Summary | None:
    """Run the job (see the module docstring); the summary adds ``report["reaction"]``.

    Args:
        config: The job.
        comm: MPI communicator under ``mpiexec``/``srun``; ``None`` runs in this process.

    Returns:
        The run's summary; ``None`` on MPI ranks other than 0.
    """
    from pal_atoms.store.exchange import read_structures

    check_transfers(config, read_structures(config.system))  # before any set-up

    def add_reaction(summary: Summary, oracle: Any) -> None:
        summary.report["reaction"] = reaction_stage(config, oracle)

    def make(cfg: Any, frames: list[Atoms]) -> list[Any]:
        return reaction_generators(cfg, frames)

    return run_md(config, comm, make_generators=make, add_to_report=add_reaction)


def reaction_generators(config: ReactionRunConfig, frames: list[Atoms]) -> list[Any]:
    """Steered MD per frame, plus a transfer sampler per frame if ``transfer_samples``."""
    from pal_atoms.dynamics import TransferSampler, TransferSettings
    from pal_atoms.jobs.md_frames import md_generators

    generators = md_generators(config, frames)
    first = len(generators)
    if config.transfer_samples:
        for i, (atoms, (donor, h, acceptor)) in enumerate(
            zip(frames, check_transfers(config, frames), strict=True)
        ):
            settings = TransferSettings(
                donor=donor, hydrogen=h, acceptor=acceptor,
                n_samples=config.transfer_samples, seed=config.seed + i,
            )  # fmt: skip
            generators.append(TransferSampler(atoms, settings=settings, generator_id=first + i))
    return generators


def reaction_stage(config: ReactionRunConfig, cheap_oracle: Any) -> dict[str, Any]:
    """Steps 2 and 3 of the module docstring, on rank 0 after the loop."""
    from pal_atoms.calculators import CommitteeCalculator
    from pal_atoms.dynamics import DistanceCV, PathSettings, transfer_path
    from pal_atoms.jobs.levels import label_high, learn_high, select_high, stored_high
    from pal_atoms.jobs.setup import load_frames
    from pal_atoms.oracles import make_oracle
    from pal_atoms.store import LabelStore

    frames = load_frames(config, None)
    cvs = [DistanceCV.transfer(*t) for t in check_transfers(config, frames)]
    settings = PathSettings(
        images=config.path_images, k_eV_A2=config.path_k_eV_A2, max_steps=config.path_steps
    )
    committee = CommitteeCalculator.load(config.out / "committee", device=config.device)
    # The path on the cheap oracle: a reference that does not depend on how well the
    # committee has learnt (and cheap, by definition); the committee's where it fails.
    paths = []
    for f, cv in zip(frames, cvs, strict=True):
        try:
            paths.append(transfer_path(cheap_oracle, f, cv, settings=settings))
        except OracleError as exc:
            logger.warning("path on %s failed (%s): on the committee", _name(cheap_oracle), exc)
            paths.append(transfer_path(committee, f, cv, settings=settings))
    with LabelStore(config.out / "labels.h5", mode="r") as store:
        cheap_labels = store.counts()["ok"]
        pool = list(store.read(status="ok"))
    result: dict[str, Any] = {"cheap_oracle": _name(cheap_oracle), "cheap_labels": cheap_labels}
    final: Any = committee
    high = None
    if config.high_oracle is not None:
        high = make_oracle(config.high_oracle, **config.high_settings())
        store_path = config.out / "labels_high.h5"
        labels = stored_high(store_path)
        todo = config.high_budget - len(labels)
        if labels:
            logger.info("%d expensive labels from an earlier attempt", len(labels))
        if todo > 0:
            chosen = select_high(committee, paths, pool, config.high_budget, exclude=labels)
            labels += label_high(chosen, high, store_path)
        if not labels:
            raise InputError(
                f"the expensive oracle {_name(high)} labelled no structure "
                f"(first failure: {_first_error(store_path)})"
            )
        how = HighLevelLearning(config.high_learning)
        logger.info("learning the expensive level from %d labels (%s)", len(labels), how.value)
        final = learn_high(
            how,
            labels,
            cheap_committee_dir=config.out / "committee",
            out_dir=config.out / "committee_high",
            cheap_oracle=cheap_oracle,
            steps=config.high_steps,
            seed=config.seed,
            device=config.device,
        )
        result.update(
            high_oracle=_name(high),
            high_labels=len(labels),
            high_learning=how.value,
            committee_high=str(config.out / "committee_high"),
        )
    # The final committee's own path (from the reference path's images), where the user
    # will use it; every level is evaluated on these same geometries.
    paths = [
        transfer_path(final, f, cv, settings=settings, start=p)
        for f, cv, p in zip(frames, cvs, paths, strict=True)
    ]
    evaluated = [_evaluate(path, cheap_oracle, high) for path in paths]
    result["paths"] = [row for row, _ in evaluated]
    refs = [a for _, labelled in evaluated for a in labelled]
    result["path_check"] = _path_check(final, refs, "high" if high is not None else "cheap")
    if high is not None and config.final_check_ps > 0:
        # The md job checked the cheap committee; the one the user takes is this one.
        from pal_atoms.jobs.final_check import final_check_report

        result["final_check_high"] = final_check_report(
            config, final, frames, [], what="final check (expensive level)"
        )
    _write(config, paths, result["paths"])
    for i, row in enumerate(result["paths"]):
        logger.info("path %d barrier: %s", i, _barrier_text(row))
    return result


def _first_error(store_path: Path) -> str:
    """The error of the first failed record in ``store_path`` (one line)."""
    from pal_atoms.store import LabelStore

    if store_path.exists():
        with LabelStore(store_path, mode="r") as store:
            for atoms in store.read(status=None):
                if atoms.info.get("status") != "ok":
                    return str(atoms.info.get("error") or atoms.info.get("status")).splitlines()[0]
    return "none recorded"


def _name(oracle: Any) -> str:
    return f"{oracle.name} ({oracle.method})"


def _labelled(atoms: Atoms, oracle: Any) -> Atoms | None:
    """The oracle's label of ``atoms``; ``None`` where it fails (logged)."""
    from pal_atoms.oracles import label

    lab = label(atoms, oracle)
    if not lab.ok or lab.energy is None:
        logger.warning("%s failed on a path image: %s", _name(oracle), lab.error)
        return None
    return lab.to_atoms()


def _evaluate(
    path: list[Atoms], cheap: Any, high: Any | None
) -> tuple[dict[str, Any], list[Atoms]]:
    """Energies along one path (relative to its first image) and the barriers, eV.

    Returns:
        The row of ``summary.json``, and the reference level's labels of the images
        (the expensive level's if there is one), for :func:`_path_check`.
    """
    from pal_atoms.dynamics import barrier

    labels = {"cheap": [_labelled(im, cheap) for im in path]}
    if high is not None:
        labels["high"] = [_labelled(im, high) for im in path]
    levels: dict[str, list[float | None]] = {
        "committee": [float(im.info["energy"]) for im in path],
        **{
            name: [None if a is None else float(a.get_potential_energy()) for a in labs]
            for name, labs in labels.items()
        },
    }
    row: dict[str, Any] = {"cv_A": [float(im.info["cv"]) for im in path]}
    for name, energies in levels.items():
        if any(e is None for e in energies):
            row[f"{name}_energy_eV"] = None
            row[f"{name}_barrier_eV"] = None
            continue
        values = [float(e) for e in energies if e is not None]
        row[f"{name}_energy_eV"] = [e - values[0] for e in values]
        row[f"{name}_barrier_eV"] = barrier(values)
    reference = "high" if high is not None else "cheap"
    ref = row.get(f"{reference}_barrier_eV")
    if ref is not None and row["committee_barrier_eV"] is not None:
        row["committee_barrier_error_eV"] = row["committee_barrier_eV"] - ref
    return row, [a for a in labels[reference] if a is not None]


def _path_check(final: Any, refs: list[Atoms], level: str) -> dict[str, Any] | None:
    """The final committee against the reference level on the final path's images.

    These images are the final committee's own path, found after its training, so they
    are held out: force MAE, calibration (observed RMSE over the predicted spread) and
    Spearman of ``max_force_std`` against the largest error, as for ``pal-atoms md``'s
    held-out frames. ``None`` without a labelled image.
    """
    from pal_atoms.jobs.plot_calibration import calibration_report

    if not refs:
        return None
    report = calibration_report(final, refs)
    report["level"] = level
    logger.info(
        "final committee on %d path images against the %s level: force MAE %.3f eV/Å, "
        "RMSE/spread %.2f",
        len(refs), report["level"], report["force_mae"], report["rmse_over_std"],
    )  # fmt: skip
    return report


def _barrier_text(row: dict[str, Any]) -> str:
    parts = []
    for name in ("committee", "cheap", "high"):
        value = row.get(f"{name}_barrier_eV")
        if f"{name}_barrier_eV" in row:
            parts.append(f"{name} {'failed' if value is None else f'{value:.3f} eV'}")
    return ", ".join(parts)


def _write(config: ReactionRunConfig, paths: list[list[Atoms]], rows: list[dict[str, Any]]) -> None:
    """``path.extxyz``, ``path.csv`` and ``path.png`` in the run folder."""
    from pal_atoms.jobs.figures import new_figure, save_figure

    images = []
    for p, (path, row) in enumerate(zip(paths, rows, strict=True)):
        for i, im in enumerate(path):
            frame = im.copy()
            frame.info = {k: v for k, v in im.info.items() if k != "transfer"}
            frame.info["path"] = p
            for level in ("committee", "cheap", "high"):
                energies = row.get(f"{level}_energy_eV")
                if energies is not None:
                    frame.info[f"{level}_energy_rel"] = energies[i]
            images.append(frame)
    ase.io.write(config.out / "path.extxyz", images, format="extxyz", parallel=False)
    levels = [lv for lv in ("committee", "cheap", "high") if f"{lv}_energy_eV" in rows[0]]
    with (config.out / "path.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "image", "cv_A", *(f"{lv}_eV" for lv in levels)])
        for p, row in enumerate(rows):
            for i, cv in enumerate(row["cv_A"]):
                values = [
                    "" if row[f"{lv}_energy_eV"] is None else f"{row[f'{lv}_energy_eV'][i]:.6f}"
                    for lv in levels
                ]
                writer.writerow([p, i, f"{cv:.4f}", *values])
    fig = new_figure()
    ax = fig.add_subplot()
    styles = {"committee": "o-", "cheap": "s--", "high": "^-"}
    for p, row in enumerate(rows):
        for lv in levels:
            if row[f"{lv}_energy_eV"] is not None:
                label = f"{lv} ({row[f'{lv}_barrier_eV']:.3f} eV)"
                ax.plot(row["cv_A"], row[f"{lv}_energy_eV"], styles[lv],
                        label=label if len(rows) == 1 else f"path {p} {label}")  # fmt: skip
    ax.set_xlabel("d(donor-H) - d(acceptor-H) / Å")
    ax.set_ylabel("energy relative to the first image / eV")
    ax.legend()
    save_figure(fig, config.out / "path.png")
