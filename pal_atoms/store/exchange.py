"""Move labels between a label store and extended XYZ files (the lingua franca of MLIPs).

The export writes energy, forces and stress under configurable keys (default ``REF_energy``,
``REF_forces``, ``REF_stress``: what ``mace_run_train`` reads by default, and names that
do not collide with ASE's own calculator keys). Provenance goes along as comment-line keys.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from pal_atoms.core.checks import validate_structure
from pal_atoms.core.errors import InputError
from pal_atoms.store import LabelStore

__all__ = ["export_extxyz", "import_extxyz", "read_labelled", "read_structures", "write_labelled"]

logger = logging.getLogger(__name__)

#: Keys tried, in order, when importing a file without explicit key names.
ENERGY_KEYS = ("REF_energy", "energy", "Energy", "DFT_energy", "dft_energy")
FORCES_KEYS = ("REF_forces", "forces", "DFT_forces", "dft_forces")
STRESS_KEYS = ("REF_stress", "stress", "DFT_stress")

# Keys of atoms.info that are provenance of the store, not user data worth re-importing.
_STORE_KEYS = frozenset(
    {"record_id", "record_index", "status", "settings_hash", "timestamp", "pal_atoms_version"}
)


def read_structures(path: str | os.PathLike[str], *, index: str = ":") -> list[Atoms]:
    """Read every frame of a structure file with a one-line error for bad input.

    Raises:
        InputError: the file is missing, empty, unreadable, or holds an unknown element.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not a structure file")
    if p.stat().st_size == 0:
        raise InputError(f"{p} is empty")
    try:
        frames = ase.io.read(p, index=index, parallel=False)
    except KeyError as exc:  # ASE raises KeyError for unknown element symbols
        raise InputError(f"{p}: unknown element symbol {exc.args[0]!r}") from exc
    except Exception as exc:  # ASE raises many kinds of errors for garbage input
        raise InputError(f"{p}: cannot read structures ({type(exc).__name__}: {exc})") from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError(f"{p} holds no structures")
    return frames


def _put_states(atoms: Atoms, results: dict[str, Any], prefix: str) -> None:
    """Per-state labels as extxyz fields: energies (S,) on the comment line, forces per atom.

    ``{prefix}state_forces`` holds, for each atom, the forces of S0..S(n-1) one after
    another: shape ``(n_atoms, 3 * n_states)``.
    """
    if results.get("state_energies") is None:
        return
    forces = np.asarray(results["state_forces"], dtype=float)  # (S, n, 3)
    atoms.info[f"{prefix}state_energies"] = np.asarray(results["state_energies"], dtype=float)
    atoms.arrays[f"{prefix}state_forces"] = forces.transpose(1, 0, 2).reshape(len(atoms), -1)


def _take_states(atoms: Atoms, prefix: str) -> dict[str, np.ndarray]:
    """Inverse of :func:`_put_states` (removes the fields; ``{}`` when there are none)."""
    energies = atoms.info.pop(f"{prefix}state_energies", None)
    forces = atoms.arrays.pop(f"{prefix}state_forces", None)
    if energies is None or forces is None:
        return {}
    energies = np.atleast_1d(np.asarray(energies, dtype=float))
    forces = np.asarray(forces, dtype=float).reshape(len(atoms), len(energies), 3)
    return {"state_energies": energies, "state_forces": forces.transpose(1, 0, 2)}


