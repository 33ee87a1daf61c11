"""Flat float64 buffers for structures and predictions (what travels with ``Send``/``Recv``).

Buffers are self-describing, so their sizes can vary from message to message: the
receiver learns the length from ``Probe`` (``status.Get_count``) and decodes.

Structure record::

    [n_atoms, generator_id, step, charge, multiplicity, cell (9), pbc (3),
     numbers (n), positions (3n)]                                       17 + 4n values

Prediction record::

    [n_atoms, verdict, energy, energy_std, max_force_std, n_states, forces (3n),
     forces_std (n), state energies (S), state forces (3nS)]     6 + 4n + S(1 + 3n)

(``n_states`` is 0 for a committee of one state, which sends no per-state values.)

Label record (an ``ok`` label, for the training and prediction ranks) = structure
record + [energy] + forces (3n) + [has_stress] + stress (6, Voigt, if has_stress) +
[n_states] + state energies (S) + state forces (3nS, state-major), if n_states.

An oracle's result travels as :func:`label_message`: a control dict (status, error,
provenance, ``atoms.info``, ``has_stress``, ``n_states``) and, for an ``ok`` label, one
float64 array of energy, forces, stress and per-state energies and forces
(:func:`label_from_message` rebuilds the :class:`~pal_atoms.core.label.Label`).

The controller routes records without rebuilding them: :func:`structure_records` and
:func:`prediction_records` split a buffer into per-record views, so a generator's record
travels to a prediction rank as it came, and a prediction record goes back to its
generator with only the verdict code written in (:func:`set_verdict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.cell import Cell

from pal_atoms.core.label import Label, LabelCalculator, LabelStatus
from pal_atoms.core.protocols import Verdict

__all__ = [
    "VERDICT_CODES",
    "decode_labels",
    "decode_predictions",
    "decode_structures",
    "encode_labels",
    "encode_predictions",
    "encode_structures",
    "label_data_size",
    "label_from_message",
    "label_message",
    "prediction_records",
    "read_prediction",
    "read_structure",
    "set_verdict",
    "structure_records",
]

_HEAD = 17
_PRED_HEAD = 6
VERDICT_CODES: dict[Verdict, int] = {v: v.severity for v in Verdict}
_VERDICTS = {v: k for k, v in VERDICT_CODES.items()}


def _structure(atoms: Atoms, generator_id: int, step: int) -> np.ndarray:
    n = len(atoms)
    head = np.empty(_HEAD)
    head[:5] = (
        n,
        generator_id,
        step,
        atoms.info.get("charge", 0),
        atoms.info.get("multiplicity", 0),
    )
    head[5:14] = atoms.cell.array.ravel()
    head[14:17] = atoms.pbc
    return np.concatenate([head, atoms.numbers, atoms.positions.ravel()])


def encode_structures(items: Sequence[tuple[Atoms, int, int]]) -> np.ndarray:
    """Concatenate ``(atoms, generator_id, step)`` records into one float64 buffer."""
    return np.concatenate([_structure(a, g, s) for a, g, s in items]) if items else np.empty(0)


def _atoms_public(numbers: np.ndarray, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> Atoms:
    return Atoms(numbers=numbers, positions=pos, cell=cell, pbc=pbc)


def _atoms_direct(numbers: np.ndarray, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> Atoms:
    atoms = Atoms.__new__(Atoms)
    atoms.__dict__.update(
        _cellobj=Cell(cell.copy()),
        _pbc=pbc,
        arrays={"numbers": numbers, "positions": pos.copy()},
        _celldisp=np.zeros(3),
        _constraints=[],
        info={},
        _calc=None,
    )
    return atoms


def _pick_atoms_builder() -> Any:
    """The fastest way to build ``Atoms`` from a record that is exact in this ASE.

    The controller and prediction ranks build one ``Atoms`` per structure and step, and
    ASE's general constructor (validation, conversions) was ~80 % of the controller's
    cost per step. Filling the attributes directly is 5x faster but relies on ASE
    internals, so it is used only if it gives exactly what the constructor gives.
    """
    numbers, pos = np.array([8, 1, 1]), np.arange(9.0).reshape(3, 3)
    cell, pbc = np.diag([5.0, 6.0, 0.0]), np.array([True, True, False])
    try:
        fast = _atoms_direct(numbers, pos, cell, pbc)
        ref = _atoms_public(numbers, pos, cell, pbc)
        same = (
            fast.__dict__.keys() == ref.__dict__.keys()
            and fast == ref
            and fast.copy() == ref
            and fast.get_chemical_formula() == ref.get_chemical_formula()
            and bool(np.all(fast.get_celldisp() == ref.get_celldisp()))
        )
    except Exception:  # any change inside ASE: the public constructor
        same = False
    return _atoms_direct if same else _atoms_public


_build_atoms = _pick_atoms_builder()


def _read_structure(buf: np.ndarray, i: int) -> tuple[Atoms, int, int, int]:
    n = int(buf[i])
    head = buf[i : i + _HEAD]
    numbers = buf[i + _HEAD : i + _HEAD + n].astype(int)
    pos = buf[i + _HEAD + n : i + _HEAD + 4 * n].reshape(n, 3)
    atoms = _build_atoms(numbers, pos, head[5:14].reshape(3, 3), head[14:17].astype(bool))
    atoms.info["charge"] = int(head[3])
    if int(head[4]):
        atoms.info["multiplicity"] = int(head[4])
    return atoms, int(head[1]), int(head[2]), i + _HEAD + 4 * n


def decode_structures(buf: np.ndarray) -> list[tuple[Atoms, int, int]]:
    """Inverse of :func:`encode_structures`."""
    out, i = [], 0
    while i < buf.size:
        atoms, gid, step, i = _read_structure(buf, i)
        out.append((atoms, gid, step))
    return out


def _split(buf: np.ndarray, head: int, what: str, *, per_state: bool = False) -> list[np.ndarray]:
    out, i = [], 0
    while i < buf.size:
        n = int(buf[i])
        j = i + head + 4 * n
        if per_state and i + head <= buf.size:
            j += int(buf[i + head - 1]) * (1 + 3 * n)
        if j > buf.size:
            raise ValueError(f"truncated {what} record at offset {i} of {buf.size}")
        out.append(buf[i:j])
        i = j
    return out


def structure_records(buf: np.ndarray) -> list[np.ndarray]:
    """Views of the structure records in ``buf`` (no copies).

    Raises:
        ValueError: the buffer ends inside a record.
    """
    return _split(buf, _HEAD, "structure")


def read_structure(record: np.ndarray) -> tuple[Atoms, int, int]:
    """``(atoms, generator_id, step)`` of one structure record."""
    atoms, gid, step, _ = _read_structure(record, 0)
    return atoms, gid, step


def encode_predictions(
    results: Sequence[Mapping[str, Any]], verdicts: Sequence[Verdict | None]
) -> np.ndarray:
    """Concatenate prediction records (``None`` verdict: not judged yet, code -1)."""
    parts = []
    for r, v in zip(results, verdicts, strict=True):
        forces = np.asarray(r["forces"], dtype=float)
        n = forces.shape[0]
        fstd = np.asarray(r.get("forces_std", np.zeros(n)), dtype=float)
        states = r.get("state_energies")
        n_states = 0 if states is None else len(states)
        head = [
            n,
            -1 if v is None else VERDICT_CODES[v],
            r["energy"],
            r.get("energy_std", 0.0),
            r.get("max_force_std", 0.0),
            n_states,
        ]
        parts += [np.asarray(head, dtype=float), forces.ravel(), fstd]
        if n_states:
            parts += [
                np.asarray(states, dtype=float),
                np.asarray(r["state_forces"], dtype=float).ravel(),
            ]
    return np.concatenate(parts) if parts else np.empty(0)


def decode_predictions(buf: np.ndarray) -> list[tuple[dict[str, Any], Verdict | None]]:
    """Inverse of :func:`encode_predictions`."""
    return [read_prediction(r) for r in prediction_records(buf)]


def prediction_records(buf: np.ndarray) -> list[np.ndarray]:
    """Views of the prediction records in ``buf`` (no copies).

    Raises:
        ValueError: the buffer ends inside a record.
    """
    return _split(buf, _PRED_HEAD, "prediction", per_state=True)


def read_prediction(record: np.ndarray) -> tuple[dict[str, Any], Verdict | None]:
    """Results dict and verdict (``None``: not judged yet) of one prediction record."""
    n, code = int(record[0]), int(record[1])
    energy = float(record[2])
    i = _PRED_HEAD
    results: dict[str, Any] = {
        "energy": energy,
        "free_energy": energy,
        "energy_std": float(record[3]),
        "max_force_std": float(record[4]),
        "forces": record[i : i + 3 * n].reshape(n, 3).copy(),
        "forces_std": record[i + 3 * n : i + 4 * n].copy(),
    }
    n_states = int(record[5])
    if n_states:
        i += 4 * n
        results["state_energies"] = record[i : i + n_states].copy()
        i += n_states
        results["state_forces"] = record[i : i + 3 * n * n_states].reshape(n_states, n, 3).copy()
    return results, None if code < 0 else _VERDICTS[code]


def set_verdict(record: np.ndarray, verdict: Verdict) -> np.ndarray:
    """Write ``verdict`` into a prediction record (in place) and return the record."""
    record[1] = VERDICT_CODES[verdict]
    return record


def _stress_of(atoms: Atoms) -> np.ndarray | None:
    calc = atoms.calc
    stress = None if calc is None else calc.results.get("stress")
    return None if stress is None else np.asarray(stress, dtype=float).reshape(6)


def _states_of(atoms: Atoms) -> np.ndarray:
    results = {} if atoms.calc is None else atoms.calc.results
    energies = results.get("state_energies")
    if energies is None:
        return np.zeros(1)
    forces = np.asarray(results["state_forces"], dtype=float).ravel()
    return np.concatenate([[len(energies)], np.asarray(energies, dtype=float), forces])


def encode_labels(frames: Sequence[Atoms]) -> np.ndarray:
    """Labelled structures in one buffer.

    Per structure: the structure record, energy (eV), forces (eV/Å), ``[has_stress]`` and
    stress (eV/Å³) if any, ``[n_states]`` and per-state energies and forces if any.
    """
    parts = []
    for a in frames:
        stress = _stress_of(a)
        parts += [
            _structure(a, -1, -1),
            np.array([a.get_potential_energy()]),
            a.get_forces().ravel(),
            np.array([0.0]) if stress is None else np.concatenate([[1.0], stress]),
            _states_of(a),
        ]
    return np.concatenate(parts) if parts else np.empty(0)


def decode_labels(buf: np.ndarray) -> list[Atoms]:
    """Inverse of :func:`encode_labels`."""
    out, i = [], 0
    while i < buf.size:
        atoms, _, _, i = _read_structure(buf, i)
        n = len(atoms)
        results: dict[str, Any] = {
            "energy": float(buf[i]),
            "forces": buf[i + 1 : i + 1 + 3 * n].reshape(n, 3).copy(),
        }
        i += 1 + 3 * n
        if buf[i]:
            results["stress"] = buf[i + 1 : i + 7].copy()
            i += 6
        i += 1
        n_states = int(buf[i])
        i += 1
        if n_states:
            results["state_energies"] = buf[i : i + n_states].copy()
            i += n_states
            results["state_forces"] = buf[i : i + 3 * n * n_states].reshape(n_states, n, 3).copy()
            i += 3 * n * n_states
        atoms.calc = LabelCalculator(atoms, **results)
        out.append(atoms)
    return out


def label_message(
    label: Label, *, generator_id: int, step: int, uncertainty: float
) -> tuple[dict[str, Any], np.ndarray | None]:
    """An oracle's label as ``(control, data)``: what an oracle rank sends the controller.

    ``control`` (a small dict) carries the status, error, provenance and the labelled
    structure's ``info`` (charge, multiplicity); ``data`` is ``None`` for a label that is
    not ``ok``, else ``[energy, forces (3n), stress (6, if any), state energies (S) and
    state forces (3nS), if the label has several states]``.
    """
    control = {
        "status": label.status.value,
        "error": label.error,
        "wall_time_s": label.wall_time_s,
        "oracle": label.oracle,
        "method": label.method,
        "settings": label.settings,
        "attempts": label.attempts,
        "generator_id": generator_id,
        "step": step,
        "uncertainty": float(uncertainty),
        "info": dict(label.atoms.info),
        "has_stress": label.stress is not None,
        "n_states": 0 if label.state_energies is None else len(label.state_energies),
    }
    if not label.ok:
        return control, None
    assert label.energy is not None  # an ok label has energy and forces
    assert label.forces is not None
    parts = [np.array([label.energy]), np.asarray(label.forces, dtype=float).ravel()]
    if label.stress is not None:
        parts.append(np.asarray(label.stress, dtype=float).ravel())
    if label.state_energies is not None:
        parts += [label.state_energies, np.asarray(label.state_forces, dtype=float).ravel()]
    return control, np.concatenate(parts)


def label_data_size(n_atoms: int, control: Mapping[str, Any]) -> int:
    """Length of the ``data`` array of :func:`label_message` (0: none is sent)."""
    if control["status"] != LabelStatus.OK.value:
        return 0
    n_states = int(control.get("n_states", 0))
    return 1 + 3 * n_atoms + (6 if control.get("has_stress") else 0) + n_states * (1 + 3 * n_atoms)


def label_from_message(atoms: Atoms, control: Mapping[str, Any], data: np.ndarray | None) -> Label:
    """Inverse of :func:`label_message` on the geometry that was sent to the oracle."""
    atoms = atoms.copy()
    atoms.info.update(control.get("info", {}))
    n = len(atoms)
    energy = forces = stress = state_energies = state_forces = None
    if data is not None:
        energy, forces = float(data[0]), data[1 : 1 + 3 * n].reshape(n, 3)
        i = 1 + 3 * n
        if control.get("has_stress"):
            stress, i = data[i : i + 6], i + 6
        n_states = int(control.get("n_states", 0))
        if n_states:
            state_energies = data[i : i + n_states]
            state_forces = data[i + n_states : i + n_states * (1 + 3 * n)].reshape(n_states, n, 3)
    return Label(
        atoms=atoms,
        status=LabelStatus(control["status"]),
        energy=energy,
        forces=forces,
        stress=stress,
        state_energies=state_energies,
        state_forces=state_forces,
        error=control["error"],
        wall_time_s=control["wall_time_s"],
        oracle=control["oracle"],
        method=control["method"],
        settings=control["settings"],
        attempts=control["attempts"],
    )
