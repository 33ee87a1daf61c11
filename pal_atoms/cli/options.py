"""Command-line options of the run subcommands (``md``, ``ts``, ``sh``, ``reaction``).

Each entry is ``(flag, argparse keyword arguments, help)``; the defaults are those of the
subcommand's configuration class and shown by ``--help``.
"""

from __future__ import annotations

from pathlib import Path

from pal_atoms.jobs.md_config import BOOTSTRAPS, MODELS, ORACLES

__all__ = [
    "JOB_OPTIONS",
    "MD_DYNAMICS_OPTIONS",
    "MD_OPTIONS",
    "REACTION_OPTIONS",
    "SH_OPTIONS",
    "TEST_MD_OPTIONS",
    "TS_OPTIONS",
    "with_oracles",
]

JOB_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    # (flag, argparse kwargs, help) -- defaults are the job config's, shown by --help.
    ("--out", {"type": Path}, "run directory"),
    ("--charge", {"type": int}, "total charge of every frame (default: from the file, else 0)"),
    ("--oracle", {"choices": list(ORACLES)}, "reference method"),
    ("--method", {}, "oracle method (xtb: GFN2-xTB/GFN1-xTB; DFT: functional)"),
    ("--basis", {}, "basis set for pyscf/turbomole"),
    ("--model", {"choices": list(MODELS)}, "committee backend"),
    ("--committee", {"type": int}, "committee members"),
    (
        "--model-option",
        {"action": "append", "metavar": "KEY=VALUE", "dest": "model_options"},
        "backend hyperparameter, repeatable, e.g. hidden_irreps=32x0e+32x1o",
    ),
    ("--temperature-K", {"type": float}, "MD temperature in K"),
    ("--timestep-fs", {"type": float}, "MD time step in fs"),
    ("--max-labels", {"type": int}, "stop after this many new oracle labels"),
    ("--time-limit", {"type": float, "dest": "time_limit_s"}, "wall-time limit in s"),
    (
        "--train-after-max-labels",
        {"action": "store_true"},
        "continuous training: at --max-labels stop labelling, not the run; train on until "
        "the validation error plateaus or --time-limit",
    ),
    (
        "--training",
        {"metavar": "{continuous,rounds}"},
        "continuous (train without stopping, calibrated spread) or rounds",
    ),
    (
        "--target-force-error",
        {"type": float},
        "expected worst-atom force error (calibrated max_force_std, eV/Å) below which a "
        "prediction is trusted: the trust window's lower bound",
    ),
    ("--lower", {"type": float}, "trust window lower bound, eV/Å (default: the target)"),
    ("--upper", {"type": float}, "trust window upper bound on max_force_std, eV/Å"),
    ("--convergence-window", {"type": int}, "predictions in the window of the convergence stop"),
    (
        "--convergence-fraction",
        {"type": float},
        "converged below this uncertain fraction (and a validation plateau); 0: never",
    ),
    ("--final-check-ps", {"type": float}, "NVE check per system at the end, ps (0: none)"),
    (
        "--steps-per-label",
        {"type": float},
        "continuous training: optimizer steps per new label (label pace)",
    ),
    ("--generator-rate-hz", {"type": float}, "cap on MD steps per second per generator"),
    (
        "--queue-policy",
        {"metavar": "{uncertainty,diverse}"},
        "next structure to label: most uncertain, or uncertainty weighted by novelty",
    ),
    ("--patience", {"type": int}, "uncertain MD steps tolerated before a restart"),
    ("--retrain-size", {"type": int}, "new labels that start a training round"),
    ("--bootstrap-per-frame", {"type": int}, "structures labelled per frame before the loop"),
    ("--test-per-frame", {"type": int}, "held-out oracle-MD frames per starting frame"),
    ("--train-steps", {"type": int}, "optimizer steps per training round"),
    (
        "--oracle-timeout",
        {"type": float, "dest": "oracle_timeout_s"},
        "kill a label after this many s (labels then run in a child process)",
    ),
    ("--device", {}, "torch device: cpu, cuda, cuda:N (default: CUDA when available)"),
    (
        "--np",
        {"type": int},
        "processes (MPI ranks); 1 runs all kernels in one process, more start mpiexec "
        "(>= 5); default: kernel ranks + one per generator up to the cores available; "
        "ignored under mpiexec/srun",
    ),
    ("--prediction-ranks", {"type": int}, "prediction ranks under MPI"),
    ("--oracle-ranks", {"type": int}, "oracle ranks under MPI"),
    ("--training-ranks", {"type": int}, "training ranks under MPI"),
    ("--seed", {"type": int}, "seed of everything random"),
]

