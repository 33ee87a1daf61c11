"""Subcommands that work on run directories (``md``, ``status``, ...)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pal_atoms.errors import InputError

__all__ = ["add_subcommands"]


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


def add_subcommands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the run-directory subcommands on ``sub``."""
    p = sub.add_parser("status", parents=[common], help="progress of a running or finished run")
    p.add_argument("run_dir", help="run directory (or a labels.h5 file)")
    p.set_defaults(func=_cmd_status)
