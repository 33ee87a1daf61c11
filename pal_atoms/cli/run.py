"""Subcommands that work on run directories (``md``, ``status``, ...)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pal_atoms.cli.options import (
    JOB_OPTIONS,
    MD_OPTIONS,
    REACTION_OPTIONS,
    SH_OPTIONS,
    TEST_MD_OPTIONS,
    TS_OPTIONS,
    with_oracles,
)
from pal_atoms.core.errors import InputError, LaunchError

if TYPE_CHECKING:
    from pal_atoms.jobs.md_config import JobConfig
    from pal_atoms.workflow import Summary

__all__ = ["add_subcommands"]

#: TOML tables of the run subcommands (a job reads the top level and its own table).
JOB_TABLES = ("md", "ts", "sh", "reaction")


def _cmd_status(args: argparse.Namespace) -> int:
    from pal_atoms.store import LabelStore

    run_dir = Path(args.run_dir)
    store_path = run_dir / "labels.h5" if run_dir.is_dir() else run_dir
    if not store_path.exists():
        raise InputError(f"{run_dir} is not a pal-atoms run (no labels.h5)")
    with LabelStore(store_path, mode="r") as store:
        counts = store.counts()
        total = len(store)
    lines = [f"{store_path}: {total} records"]
    lines += [f"  {name:<12} {n}" for name, n in counts.items() if n]
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        last = metrics.read_text().strip().splitlines()[-1:]
        if last:
            lines.append("last metrics: " + json.dumps(json.loads(last[0]), sort_keys=True))
    print("\n".join(lines))
    return 0


def _md_config(args: argparse.Namespace) -> JobConfig:
    from dataclasses import fields

    config_cls = _config_class(args.command)
    data: dict[str, object] = {}
    if args.config is not None:
        data.update(_read_toml(Path(args.config), args.command))
    names = {f.name for f in fields(config_cls)}
    for name in names:
        value = getattr(args, name, None)
        if name == "model_options" and value is not None:
            from_file = data.get(name)
            base = dict(from_file) if isinstance(from_file, dict) else {}
            value = {**base, **_key_values(value, "--model-option")}  # flags win per key
        if value is not None and value is not False:
            data[name] = value  # the command line wins over the file
    if args.resume:
        data["resume"] = True
        if "out" not in data:
            raise InputError("--resume needs --out DIR (the run to continue)")
        saved = Path(str(data["out"])) / "config.json"
        if saved.is_file() and args.system is None:
            data.setdefault("system", json.loads(saved.read_text())["system"])
    if "system" not in data:
        raise InputError("give --system FILE (starting structures)")
    return config_cls.from_dict(data)


def _key_values(items: list[str], flag: str) -> dict[str, object]:
    """``KEY=VALUE`` strings as a dict; values that read as JSON (numbers, lists) convert."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} needs KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def _jobs() -> dict[str, tuple[type[JobConfig], Callable[..., Summary | None]]]:
    """The run subcommands: their configuration class and their job."""
    from pal_atoms.jobs.md import MDRunConfig, run_md
    from pal_atoms.jobs.reaction import ReactionRunConfig, run_reaction
    from pal_atoms.jobs.sh import SHRunConfig, run_sh
    from pal_atoms.jobs.ts import TSRunConfig, run_ts

    return {
        "md": (MDRunConfig, run_md),
        "ts": (TSRunConfig, run_ts),
        "sh": (SHRunConfig, run_sh),
        "reaction": (ReactionRunConfig, run_reaction),
    }


def _config_class(command: str) -> type[JobConfig]:
    return _jobs()[command][0]


def _read_toml(path: Path, command: str) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config file {path}: {exc}") from exc
    # Keys shared by every job at the top level; a job's own under its table ([md], [ts],
    # [sh], [reaction]), which wins. Another job's table is not this job's business.
    shared = {k: v for k, v in data.items() if k not in JOB_TABLES}
    own = data.get(command, {})
    if not isinstance(own, dict):
        raise InputError(f"config file {path}: [{command}] must be a table of options")
    return {str(k).replace("-", "_"): v for k, v in {**shared, **own}.items()}