#: The MD generators' own options (``md``, ``reaction``).
MD_DYNAMICS_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    ("--steps", {"type": int}, "MD steps per generator"),
    ("--generators-per-frame", {"type": int}, "Langevin generators per starting frame"),
    (
        "--transfer",
        {"metavar": "D,H,A"},
        "atom transfer donor,H,acceptor indices: steer MD along d(D-H)-d(A-H) to the "
        "mirror value (default: atoms.info['transfer'] of each frame, if any)",
    ),
    ("--bias-k-eV-A2", {"type": float}, "force constant of the steering restraint, eV/Å²"),
    ("--steer-steps", {"type": int}, "MD steps over which the steering centre moves"),
    (
        "--steering",
        {"choices": ["once", "sweep"]},
        "steer across the transfer once, or back and forth (period 2 x --steer-steps)",
    ),
]

#: How the held-out test set's oracle MD runs (``md``, ``reaction``, ``ts``; ``sh``
#: labels Wigner samples instead).
TEST_MD_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    (
        "--test-equilibration-fs",
        {"type": float},
        "oracle MD before the first held-out frame, fs (lower it for DFT oracles)",
    ),
    ("--test-spacing-fs", {"type": float}, "oracle MD between held-out frames, fs"),
    (
        "--test-trajectories",
        {"type": int},
        "independent oracle-MD trajectories per starting frame that the held-out frames share",
    ),
    (
        "--bootstrap",
        {"choices": list(BOOTSTRAPS)},
        "labels before the loop: frames of oracle MD run like the test set's, or rattled copies",
    ),
]

MD_OPTIONS = JOB_OPTIONS + TEST_MD_OPTIONS + MD_DYNAMICS_OPTIONS


REACTION_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    ("--high-oracle", {"choices": list(ORACLES)}, "expensive oracle (none: one level)"),
    ("--high-method", {}, "its method (DFT: functional)"),
    ("--high-basis", {}, "its basis set"),
    ("--high-budget", {"type": int}, "expensive labels to train on"),
    (
        "--high-learning",
        {"choices": ["fine-tune", "delta"]},
        "learn the expensive level by fine-tuning the committee or as a Δ model on the cheap one",
    ),
    ("--high-steps", {"type": int}, "optimizer steps of the expensive-level training"),
    ("--path-images", {"type": int}, "images of the reaction path, both ends included"),
    ("--path-k-eV-A2", {"type": float}, "restraint holding each path image, eV/Å²"),
    ("--path-steps", {"type": int}, "optimizer steps per path image"),
    (
        "--transfer-samples",
        {"type": int},
        "per frame, random geometries with the H between donor and acceptor (0: none)",
    ),
]

TS_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    ("--driver", {"choices": ["sella", "neb"]}, "saddle search: Sella per frame, NEB per pair"),
    ("--searches-per-frame", {"type": int}, "Sella searches per starting frame"),
    ("--perturbation-A", {"type": float}, "random displacement of a Sella start, Å"),
    ("--fmax-eV-A", {"type": float}, "convergence threshold on the largest force, eV/Å"),
    ("--max-iterations", {"type": int}, "optimizer steps per attempt"),
    ("--neb-images", {"type": int}, "movable images per NEB band"),
]


SH_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    ("--states", {"type": int}, "electronic states, S0 included"),
    ("--initial-state", {"type": int}, "state the trajectories start on (None: the highest)"),
    ("--generators", {"type": int}, "surface-hopping generators"),
    ("--trajectories", {"type": int}, "trajectories per generator"),
    ("--duration-fs", {"type": float}, "length of one trajectory, fs"),
    (
        "--wigner-temperature-K",
        {"type": float},
        "vibrational temperature of the Wigner initial conditions, K",
    ),
    (
        "--rescaling",
        {"choices": ["gradient_difference", "velocity"]},
        "velocity rescaling direction after a hop",
    ),
]


def with_oracles(
    options: list[tuple[str, dict[str, object], str]], names: tuple[str, ...]
) -> list[tuple[str, dict[str, object], str]]:
    """``options`` with the ``--oracle`` choices of a job."""
    return [
        (flag, {**kw, "choices": list(names)} if flag == "--oracle" else kw, text)
        for flag, kw, text in options
    ]
