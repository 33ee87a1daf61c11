"""Helpers shared by the benchmark scripts: tables on stdout, JSON under bench/results/."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def run_md(system: Path, out: Path, options: Sequence[str] = ()) -> float:
    """Run ``pal-atoms md --system SYSTEM --out OUT OPTIONS`` in a subprocess; its wall time in s.

    Raises:
        RuntimeError: a non-zero exit (with the end of its stderr).
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pal_atoms.cli", "md", "--system", str(system), "--out", str(out)]
    cmd += list(options)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.monotonic() - t0


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float) + "\n")
    return path


def fresh_committee(structures: Sequence[Any], *, members: int, seed: int = 0, **hyper: Any) -> Any:
    """An untrained CPU MACE committee covering the elements and charges of ``structures``."""
    from pal_atoms.calculators import CommitteeCalculator

    return CommitteeCalculator.create(
        "mace",
        elements=sorted({s for a in structures for s in a.get_chemical_symbols()}),
        charges=sorted({int(a.info.get("charge", 0)) for a in structures}),
        n_members=members,
        seed=seed,
        device="cpu",
        **hyper,
    )


def serving_copy(committee: Any, publish: Any) -> Any:
    """A copy of ``committee`` with the weights of ``publish`` (what a run serves), if any."""
    import copy

    out = copy.deepcopy(committee)
    if publish is not None:
        out.set_weights(publish.weights, members=publish.members)
    return out