def _cores() -> int:
    """Cores this process may run on (the Slurm/cgroup affinity where there is one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _n_generators(config: JobConfig) -> int:
    from pal_atoms.store.exchange import read_structures

    return config.n_generators(len(read_structures(config.system)))


def _auto_np(config: JobConfig) -> int:
    """Default ``--np``: see :class:`~pal_atoms.jobs.md_config.JobConfig`."""
    from pal_atoms.jobs.launch import find_mpiexec

    if importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None:
        logging.getLogger(__name__).warning(
            "no mpiexec/mpi4py found: every kernel runs in this process (pip install "
            "'pal-atoms[mpi]' for parallel kernels, or pass --np 1 to silence this)"
        )
        return 1
    fixed = config.layout().fixed
    return fixed + max(1, min(_n_generators(config), _cores() - fixed))


def _comm_size() -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())


def _cmd_md(args: argparse.Namespace) -> int:
    from pal_atoms.jobs.launch import STARTED_BY, LaunchKind, decide_launch, start_ranks
    from pal_atoms.jobs.reaction import ReactionRunConfig, check_transfers
    from pal_atoms.jobs.ts import TSRunConfig, check_pairs

    config = _md_config(args)
    try:
        launch = decide_launch(
            os.environ,
            requested_np=config.np,
            auto_np=lambda: _auto_np(config),
            comm_size=_comm_size,
            have_srun=shutil.which("srun") is not None,
        )
    except LaunchError:
        if os.environ.get("SLURM_PROCID", "0") != "0":
            return 2  # every copy stops; the first says why, once
        raise
    log = logging.getLogger(__name__)
    kernels = config.layout().counts(launch.n_ranks) if launch.n_ranks > 1 else None

    if launch.kind is LaunchKind.LAUNCHER:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_rank() != 0:
            logging.getLogger().setLevel(logging.WARNING)  # one rank tells the story
        elif STARTED_BY not in os.environ:  # else the process that started us said it
            log.info("%s", launch.describe(kernels))
        try:
            summary = _run_job(config, comm=comm)
        except InputError:
            if comm.Get_rank() == 0:
                raise
            return 2  # every rank stops with the same error; rank 0 prints it once
    elif launch.kind is LaunchKind.STARTED:
        # Check the input here, before starting ranks: one clean error, no job launched.
        from pal_atoms.jobs.setup import build_oracle, check_run_dir, load_frames
        from pal_atoms.store.run_lock import RunLock

        check_run_dir(config)
        RunLock(config.out).ensure_free()
        frames = load_frames(config, build_oracle(config))
        if isinstance(config, TSRunConfig):
            check_pairs(config, frames)
        if isinstance(config, ReactionRunConfig):
            check_transfers(config, frames)
        config.layout().check(launch.n_ranks)
        log.info("%s", launch.describe(kernels))
        return start_ranks(launch, args.argv)
    else:
        log.info("%s", launch.describe())
        summary = _run_job(config)
    if summary is None:
        return 0
    print("\n".join([_final_line(config, summary), *_job_lines(config, summary)]))
    return 0


def _run_job(config: JobConfig, comm: Any = None) -> Summary | None:
    """The job of the subcommand that made ``config``."""
    run = next(job for cls, job in _jobs().values() if type(config) is cls)
    return run(config, comm=comm)


def _job_lines(config: JobConfig, summary: Summary) -> list[str]:
    """What a ``ts`` or ``sh`` run adds to the final line."""
    from pal_atoms.jobs.reaction import ReactionRunConfig
    from pal_atoms.jobs.sh import SHRunConfig
    from pal_atoms.jobs.ts import TSRunConfig

    if isinstance(config, ReactionRunConfig):
        return _reaction_lines(config, summary.report.get("reaction", {}))
    if isinstance(config, TSRunConfig):
        rows = summary.report.get("saddles", [])
        where = f" in {config.out / 'saddles.extxyz'}" if rows else ""
        return [f"{len(rows)} converged saddle(s) checked against the oracle{where}"]
    if isinstance(config, SHRunConfig):
        sh = summary.report.get("surface_hopping", {})
        maes = sh.get("test_state_force_mae")
        per_state = "n/a" if maes is None else " / ".join(f"{m:.3f}" for m in maes)
        return [
            f"surface hopping: {sh.get('trajectories_complete', 0)} complete trajectories, "
            f"{sh.get('hops', 0)} hops; held-out force MAE per state {per_state} eV/Å; "
            f"populations in {config.out / 'populations.csv'}"
        ]
    return []


def _reaction_lines(config: JobConfig, reaction: dict[str, Any]) -> list[str]:
    lines = []
    for i, row in enumerate(reaction.get("paths", [])):
        parts = [
            f"{name} {row[f'{name}_barrier_eV']:.3f}"
            for name in ("committee", "cheap", "high")
            if row.get(f"{name}_barrier_eV") is not None
        ]
        lines.append(f"barrier along path {i} (eV): " + ", ".join(parts))
    spent = f"labels: {reaction.get('cheap_labels', 0)} {reaction.get('cheap_oracle', '')}"
    if "high_labels" in reaction:
        spent += f", {reaction['high_labels']} {reaction['high_oracle']}"
    return [*lines, f"{spent}; path in {config.out / 'path.csv'}"]


def _final_line(config: JobConfig, summary: Summary) -> str:
    """The run's last line: why it ended, what it made, and how good the potential is."""
    mae = summary.test_force_mae[-1][1] if summary.test_force_mae else float("nan")
    training = (
        f"{summary.training_steps} training steps, {summary.publishes} publishes"
        if summary.training_steps
        else f"{summary.training_rounds} training rounds"
    )
    line = (
        f"run finished [{summary.stop_criterion or 'other'}] ({summary.stop_reason}): "
        f"{summary.labels_ok} labels, {summary.labels_failed} failed, "
        f"{summary.generator_steps} MD steps, {training} in {summary.wall_time_s:.0f} s; "
        f"held-out force MAE {mae:.4f} eV/Å"
    )
    check = summary.report.get("final_check")
    if check:
        worst = check.get("max_system_test_force_mae")
        line += (
            f" (worst system {worst:.4f})" if worst is not None else ""
        ) + f"; NVE check {'stable' if check['stable'] else 'UNSTABLE'}"
    if summary.calibration:
        line += f"; spread calibrated x{summary.calibration['force_std_scale']:.2f}"
    return line + f"; committee in {summary.committee_path}"