def write_labelled(path: str | os.PathLike[str], frames: list[Atoms]) -> None:
    """Write labelled frames to extxyz, per-state labels included (ASE's writer drops them)."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        copy.calc = None
        if results:
            spc = {k: results[k] for k in ("energy", "forces", "stress") if k in results}
            copy.calc = SinglePointCalculator(copy, **spc)
            _put_states(copy, results, "")
        out.append(copy)
    ase.io.write(Path(path), out, format="extxyz", parallel=False)


def read_labelled(path: str | os.PathLike[str]) -> list[Atoms]:
    """Read frames written by :func:`write_labelled` (or any extxyz), states restored."""
    from pal_atoms.core.label import LabelCalculator

    frames = list(ase.io.read(Path(path), ":", parallel=False))
    for atoms in frames:
        states = _take_states(atoms, "")
        if states and atoms.calc is not None:
            results = {k: v for k, v in atoms.calc.results.items() if k != "free_energy"}
            atoms.calc = LabelCalculator(atoms, **results, **states)
    return frames


def export_extxyz(
    store_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    energy_key: str = "REF_energy",
    forces_key: str = "REF_forces",
    stress_key: str = "REF_stress",
    status: str = "ok",
) -> int:
    """Write the labels of a store to an extended XYZ file.

    Args:
        store_path: Label store to read.
        out_path: extxyz file to write (overwritten).
        energy_key: Comment-line key for the energy (eV).
        forces_key: Per-atom column for the forces (eV/Å).
        stress_key: Comment-line key for the stress (eV/Å³, Voigt), periodic records only.
            Per-state labels go under the energy key's prefix: ``REF_state_energies``
            (comment line, eV) and ``REF_state_forces`` (per atom, S0..S(n-1) forces one
            after another, eV/Å).
        status: Records to export; non-ok records are written as geometries only.

    Returns:
        Number of frames written.
    """
    with LabelStore(store_path, mode="r") as store:
        frames = store.read(status=status)
    out: list[Atoms] = []
    for atoms in frames:
        plain = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        # extxyz cannot hold an empty string value (the key swallows the next one).
        plain.info.update({k: v for k, v in atoms.info.items() if v != ""})
        calc = atoms.calc
        if calc is not None:
            plain.info[energy_key] = calc.results["energy"]
            plain.arrays[forces_key] = np.array(calc.results["forces"])
            if "stress" in calc.results:
                plain.info[stress_key] = np.array(calc.results["stress"])
            _put_states(plain, calc.results, _prefix(energy_key))
        out.append(plain)
    ase.io.write(Path(out_path), out, format="extxyz", parallel=False)
    logger.info("exported %d frames to %s", len(out), out_path)
    return len(out)


def _prefix(energy_key: str) -> str:
    """``REF_`` of ``REF_energy``: per-state keys are named like the energy key."""
    return energy_key[: -len("energy")] if energy_key.endswith("energy") else f"{energy_key}_"


def _pick(mapping: Any, explicit: str | None, candidates: tuple[str, ...]) -> Any:
    keys = (explicit,) if explicit else candidates
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def import_extxyz(
    in_path: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    oracle: str | None = None,
    method: str | None = None,
) -> int:
    """Seed a label store with labelled frames from a file ``ase.io.read`` understands.

    Provenance written by :func:`export_extxyz` (oracle, method, generator, uncertainty)
    is restored; ``oracle``/``method`` override it. Energy and forces are taken from
    ``energy_key``/``forces_key`` when given, else from the first of the usual keys
    (``REF_energy``, ``energy``, ...) or the file's calculator.

    Returns:
        Number of records appended.

    Raises:
        InputError: unreadable file, or a frame without energy or forces.
    """
    frames = read_structures(in_path)
    prepared: list[tuple[Atoms, dict[str, Any]]] = []
    for i, atoms in enumerate(frames):
        what = f"frame {i} of {in_path}"
        validate_structure(atoms, min_distance_A=None, what=what)
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        energy = _pick(atoms.info, energy_key, ENERGY_KEYS)
        if energy is None:
            energy = _pick(results, energy_key, ("energy", "free_energy"))
        forces = _pick(atoms.arrays, forces_key, FORCES_KEYS)
        if forces is None:
            forces = _pick(results, forces_key, ("forces",))
        if energy is None or forces is None:
            missing = "energy" if energy is None else "forces"
            raise InputError(f"{what} has no {missing} (name it with --energy-key/--forces-key)")
        stress = _pick(atoms.info, None, STRESS_KEYS)
        if stress is None:
            stress = results.get("stress")
        states = _take_states(atoms, _prefix(energy_key or "REF_energy"))
        info = dict(atoms.info)
        # Provenance written by export_extxyz comes back as provenance, not as extras.
        file_oracle, file_method = info.pop("oracle", "import"), info.pop("method", "")
        provenance: dict[str, Any] = {
            "oracle": oracle or str(file_oracle),
            "method": method or str(file_method),
            "generator_id": int(info.pop("generator_id", -1)),
            "generator_step": int(info.pop("generator_step", -1)),
            "uncertainty": info.pop("uncertainty", None),
            "wall_time_s": float(info.pop("oracle_wall_time_s", 0.0)),
        }
        plain = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        plain.info.update(
            {k: v for k, v in info.items() if k not in _STORE_KEYS and k not in ENERGY_KEYS}
        )
        plain.info.setdefault("imported_from", str(in_path))
        spc: dict[str, Any] = {"energy": float(energy), "forces": np.asarray(forces, dtype=float)}
        if stress is not None and atoms.pbc.any():
            spc["stress"] = np.asarray(stress, dtype=float)
        if states:
            from pal_atoms.core.label import LabelCalculator

            plain.calc = LabelCalculator(plain, **spc, **states)
        else:
            plain.calc = SinglePointCalculator(plain, **spc)
        prepared.append((plain, provenance))
    with LabelStore(store_path) as store:
        for plain, provenance in prepared:
            store.append(plain, "ok", flush=False, **provenance)
        store.flush()
    labelled = prepared
    logger.info("imported %d frames from %s into %s", len(labelled), in_path, store_path)
    return len(labelled)
