"""Conformance checks for kernels: is this a valid oracle, generator or committee backend?

Run them on your own implementation (in a test) before handing it to a workflow::

    from pal_atoms.testing import check_committee, check_generator, check_oracle

    check_oracle(MyOracle(), atoms)
    check_generator(MyGenerator(atoms), LocalClient(calculator=committee))
    check_committee(MyCommittee(), atoms)

Each check raises :class:`AssertionError` with a message that says what was expected
and what was found, so a failure reads like a failed test. This module is meant for
tests; library code never calls it.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.core.protocols import PredictionClient, Verdict

__all__ = ["COMMITTEE_KEYS", "check_committee", "check_generator", "check_oracle"]

#: Result keys every committee must declare and deliver (stress keys: periodic cells only).
COMMITTEE_KEYS = (
    "energy", "forces", "energy_std", "forces_std", "max_force_std", "energy_comm", "forces_comm",
)  # fmt: skip


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def _json_round_trip(value: Any, what: str) -> Any:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-serialisable: {exc}") from None
    return json.loads(text)


# -- oracles ----------------------------------------------------------------------------------
def check_oracle(oracle: Any, atoms: Atoms, *, energy_tol_eV: float = 1e-6) -> Label:
    """Check the oracle contract of :mod:`pal_atoms.oracles` on one structure.

    Checks: an ASE :class:`~ase.calculators.calculator.Calculator` and a
    :class:`~pal_atoms.oracles.Oracle` declaring ``energy`` and ``forces``; non-empty
    ``name`` and ``method``; ``settings`` a dict that survives a JSON round trip
    unchanged; ``check(atoms)`` passes; a pickle round trip keeps type, name, method and
    settings; :func:`pal_atoms.oracles.label` returns an ``ok``
    :class:`~pal_atoms.core.label.Label` with the oracle's provenance, a finite energy and
    finite forces of shape ``(n_atoms, 3)``; and the plain ASE route
    (``atoms.calc = oracle``) gives the same energy.

    Args:
        oracle: The oracle instance.
        atoms: A structure the oracle should label (small: it is computed twice).
        energy_tol_eV: Allowed difference in eV between the ASE route and the label.

    Returns:
        The label, for further checks.

    Raises:
        AssertionError: the first violated expectation, described.
    """
    _check_oracle_contract(oracle)
    try:
        oracle.check(atoms)
    except Exception as exc:
        raise AssertionError(f"oracle.check(atoms) raised {type(exc).__name__}: {exc}") from exc
    try:
        # Round trip of the caller's own object (what a worker process receives).
        clone = pickle.loads(pickle.dumps(oracle))  # noqa: S301
    except Exception as exc:
        raise AssertionError(f"the oracle does not pickle: {type(exc).__name__}: {exc}") from exc
    if type(clone) is not type(oracle):
        _fail(f"unpickling gave a {type(clone).__name__}, not a {type(oracle).__name__}")
    if (clone.name, clone.method, clone.settings) != (oracle.name, oracle.method, oracle.settings):
        _fail(f"a pickle round trip changed the oracle: {clone.settings!r} != {oracle.settings!r}")
    result = _check_label(oracle, atoms)
    energy = result.energy if result.energy is not None else math.nan
    work = atoms.copy()
    work.calc = clone
    ase_energy = float(work.get_potential_energy())
    ase_forces = np.asarray(work.get_forces())
    if abs(ase_energy - energy) > energy_tol_eV or ase_forces.shape != (len(atoms), 3):
        _fail(
            f"ASE route gave E = {ase_energy:.8f} eV (forces {ase_forces.shape}), "
            f"label() gave {energy:.8f} eV"
        )
    return result


def _check_oracle_contract(oracle: Any) -> None:
    from pal_atoms.oracles import Oracle

    if not isinstance(oracle, Calculator):
        _fail(f"an oracle must be an ASE Calculator, got {type(oracle).__name__}")
    if not isinstance(oracle, Oracle):
        _fail(
            f"{type(oracle).__name__} is not a pal_atoms.oracles.Oracle; subclass it or wrap "
            "the calculator with pal_atoms.oracles.Wrapped"
        )
    missing = {"energy", "forces"} - set(oracle.implemented_properties)
    if missing:
        _fail(f"implemented_properties {oracle.implemented_properties} lacks {sorted(missing)}")
    for attr in ("name", "method"):
        value = getattr(oracle, attr)
        if not isinstance(value, str) or not value:
            _fail(f"oracle.{attr} must be a non-empty string, got {value!r}")
    settings = oracle.settings
    if not isinstance(settings, dict):
        _fail(f"oracle.settings must be a dict, got {type(settings).__name__}")
    if _json_round_trip(settings, "oracle.settings") != settings:
        _fail(f"oracle.settings changes in a JSON round trip (tuples? numpy?): {settings!r}")


def _check_label(oracle: Any, atoms: Atoms) -> Label:
    from pal_atoms.oracles import label

    positions = atoms.positions.copy()
    result = label(atoms, oracle)
    if not isinstance(result, Label):
        _fail(f"label() returned a {type(result).__name__}, not a Label")
    if not np.array_equal(atoms.positions, positions):
        _fail("labelling modified the input structure's positions")
    if result.status is not LabelStatus.OK:
        _fail(f"labelling a valid structure gave status {result.status.value!r}: {result.error}")
    if (result.oracle, result.method) != (oracle.name, oracle.method):
        _fail(f"label provenance {(result.oracle, result.method)} is not the oracle's")
    n, energy, forces = len(atoms), result.energy, np.asarray(result.forces)
    if energy is None or not math.isfinite(energy):
        _fail(f"ok label with energy {energy!r} (expected a finite float in eV)")
    if forces.shape != (n, 3) or not np.all(np.isfinite(forces)):
        _fail(f"ok label forces have shape {forces.shape} (expected ({n}, 3), finite)")
    return result


# -- generators -------------------------------------------------------------------------------
def _check_events(events: list[Any], generator: Any, after_step: int, n_steps: int) -> None:
    from pal_atoms.dynamics import Action, GeneratorEvent

    if len(events) > n_steps:
        _fail(f"irun(max_steps={n_steps}) yielded {len(events)} events")
    previous = after_step
    for i, event in enumerate(events):
        if not isinstance(event, GeneratorEvent):
            _fail(f"event {i} is a {type(event).__name__}, not a GeneratorEvent")
        if event.generator_id != generator.generator_id:
            _fail(f"event {i} has generator_id {event.generator_id}, not {generator.generator_id}")
        if event.step <= previous:
            _fail(f"event {i} has step {event.step} after step {previous} (must increase)")
        previous = event.step
        if event.verdict is not None and not isinstance(event.verdict, Verdict):
            _fail(f"event {i} verdict {event.verdict!r} is not a Verdict or None")
        if event.energy is not None and not math.isfinite(event.energy):
            _fail(f"event {i} energy {event.energy!r} is not finite")
        if event.action is Action.FINISHED and i != len(events) - 1:
            _fail(f"event {i} is FINISHED but irun went on yielding")


def check_generator(
    generator: Any,
    client: PredictionClient,
    n_steps: int = 5,
    *,
    fresh: Callable[[], Any] | None = None,
    reproducible: bool = False,
    energy_tol_eV: float = 1e-6,
) -> None:
    """Check the generator contract of :mod:`pal_atoms.dynamics` (runs the generator).

    Checks: ``irun(client, max_steps=n_steps)`` yields 1..``n_steps``
    :class:`~pal_atoms.dynamics.GeneratorEvent` s with this generator's id and strictly
    increasing steps, ``FINISHED`` only last; ``state()`` survives ``json.dumps``; a fresh
    generator restored from that state continues: its steps go on from the saved ones,
    and they are those the original generator takes next (with ``reproducible``, their
    energies too).

    Args:
        generator: The generator, before it has run.
        client: A prediction client (e.g. :class:`~pal_atoms.dynamics.LocalClient`).
        n_steps: Steps per ``irun`` call (the check makes three calls).
        fresh: Makes a new generator of the same kind to restore into; default: a
            ``copy.deepcopy`` of ``generator`` taken before it runs.
        reproducible: Also require the restored generator's energies to match the
            original's continuation (deterministic generators with a complete state).
        energy_tol_eV: Energy tolerance in eV for ``reproducible``.

    Raises:
        AssertionError: the first violated expectation, described.
    """
    from pal_atoms.dynamics import Action

    missing = [a for a in ("irun", "state", "restore") if not callable(getattr(generator, a, None))]
    if missing or not isinstance(client, PredictionClient):
        _fail(f"{type(generator).__name__} lacks {missing} or the client has no evaluate()")
    try:
        restored = fresh() if fresh is not None else copy.deepcopy(generator)
    except Exception as exc:
        raise AssertionError(f"no fresh generator ({exc}); pass fresh=a factory") from exc

    first = list(generator.irun(client, max_steps=n_steps))
    if not first:
        _fail(f"irun(max_steps={n_steps}) on a new generator yielded nothing")
    _check_events(first, generator, 0, n_steps)
    state = _json_round_trip(generator.state(), "state()")
    finished = first[-1].action is Action.FINISHED

    try:
        restored.restore(state)
    except Exception as exc:
        raise AssertionError(f"restore(state()) raised {type(exc).__name__}: {exc}") from exc
    again = list(restored.irun(client, max_steps=n_steps))
    more = list(generator.irun(client, max_steps=n_steps))
    if finished and (again or more):
        _fail("a generator that finished yielded more events after restore or another irun")
    if finished:
        return
    if not again:
        _fail("the restored generator yielded nothing although the original had not finished")
    _check_events(again, restored, first[-1].step, n_steps)
    _check_events(more, generator, first[-1].step, n_steps)
    steps, steps_more = [e.step for e in again], [e.step for e in more]
    if steps != steps_more:
        _fail(f"restored generator took steps {steps}, the original went on with {steps_more}")
    if reproducible:
        _compare_energies(again, more, energy_tol_eV)


def _compare_energies(restored: list[Any], original: list[Any], tol_eV: float) -> None:
    for a, b in zip(restored, original, strict=True):
        e_a, e_b = (math.nan if e is None else e for e in (a.energy, b.energy))
        if not (abs(e_a - e_b) <= tol_eV or (math.isnan(e_a) and math.isnan(e_b))):
            _fail(f"step {a.step}: restored energy {a.energy} != original {b.energy} eV")


# -- committees -------------------------------------------------------------------------------
def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _shapes(n_members: int, n_atoms: int) -> dict[str, tuple[int, ...]]:
    m, n = n_members, n_atoms
    return {
        "energy": (), "free_energy": (), "energy_std": (), "max_force_std": (),
        "forces": (n, 3), "forces_std": (n,), "stress": (6,), "stress_std": (6,),
        "energy_comm": (m,), "forces_comm": (m, n, 3), "stress_comm": (m, 6),
    }  # fmt: skip


def _properties(committee: Calculator, atoms: Atoms) -> dict[str, np.ndarray]:
    """Every declared key through ``get_property`` (stress keys: periodic cells only)."""
    declared = list(committee.implemented_properties)
    missing = [k for k in COMMITTEE_KEYS if k not in declared]
    if missing:
        _fail(f"implemented_properties lacks {missing} (a committee must declare them)")
    work = atoms.copy()
    committee.reset()
    values: dict[str, np.ndarray] = {}
    one_state = int(getattr(committee, "n_states", 1)) == 1
    for key in declared:
        if "stress" in key and not atoms.pbc.any():
            continue
        if one_state and (key.startswith("state_") or key == "gaps"):
            continue  # results of committees of several electronic states only
        try:
            values[key] = np.asarray(committee.get_property(key, work), dtype=float)
        except PropertyNotImplementedError as exc:
            raise AssertionError(f"declared property {key!r} not retrievable: {exc}") from exc
    extra = sorted(set(committee.results) - set(declared))
    if extra:
        _fail(f"results hold keys not in implemented_properties: {extra}")
    if Calculator.implemented_properties:
        _fail(f"Calculator.implemented_properties mutated: {Calculator.implemented_properties}")
    return values


def check_committee(
    committee: Any,
    atoms: Atoms,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    fd_step_A: float = 1e-3,
    fd_atol: float = 2e-3,
    fd_rtol: float = 2e-2,
    seed: int = 0,
) -> None:
    """Check the committee-calculator contract of :mod:`pal_atoms.calculators`.

    Checks: every key in ``implemented_properties`` (at least :data:`COMMITTEE_KEYS`;
    stress keys only for a periodic ``atoms``) is retrievable with ``get_property`` and
    no undeclared key appears in ``results``; shapes (``energy_comm`` ``(M,)``,
    ``forces_comm`` ``(M, n, 3)``, ``forces_std`` ``(n,)``, ...); finite values;
    standard deviations >= 0 and consistent with ``numpy.std`` of the ``*_comm`` keys
    (definitions in :mod:`pal_atoms.calculators.committee`); means consistent with the
    members; ``forces ≈ -dE/dx`` by a central finite difference on the largest force
    component; ``predict_batch`` on two structures equals the per-structure results and
    leaves its input unchanged.

    Args:
        committee: The committee calculator (an ASE calculator with ``predict_batch``).
        atoms: A structure the committee covers; not symmetric, so that forces are not
            zero by symmetry.
        rtol: Relative tolerance of the consistency and batching checks.
        atol: Absolute tolerance (eV, eV/Å) of the consistency and batching checks.
        fd_step_A: Finite-difference displacement in Å.
        fd_atol: Absolute tolerance of the finite-difference force in eV/Å.
        fd_rtol: Relative tolerance of the finite-difference force.
        seed: Seed of the rattle that makes the second structure of the batch check.

    Raises:
        AssertionError: the first violated expectation, described.
    """
    if not isinstance(committee, Calculator):
        _fail(f"a committee must be an ASE Calculator, got {type(committee).__name__}")
    if not callable(getattr(committee, "predict_batch", None)):
        _fail(f"{type(committee).__name__} has no predict_batch(list_of_atoms)")
    values = _properties(committee, atoms)
    n_members = int(values["energy_comm"].size)
    declared = getattr(committee, "n_members", n_members)
    if n_members < 1 or declared != n_members:
        _fail(f"energy_comm has {n_members} entries; n_members = {declared}")
    for key, shape in _shapes(n_members, len(atoms)).items():
        if key in values and values[key].shape != shape:
            _fail(f"{key} has shape {values[key].shape}, expected {shape}")
    for key, value in values.items():
        if not np.all(np.isfinite(value)):
            _fail(f"{key} is not finite: {value}")
    for key in ("energy_std", "forces_std", "max_force_std", "stress_std"):
        if key in values and np.any(values[key] < 0):
            _fail(f"{key} is negative: {values[key]}")
    e_comm, f_comm = values["energy_comm"], values["forces_comm"]
    expected = {
        "energy": e_comm.mean(),
        "forces": f_comm.mean(axis=0),
        "energy_std": e_comm.std(),
        "forces_std": np.linalg.norm(f_comm.std(axis=0), axis=-1),
        "max_force_std": np.linalg.norm(f_comm.std(axis=0), axis=-1).max(),
    }
    if "stress_comm" in values:
        expected.update(stress=values["stress_comm"].mean(axis=0))
        expected.update(stress_std=values["stress_comm"].std(axis=0))
    for key, want in expected.items():
        if key in values and not _close(values[key], want, rtol, atol):
            _fail(f"{key} = {values[key]} is not consistent with the members: expected {want}")

    _check_finite_difference(
        committee, atoms, values["forces"], h=fd_step_A, atol=fd_atol, rtol=fd_rtol
    )
    _check_batch(committee, atoms, rtol, atol, seed)


def _check_finite_difference(
    committee: Calculator, atoms: Atoms, forces: np.ndarray, *, h: float, atol: float, rtol: float
) -> None:
    i, c = np.unravel_index(int(np.argmax(np.abs(forces))), forces.shape)
    energies = []
    for sign in (1.0, -1.0):
        work = atoms.copy()
        work.positions[i, c] += sign * h
        energies.append(float(committee.get_property("energy", work)))
    fd = -(energies[0] - energies[1]) / (2 * h)
    if abs(fd - forces[i, c]) > atol + rtol * abs(fd):
        _fail(
            f"forces[{i}, {c}] = {forces[i, c]:.6g} eV/Å but -dE/dx by finite difference "
            f"(h = {h} Å) = {fd:.6g} eV/Å"
        )


def _check_batch(committee: Any, atoms: Atoms, rtol: float, atol: float, seed: int) -> None:
    other = atoms.copy()
    other.rattle(0.05, seed=seed)
    frames = [atoms.copy(), other]
    before = [a.positions.copy() for a in frames]
    batch = committee.predict_batch(frames)
    if len(batch) != 2:
        _fail(f"predict_batch of 2 structures returned {len(batch)} results")
    if not all(np.array_equal(a.positions, p) for a, p in zip(frames, before, strict=True)):
        _fail("predict_batch modified its input structures")
    for j, (frame, got) in enumerate(zip(frames, batch, strict=True)):
        committee.reset()
        committee.get_property("energy", frame.copy())
        single = dict(committee.results)
        if set(got) != set(single):
            _fail(f"predict_batch keys {sorted(got)} differ from calculate's {sorted(single)}")
        for key, value in single.items():
            if not _close(got[key], value, rtol, atol):
                _fail(f"structure {j}: predict_batch {key} differs from a single calculation")
