"""What does ``make md`` hand over with other settings? Variants of the default run, side by side.

Each variant is ``pal-atoms md --system examples/bi_cluster.xyz`` with the embedded
defaults plus its own options, run one after the other on the same machine (so the
ratios are the currency, not the absolute times). From each run's ``summary.json``: the
held-out force MAE (all frames and per starting system), the uncertain fraction of the
last metrics window, the calibration (observed RMSE / predicted spread on the held-out
frames), the NVE check, labels and optimizer steps.

    python bench/md_variants.py                                   # default vs equivariant
    python bench/md_variants.py --variant wide "--model-option hidden_irreps=64x0e"

Writes ``bench/results/md_variants.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import run_md, table, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = {
    "default": "",
    "equivariant": "--model-option hidden_irreps=32x0e+32x1o",
}


def _run(name: str, options: str, out: Path, system: Path) -> dict[str, Any]:
    wall = run_md(system, out, shlex.split(options))
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    checks = summary.get("final_check", {}).get("systems", [])
    per_system = {c["system"]: c["test_force_mae"] for c in checks}
    calibration = summary.get("test_calibration") or {}
    return {
        "variant": name,
        "options": options,
        "wall_s": wall,
        "loop_s": summary.get("wall_time_s"),
        "labels": summary.get("labels_ok"),
        "stop": summary.get("stop_criterion"),
        "test_force_mae": summary.get("final_test_force_mae"),
        "per_system_force_mae": per_system,
        "uncertain_fraction": last.get("uncertain_fraction"),
        "training_steps": last.get("training_steps"),
        "rmse_over_std": calibration.get("rmse_over_std"),
        "spearman_max_force_std": calibration.get("spearman_max_force_std"),
        "nve_stable": all(c.get("stable") for c in checks) if checks else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", type=Path, default=ROOT / "examples" / "bi_cluster.xyz")
    p.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "OPTIONS"),
        help="a variant: its name and its extra pal-atoms md options (repeatable; "
        "default: the default run and equivariant MACE features)",
    )
    p.add_argument("--out", type=Path, default=None, help="keep the runs here")
    p.add_argument("--name", default="md_variants", help="results file bench/results/NAME.json")
    args = p.parse_args()
    variants = dict(args.variant) if args.variant else DEFAULT_VARIANTS
    base = args.out or Path(tempfile.mkdtemp(prefix="pal-md-variants-"))
    results = [_run(n, o, base / n, args.system) for n, o in variants.items()]
    systems = sorted({s for r in results for s in r["per_system_force_mae"]})
    heads = ["variant", "wall s", "labels", "steps", "MAE eV/Å", *systems]
    heads += ["uncertain", "RMSE/std", "NVE"]
    rows = [
        [
            r["variant"],
            r["wall_s"],
            r["labels"],
            r["training_steps"],
            r["test_force_mae"],
            *[r["per_system_force_mae"].get(s, "-") for s in systems],
            r["uncertain_fraction"],
            r["rmse_over_std"],
            "stable" if r["nve_stable"] else "UNSTABLE",
        ]
        for r in results
    ]
    print(table(heads, rows))
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    payload = {
        "command": " ".join(sys.argv),
        "system": str(args.system),
        "OMP_NUM_THREADS": threads,
        "runs": results,
    }
    print("wrote", write_json(args.name, payload))


if __name__ == "__main__":
    main()