def _cmd_plot(args: argparse.Namespace) -> int:
    from pal_atoms.jobs.plotting import plot_run

    paths = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    print("\n".join(str(p) for p in paths) if paths else "nothing to plot yet")
    return 0


def _add_run_parser(
    sub: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    name: str,
    defaults: JobConfig,
    *,
    help: str,  # noqa: A002  (argparse's name)
    description: str,
    options: list[tuple[str, dict[str, object], str]],
) -> None:
    # No abbreviations: ``--steps`` must not quietly mean ``--steps-per-label`` in a job
    # that has no ``--steps`` of its own.
    p = sub.add_parser(
        name, parents=[common], help=help, description=description, allow_abbrev=False
    )
    p.add_argument("--system", type=Path, help="starting structures (extxyz), one per generator")
    p.add_argument("--config", type=Path, help="TOML file with any of the options below")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    for flag, kwargs, text in options:
        dest = str(kwargs.get("dest", flag[2:].replace("-", "_")))
        default = getattr(defaults, dest)
        p.add_argument(flag, default=None, help=f"{text} (default: {default})", **kwargs)
    p.set_defaults(func=_cmd_md)


def add_subcommands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the run-directory subcommands on ``sub``."""
    from pal_atoms.jobs.md import MDRunConfig

    p = sub.add_parser("plot", parents=[common], help="PNG figures of a run")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--out", help="folder for the figures (default: RUN_DIR/plots)")
    p.set_defaults(func=_cmd_plot)

    from pal_atoms.jobs.ts import TSRunConfig

    _add_run_parser(
        sub,
        common,
        "md",
        MDRunConfig(system=Path("x")),
        help="active-learning MD run (xTB oracle, MACE committee by default)",
        description="Parallel active learning on MD of the given structures. Every option "
        "can also be set in a TOML file (--config, keys as the option names, optionally "
        "under [md]); the command line wins.",
        options=MD_OPTIONS,
    )
    _add_run_parser(
        sub,
        common,
        "ts",
        TSRunConfig(system=Path("x")),
        help="active learning on transition-state searches (Sella or NEB)",
        description="Parallel active learning on saddle-point searches: Sella from randomly "
        "perturbed copies of every frame of --system, or (--driver neb) a climbing-image NEB "
        "between consecutive pairs of frames. Converged saddles are checked against the "
        "oracle and written to OUT/saddles.extxyz. Takes every option of 'pal-atoms md' "
        "except --steps, --generators-per-frame, --transfer and the steering options "
        "(--temperature-K and --timestep-fs still make the held-out test set), plus the "
        "search options; TOML keys at the top level or under [ts].",
        options=JOB_OPTIONS + TEST_MD_OPTIONS + TS_OPTIONS,
    )

    from pal_atoms.jobs.reaction import ReactionRunConfig

    _add_run_parser(
        sub,
        common,
        "reaction",
        ReactionRunConfig(system=Path("x")),
        help="an atom transfer learnt at two oracle levels (steered MD), with its barrier",
        description="Active learning on steered MD along d(donor-H) - d(acceptor-H) of every "
        "frame (--transfer or transfer=D,H,A in the frame) with the cheap --oracle; then, with "
        "--high-oracle, --high-budget expensive labels (the path's highest and first images, "
        "further images, the most uncertain structures) and a committee at that level "
        "(fine-tuned or Δ). Reports the "
        "barrier along the reaction path from the committee and both oracles (OUT/path.csv, "
        "path.png). Takes every option of 'pal-atoms md'; TOML keys optionally under "
        "[reaction].",
        options=MD_OPTIONS + REACTION_OPTIONS,
    )

    from pal_atoms.jobs.sh import SHRunConfig

    _add_run_parser(
        sub,
        common,
        "sh",
        SHRunConfig(system=Path("x")),
        help="active learning on surface-hopping photodynamics (PySCF TDA oracle)",
        description="Parallel active learning on Landau-Zener surface hopping: a committee of "
        "--states electronic states, the PySCF excited-state oracle (TDA, every state's energy "
        "and forces) and trajectories from the Wigner distribution of the ground-state minimum "
        "of the first frame of --system. Writes OUT/populations.csv and OUT/hops.csv. Takes "
        "every option of 'pal-atoms md' except --steps, --generators-per-frame, --transfer and "
        "the steering options, plus the surface-hopping options; TOML keys at the top level "
        "or under [sh].",
        options=with_oracles(JOB_OPTIONS, SHRunConfig.allowed_oracles()) + SH_OPTIONS,
    )

    p = sub.add_parser("status", parents=[common], help="progress of a running or finished run")
    p.add_argument("run_dir", help="run directory (or a labels.h5 file)")
    p.set_defaults(func=_cmd_status)
