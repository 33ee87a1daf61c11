"""The ``pal-atoms`` command line: parse, build a configuration, call ``run(config)``.

Errors in user input end with one line on stderr and exit code 2; other pal-atoms errors
with one line and exit code 1; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from pal_atoms import __version__
from pal_atoms.core.errors import InputError, PalAtomsError

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (argparse prints the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return common


def _cmd_export(args: argparse.Namespace) -> int:
    from pal_atoms.store.exchange import export_extxyz

    n = export_extxyz(
        args.store,
        args.out,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        status=args.status,
    )
    print(f"wrote {n} frames to {args.out}")
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    from pal_atoms.store.exchange import import_extxyz

    n = import_extxyz(
        args.data,
        args.store,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        oracle=args.oracle,
        method=args.method,
    )
    print(f"imported {n} labelled frames into {args.store}")
    return EXIT_OK


def _add_exchange(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="write the labels of a store to extended XYZ",
        description="Write labels to extended XYZ (readable by ase.io.read, usable as MACE "
        "training data: mace_run_train reads REF_energy/REF_forces by default).",
    )
    p.add_argument("store", help="label store (labels.h5)")
    p.add_argument("out", help="extxyz file to write")
    p.add_argument("--energy-key", default="REF_energy", help="energy key, eV (%(default)s)")
    p.add_argument("--forces-key", default="REF_forces", help="forces key, eV/Å (%(default)s)")
    p.add_argument("--stress-key", default="REF_stress", help="stress key, eV/Å³ (%(default)s)")
    p.add_argument(
        "--status",
        default="ok",
        choices=["ok", "failed", "unconverged", "timeout", "cancelled"],
        help="records to export (%(default)s); others are written as geometries only",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import",
        parents=[common],
        help="seed a store from labelled structures",
        description="Append labelled frames (extxyz or any format ase.io.read knows) to a "
        "label store, creating it if needed.",
    )
    p.add_argument("data", help="labelled structures, e.g. data.extxyz")
    p.add_argument("store", help="label store to append to (created if missing)")
    p.add_argument("--energy-key", default=None, help="energy key (default: REF_energy, energy)")
    p.add_argument("--forces-key", default=None, help="forces key (default: REF_forces, forces)")
    p.add_argument("--oracle", default=None, help="oracle name to record (default: from file)")
    p.add_argument("--method", default=None, help="method to record (default: from file)")
    p.set_defaults(func=_cmd_import)


def _cmd_export_model(args: argparse.Namespace) -> int:
    from pal_atoms.jobs.export import export_mace

    for path in export_mace(
        args.committee,
        args.out,
        charge=args.charge,
        multiplicity=args.multiplicity,
        dtype=args.dtype,
    ):
        print(path)
    return EXIT_OK


def _add_export_model(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export-model",
        parents=[common],
        help="write each committee member as a mace model file",
        description="Write member_<m>.model files that mace.calculators.MACECalculator("
        "model_paths=...) loads (MACE committees only; one charge and spin state per export). They "
        "are pickled modules: torch >= 2.6 loads them only with "
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which importing mace.calculators sets (set it "
        "yourself if mace.calculators was imported earlier in a process that also runs "
        "pal-atoms, which removes it). Load only files you trust.",
    )
    p.add_argument("committee", help="committee directory (committee.json, weights.pt)")
    p.add_argument("out", help="folder for the model files (created if needed)")
    p.add_argument("--charge", type=int, default=None, help="total charge to export")
    p.add_argument(
        "--multiplicity",
        type=int,
        default=None,
        help="spin multiplicity to export (spin-aware committees covering several)",
    )
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.set_defaults(func=_cmd_export_model)


def build_parser() -> argparse.ArgumentParser:
    """The ``pal-atoms`` argument parser with all subcommands."""
    common = _common()
    parser = _Parser(
        prog="pal-atoms",
        parents=[common],
        description="Parallel active learning of machine-learned interatomic potentials.",
    )
    parser.add_argument("--version", action="version", version=f"pal-atoms {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_exchange(sub, common)
    _add_export_model(sub, common)
    import pal_atoms.cli.run as cli_run

    cli_run.add_subcommands(sub, common)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not args.debug:
        # mace's TorchScript-compiled modules warn once per module build; pure noise here.
        warnings.filterwarnings(
            "ignore", message="The TorchScript type system", category=UserWarning
        )
        warnings.filterwarnings("ignore", message="cuequivariance", category=UserWarning)
        # Third-party libraries are chatty at INFO; their warnings still show.
        for name in ("matplotlib", "h5py", "torch", "e3nn", "mace", "jax", "PIL"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pal-atoms`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # What to pass on when a subcommand restarts itself under mpiexec (``main(argv)`` may
    # be called from Python, where ``sys.argv`` is someone else's).
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    _setup_logging(args)
    func: Command = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        sys.stderr.write("pal-atoms: interrupted\n")
        return EXIT_INTERRUPTED
    except InputError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"pal-atoms: error: {exc}\n")
        return EXIT_USAGE
    except PalAtomsError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"pal-atoms: error: {exc}\n")
        return EXIT_FAILURE
    except Exception as exc:  # a bug or an unexpected library failure: still one line
        if args.debug:
            raise
        sys.stderr.write(
            f"pal-atoms: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
            "for the traceback)\n"
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
