"""Set-up steps shared by the run subcommands (``md``, ``ts``): oracle, frames, test set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase import Atoms

from pal_atoms.core.checks import charge_and_multiplicity, validate_structure
from pal_atoms.core.errors import InputError
from pal_atoms.store.exchange import read_structures

if TYPE_CHECKING:
    from pal_atoms.jobs.md_config import JobConfig, MDRunConfig

__all__ = [
    "build_oracle",
    "check_run_dir",
    "load_frames",
    "oracle_settings",
    "parse_transfer",
    "prepare_run_dir",
    "transfer_indices",
]


def oracle_settings(name: str, method: str | None, basis: str | None) -> dict[str, Any]:
    """Settings of oracle ``name`` from ``--method`` and ``--basis`` (those given).

    ``--method`` is the xTB method for xtb and the functional for the DFT oracles
    (their settings call it ``functional``).
    """
    import dataclasses

    from pal_atoms.oracles.registry import ORACLES

    fields = {f.name for f in dataclasses.fields(ORACLES[name].settings_type)}
    settings: dict[str, Any] = {}
    if method:
        settings["method" if "method" in fields else "functional"] = method
    if basis:
        settings["basis"] = basis
    return settings


def build_oracle(config: JobConfig) -> Any:
    """The oracle the configuration names (``config.oracle_settings()``)."""
    from pal_atoms.oracles import make_oracle

    return make_oracle(config.oracle, **config.oracle_settings())


def load_frames(config: JobConfig, oracle: Any | None) -> list[Atoms]:
    """Read, check and annotate the starting structures (charge, multiplicity).

    ``oracle``: also ask it whether it can label each frame (``None``: skip that).
    """
    frames = read_structures(config.system)
    for i, atoms in enumerate(frames):
        what = f"frame {i} of {config.system}"
        validate_structure(atoms, min_distance_A=0.5, what=what)
        charge, mult = charge_and_multiplicity(atoms, config.charge)
        atoms.info["charge"], atoms.info["multiplicity"] = charge, mult
        config.check_frame(atoms, what=what)  # the job's own checks (md: the transfer)
        try:
            if oracle is not None:
                oracle.check(atoms)
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from exc
    return frames


def parse_transfer(value: Any) -> tuple[int, int, int]:
    """``(donor, H, acceptor)`` from ``"D,H,A"`` or a sequence of three indices.

    Raises:
        ValueError: not three different non-negative integers.
    """
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        triple = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"expected three atom indices D,H,A, got {value!r}") from None
    if len(triple) != 3 or len(set(triple)) != 3 or min(triple) < 0:
        raise ValueError(f"expected three different atom indices D,H,A >= 0, got {value!r}")
    return triple[0], triple[1], triple[2]


def transfer_indices(
    config: MDRunConfig, atoms: Atoms, *, what: str = "frame"
) -> tuple[int, int, int] | None:
    """``(donor, H, acceptor)`` of a frame: ``config.transfer``, else ``info["transfer"]``.

    Raises:
        InputError: malformed indices, or one outside the frame.
    """
    triple = config.transfer
    try:
        if triple is None and "transfer" in atoms.info:
            triple = parse_transfer(atoms.info["transfer"])
    except ValueError as exc:
        raise InputError(f"{what}: transfer: {exc}") from None
    if triple is not None and max(triple) >= len(atoms):
        raise InputError(
            f"{what}: transfer atom {max(triple)} is outside the frame ({len(atoms)} atoms)"
        )
    return triple


def check_run_dir(config: JobConfig) -> None:
    """Raise :class:`InputError` unless ``out`` suits the job (a run iff ``--resume``)."""
    out = config.out
    if config.resume:
        if not (out / "labels.h5").is_file() or not (out / "config.json").is_file():
            raise InputError(f"--resume: {out} is not a pal-atoms run (no labels.h5/config.json)")
    elif (out / "labels.h5").exists():
        raise InputError(f"{out} already holds a run; use --resume or another --out")


def prepare_run_dir(config: JobConfig) -> None:
    """Create the run folder, or check that ``--resume`` points at a run."""
    check_run_dir(config)
    config.out.mkdir(parents=True, exist_ok=True)
