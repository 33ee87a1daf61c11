"""What does ``make md`` hand over with other settings? Variants of the default run, side by side.

Each variant is ``pal-atoms md --system examples/bi_cluster.xyz`` with the embedded
defaults plus its own options, run one after the other on the same machine (so the
ratios are the currency, not the absolute times). From each run's ``summary.json``: the
held-out force MAE (all frames and per starting system), the uncertain fraction of the
last metrics window, the calibration (observed RMSE / predicted spread on the held-out
frames), the NVE check, labels and optimizer steps.

    python bench/md_variants.py                                   # default vs equivariant
    python bench/md_variants.py --variant wide "--model-option hidden_irreps=64x0e"
    python bench/md_variants.py --collect md RUN1 --collect rattle RUN2 --test FILE

``--collect NAME DIR`` reads a finished run instead of starting one (runs made by hand
with ``pal-atoms md ... --out DIR``, one after the other). ``--test FILE`` also scores each
final committee per system on independent labelled frames (extxyz, e.g. xTB MD made by
``_xtb_md`` of ``bench/learning_speed.py``). Each row also has the restarts per generator.

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
    return _collect(name, options, out, wall)


def _collect(name: str, options: str, out: Path, wall: float | None) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    checks = summary.get("final_check", {}).get("systems", [])
    per_system = {c["system"]: c["test_force_mae"] for c in checks}
    calibration = summary.get("test_calibration") or {}
    generators = json.loads((out / "generators.json").read_text())
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
        "restarts": [g.get("n_restarts") for _, g in sorted(generators.items())],
        "run": str(out),
    }


def _independent(result: dict[str, Any], frames: list[Any]) -> None:
    from learning_speed import _mae_per_system
    from pal_atoms.calculators import CommitteeCalculator

    committee = CommitteeCalculator.load(Path(result["run"]) / "committee", device="cpu")
    result["independent_force_mae"] = _mae_per_system(committee, frames)


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
    p.add_argument(
        "--collect",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "DIR"),
        help="a finished run to read instead of running a variant (repeatable)",
    )
    p.add_argument("--test", type=Path, default=None, help="independent labelled frames")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here")
    p.add_argument("--name", default="md_variants", help="results file bench/results/NAME.json")
    args = p.parse_args()
    variants = dict(args.variant) if args.variant else ({} if args.collect else DEFAULT_VARIANTS)
    base = args.out or Path(tempfile.mkdtemp(prefix="pal-md-variants-"))
    results = [_run(n, o, base / n, args.system) for n, o in variants.items()]
    for name, run in args.collect:
        config = json.loads((Path(run) / "config.json").read_text())
        results.append(_collect(name, f"collected, bootstrap={config.get('bootstrap')}",
                                Path(run), None))  # fmt: skip
    if args.test is not None:
        import ase.io

        frames = ase.io.read(args.test, ":")
        for r in results:
            _independent(r, frames)
    systems = sorted({s for r in results for s in r["per_system_force_mae"]})
    heads = ["variant", "wall s", "labels", "steps", "MAE eV/Å", *systems]
    heads += ["uncertain", "RMSE/std", "NVE", "restarts"]
    if args.test is not None:
        heads.append("indep. MAE")
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
            f"{min(r['restarts'])}-{max(r['restarts'])}" if r["restarts"] else "-",
            *([r["independent_force_mae"]["all"]] if args.test is not None else []),
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
