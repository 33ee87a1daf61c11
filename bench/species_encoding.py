"""Species encodings side by side: does a charged cluster learn faster from the neutral ones?

The shipped Bi clusters come in three charge states (Bi4(2-), Bi8(+1) next to neutral
Bi4, Bi6, Bi8). With the *joint* encoding every (element, charge) pair is its own node
type, so a charged cluster shares nothing with the neutral ones but the interaction
weights; the *factorised* encoding gives every Bi atom the element's embedding plus a
charge (and spin) embedding. Both committees get the same labels (xTB MD at 600 K from
every starting frame), the same seed and the same number of optimizer steps, trained
at the same time in two processes (one core each); the test set is xTB MD at 300 and
900 K from the same frames.

    python bench/species_encoding.py --quick    # 16 labels per system, 1,000 steps
    python bench/species_encoding.py            # 32 labels per system, 3,000 steps, 2 seeds

Writes ``bench/results/species_encoding[_quick].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import table, write_json
from learning_speed import ROOT, _mae_per_system, _xtb_md


def _train(labels_path: str, encoding: str, seed: int, steps: int, out: str) -> None:
    """One committee, trained for ``steps`` steps; its test MAE per system to ``out``."""
    import time

    import torch

    torch.set_num_threads(1)
    from pal_atoms.calculators import CommitteeCalculator, StreamingTrainer, StreamSettings

    labels, test = pickle.loads(Path(labels_path).read_bytes())
    committee = CommitteeCalculator.create(
        "mace",
        elements=["Bi"],
        charges=sorted({int(a.info["charge"]) for a in labels}),
        multiplicities=sorted({int(a.info["multiplicity"]) for a in labels}),
        species_encoding=encoding,
        n_members=4,
        seed=seed,
        device="cpu",
    )
    trainer = StreamingTrainer(committee, StreamSettings(seed=seed))
    trainer.add(labels)
    serving, done, t0 = None, 0, time.monotonic()
    curve = []
    while done < steps:
        for pub in trainer.train_steps(50):
            serving = pub
        done += 50
        if done % 500 == 0 and serving is not None:
            committee.set_weights(serving.weights, members=serving.members)
            curve.append({"steps": done, "test": _mae_per_system(committee, test)["all"]})
    if serving is not None:
        committee.set_weights(serving.weights, members=serving.members)
    result = {
        "encoding": encoding,
        "seed": seed,
        "steps": done,
        "train_s": time.monotonic() - t0,
        "test": _mae_per_system(committee, test),
        "curve": curve,
    }
    Path(out).write_bytes(pickle.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--per-system", type=int, default=None, help="labels per starting frame")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        labels, encoding, seed, steps, out = args.worker
        _train(labels, encoding, int(seed), int(steps), out)
        return
    per = args.per_system or (16 if args.quick else 32)
    steps = args.steps or (1000 if args.quick else 3000)
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io

    frames = ase.io.read(ROOT / "examples" / "bi_cluster.xyz", ":")
    labels = _xtb_md(frames, [600.0], per, 20, seed=7)
    test = _xtb_md(frames, [300.0, 900.0], 6, 25, seed=999)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "labels.pkl"
        data.write_bytes(pickle.dumps((labels, test)))
        for seed in seeds:
            procs = {}
            for enc in ("joint", "factorised"):
                out = Path(tmp) / f"{enc}_{seed}.pkl"
                cmd = [sys.executable, __file__, "--worker", str(data), enc, str(seed)]
                procs[enc] = (subprocess.Popen([*cmd, str(steps), str(out)]), out)
            for _enc, (proc, out) in procs.items():
                if proc.wait() != 0:
                    raise SystemExit(f"worker failed with exit code {proc.returncode}")
                results.append(pickle.loads(out.read_bytes()))
    systems = sorted(k for k in results[0]["test"] if k != "all")
    rows = [
        [r["encoding"], r["seed"], r["steps"], r["train_s"], r["test"]["all"],
         *[r["test"][k] for k in systems]]
        for r in results
    ]  # fmt: skip
    print(table(["encoding", "seed", "steps", "train s", "test MAE", *systems], rows))
    out = write_json(
        "species_encoding_quick" if args.quick else "species_encoding",
        {"labels": len(labels), "test_frames": len(test), "steps": steps, "runs": results},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
