"""ASE calculator for a committee of machine-learned potentials, with uncertainty.

Definitions (M members, member results ``x_m``, mean ``x̄ = (1/M) Σ_m x_m``):

* ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å, ``(n_atoms, 3)``), ``stress``
  (eV/Å³, Voigt ``(6,)``, periodic cells only): committee means.
* ``energy_std`` (eV): ``sqrt((1/M) Σ_m (E_m - Ē)²)``, i.e. ``numpy.std(energy_comm)``.
* ``forces_std`` (eV/Å, ``(n_atoms,)``): per atom, the RMS over members of the distance
  between the member's force vector and the mean one, ``sqrt((1/M) Σ_m |F_m,i - F̄_i|²)``
  = ``norm(numpy.std(forces_comm, axis=0), axis=-1)``.
* ``max_force_std`` (eV/Å): ``max_i forces_std[i]``.
* Calibration: ``forces_std`` and ``max_force_std`` are the raw spread times the
  committee's ``force_std_scale`` (fitted on validation labels by
  :func:`~pal_atoms.calculators.calibration.fit_force_calibration`; 1 until fitted), so
  they read as expected force error in eV/Å. ``forces_std_raw`` and
  ``max_force_std_raw`` keep the uncalibrated spread.
* ``stress_std`` (eV/Å³, ``(6,)``): ``numpy.std(stress_comm, axis=0)``.
* ``energy_comm`` ``(M,)``, ``forces_comm`` ``(M, n_atoms, 3)``, ``stress_comm`` ``(M, 6)``:
  every member's own result.

A committee of several electronic states (``n_states = S > 1``) adds, per state s:

* ``state_energies`` (eV, ``(S,)``) and ``state_forces`` (eV/Å, ``(S, n_atoms, 3)``):
  committee means; ``gaps`` (eV, ``(S - 1,)``): ``E_{s+1} - E_s`` of the means.
* ``state_energies_std`` ``(S,)`` and ``state_forces_std`` ``(S, n_atoms)`` (calibrated),
  defined per state as above; ``state_energies_comm`` ``(M, S)``, ``state_forces_comm``
  ``(M, S, n_atoms, 3)``.
* ``energy``/``forces``/``energy_std``/``energy_comm``/``forces_comm`` are those of the
  *active* state (:attr:`CommitteeCalculator.active_state`, or ``atoms.info["state"]``),
  so an unmodified ASE script runs MD on that state; ``forces_std`` is the maximum over
  states per atom and ``max_force_std`` the maximum over states and atoms, because a
  trajectory can hop to any state. (The per-state keys are not called ``energies``:
  ASE's ``energies`` are per-atom energies.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .device import resolve_device, resolve_dtype
from .graph import build_graph
from .model import CommitteeModel
from .registry import get_backend
from .species import SpeciesEncoding, SpeciesTable, charge_and_spin, resolve_numbers
from .state_results import STATE_PROPERTIES, state_results

__all__ = ["STATE_PROPERTIES", "CommitteeCalculator", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)


class CommitteeCalculator(Calculator):
    """Committee of N potentials of one backend, as a drop-in ASE calculator.

    Build with :meth:`create` (untrained) or :meth:`load`; train with
    :class:`~pal_atoms.calculators.training.CommitteeTrainer`. Structures carry their total
    charge in ``atoms.info["charge"]`` (default 0) and, for a spin-aware committee, their
    multiplicity in ``atoms.info["multiplicity"]`` (default the lowest); each element at
    each charge and multiplicity the committee was built for is a species (see
    :mod:`~pal_atoms.calculators.species`). Results are defined in the module
    docstring.

    Args:
        model: The committee module.
        species: Node types.
        device: Torch device of the model.
        metadata: Extra metadata (hyperparameters, history) kept with the weights.
        **kwargs: Passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties: ClassVar[list[str]] = [  # type: ignore[misc]
        "energy", "free_energy", "forces", "stress",
        "energy_std", "forces_std", "max_force_std", "stress_std",
        "forces_std_raw", "max_force_std_raw",
        "energy_comm", "forces_comm", "stress_comm",
        *STATE_PROPERTIES,
    ]  # fmt: skip

    def __init__(
        self,
        model: CommitteeModel,
        species: SpeciesTable,
        *,
        device: torch.device,
        metadata: dict[str, Any] | None = None,
        active_state: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._active_state = 0
        # Evaluation mode from the start: trainers switch to training mode and back.
        self.model = model.to(device).eval()
        self.species = species
        self.device = device
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("history", [])
        self.metadata.setdefault("e0_fitted", False)
        self._charge: tuple[int, object] | None = None
        self._state: int | None = None
        self.active_state = active_state

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        backend: str = "mace",
        *,
        elements: Sequence[str] | None = None,
        atomic_numbers: Sequence[int] | None = None,
        charges: Sequence[int] = (0,),
        multiplicities: Sequence[int] | None = None,
        species_encoding: str = "factorised",
        n_members: int = 4,
        mode: str = "full",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        n_states: int = 1,
        **hyperparameters: Any,
    ) -> CommitteeCalculator:
        """Build an untrained committee.

        Args:
            backend: ``"mace"`` or ``"schnet"`` (or a registered backend name).
            elements: Chemical symbols covered, e.g. ``["Bi"]``; or give ``atomic_numbers``.
            atomic_numbers: Atomic numbers covered.
            charges: Total charges covered.
            multiplicities: Spin multiplicities covered (from ``atoms.info["multiplicity"]``,
                default the lowest for the electron count); ``None``: spin-blind, the
                committee does not see a structure's spin state.
            species_encoding: ``"factorised"`` (element, charge and spin one-hots side by
                side: charge states share the element's embedding) or ``"joint"`` (each
                (element, charge, multiplicity) its own node type; SchNet supports only
                this). See :mod:`~pal_atoms.calculators.species`.
            n_members: Committee size (>= 1; >= 2 for a meaningful uncertainty).
            mode: ``"full"`` (independent members) or ``"shared"`` (one backbone with
                ``n_members`` readout heads: the cheap mode).
            seed: Seed of the initial weights (member m uses ``seed + m``).
            device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` picks CUDA when available.
            dtype: ``"float32"`` or ``"float64"``.
            n_states: Electronic states predicted (S0..S(n-1)); 1 for ground-state work.
            **hyperparameters: Backend hyperparameters overriding its defaults.

        Raises:
            ValueError: unknown backend, element, hyperparameter, device or dtype.
        """
        numbers = resolve_numbers(elements, atomic_numbers)
        impl = get_backend(backend)
        encoding = SpeciesEncoding.parse(species_encoding)
        if not impl.reads_node_attributes:
            encoding = SpeciesEncoding.JOINT  # nothing else to choose for such a backend
        species = SpeciesTable.from_elements(numbers, charges, multiplicities, encoding)
        hyper = impl.hyperparameters(hyperparameters)
        torch_dtype = resolve_dtype(dtype)
        dev = resolve_device(device)
        model = CommitteeModel(
            impl, len(species), hyper, n_members, mode=mode, seed=seed, n_states=n_states,
            node_attributes=species.attributes(),
        ).to(torch_dtype)  # fmt: skip
        meta = {"seed": seed}
        return cls(model, species, device=dev, metadata=meta)

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device | None = None
    ) -> CommitteeCalculator:
        """Load a committee written by :meth:`save` (see :mod:`~pal_atoms.calculators.io`)."""
        from .io import load_committee

        return load_committee(cls, directory, device=resolve_device(device))

    def save(self, directory: str | Path) -> Path:
        """Write weights (``weights.pt``) and metadata (``committee.json``) to ``directory``."""
        from .io import save_committee

        return save_committee(self, directory)

    # ------------------------------------------------------------------ properties
    @property
    def n_members(self) -> int:
        """Committee size."""
        return self.model.n_members

    @property
    def n_states(self) -> int:
        """Electronic states predicted per structure."""
        return self.model.n_states

    @property
    def active_state(self) -> int:
        """State whose energy and forces are ``energy``/``forces`` (0: ground state).

        ``atoms.info["state"]``, where set, overrides it for that structure.
        """
        return self._active_state

    @active_state.setter
    def active_state(self, state: int) -> None:
        self._active_state = self._check_state_index(state)
        self.reset()

    def _check_state_index(self, state: Any) -> int:
        if isinstance(state, bool) or not isinstance(state, (int, np.integer)):
            raise ValueError(f"state must be an integer, got {state!r}")
        if not 0 <= int(state) < self.n_states:
            raise ValueError(f"state {state} out of range: this committee has {self.n_states}")
        return int(state)

    def _state_of(self, atoms: Atoms) -> int:
        state = atoms.info.get("state")
        return self._active_state if state is None else self._check_state_index(state)

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff in Å."""
        return float(self.model.hyper["r_max"])

    @property
    def force_std_scale(self) -> float:
        """Calibration factor of the force spread (1 until :meth:`set_calibration`)."""
        return float(self.metadata.get("calibration", {}).get("force_std_scale", 1.0))

    def set_calibration(self, calibration: Any) -> None:
        """Use a fitted calibration (a ``ForceCalibration`` or its ``as_dict()``).

        Raises:
            ValueError: the scale is not a positive finite number.
        """
        info = calibration.as_dict() if hasattr(calibration, "as_dict") else dict(calibration)
        scale = float(info.get("force_std_scale", float("nan")))
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"force_std_scale must be positive and finite, got {scale}")
        self.metadata["calibration"] = info
        self.reset()

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model."""
        return self.model.scale.dtype

    def to(
        self, device: str | torch.device | None = None, dtype: str | None = None
    ) -> CommitteeCalculator:
        """Move the model to another device and/or dtype (in place); returns ``self``."""
        if device is not None:
            self.device = resolve_device(device)
            self.model.to(self.device)
        if dtype is not None:
            self.model.to(resolve_dtype(dtype))
            self.model.e0.data = self.model.e0.data.double()
        self.reset()
        return self

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list[dict[str, torch.Tensor]]:
        """One state dict per member (CPU tensor copies), for sending to other processes.

        Keys: ``backbone.*``, ``head.*`` and the common buffers ``e0``, ``scale``, ``shift``.
        In shared mode every member's dict holds the shared backbone.
        """
        common = {
            k: getattr(self.model, k).detach().cpu().clone() for k in ("e0", "scale", "shift")
        }
        out = []
        for m in range(self.n_members):
            bb = self.model.backbones[0 if self.model.mode == "shared" else m]
            d = {f"backbone.{k}": v.detach().cpu().clone() for k, v in bb.state_dict().items()}
            d.update(
                {
                    f"head.{k}": v.detach().cpu().clone()
                    for k, v in self.model.heads[m].state_dict().items()
                }
            )
            d.update(common)
            out.append(d)
        return out

    def set_weights(
        self, weights: Sequence[dict[str, torch.Tensor]], members: Sequence[int] | None = None
    ) -> None:
        """Load member state dicts (as from :meth:`get_weights`) into ``members``.

        Args:
            weights: One state dict per entry of ``members``.
            members: Target member indices; ``None`` means all, in order.

        Raises:
            ValueError: wrong number of state dicts, a bad member index, or a state dict
                that does not fit the architecture.
        """
        idx = list(range(self.n_members)) if members is None else [int(m) for m in members]
        if len(weights) != len(idx):
            raise ValueError(f"got {len(weights)} state dicts for {len(idx)} members")
        if any(not 0 <= m < self.n_members for m in idx):
            raise ValueError(f"member indices {idx} out of range 0..{self.n_members - 1}")
        try:
            for m, w in zip(idx, weights, strict=True):
                bb = self.model.backbones[0 if self.model.mode == "shared" else m]
                bb.load_state_dict({k[9:]: v for k, v in w.items() if k.startswith("backbone.")})
                self.model.heads[m].load_state_dict(
                    {k[5:]: v for k, v in w.items() if k.startswith("head.")}
                )
                for k in ("e0", "scale", "shift"):
                    getattr(self.model, k).data.copy_(w[k])
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"weights do not fit this committee: {exc}") from exc
        self.reset()

    # ------------------------------------------------------------------ prediction
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's checks plus the total charge and multiplicity in ``atoms.info``."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and charge_and_spin(atoms) != self._charge:
            changes.append("initial_charges")
        if self.atoms is not None and self._state_of(atoms) != self._state:
            changes.append("state")
        return changes

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Evaluate all members on ``atoms`` and fill :attr:`results` with every key."""
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        self._charge = charge_and_spin(self.atoms)
        self._state = self._state_of(self.atoms)
        self.results = self.predict_batch([self.atoms])[0]

    def predict_batch(self, structures: Sequence[Atoms]) -> list[dict[str, Any]]:
        """Evaluate many structures in one batched forward pass.

        Args:
            structures: Structures (e.g. one per generator); not modified.

        Returns:
            One dict per structure with the calculator's keys (stress keys for periodic
            structures only); floats for scalars, NumPy arrays otherwise.

        Raises:
            StructureError: (a ``ValueError``) empty structure, NaN/inf positions, an
                element or total charge the committee was not built for.
            ValueError: a state index out of range, or a periodic structure given to a
                committee of several states.
        """
        if self.n_states > 1:
            return self._predict_states(structures)
        periodic = any(a.pbc.any() for a in structures)
        graph = build_graph(
            structures, self.species, self.cutoff, device=self.device, dtype=self.dtype
        )
        with self.model.evaluating():
            out = self.model(graph, forces=True, stress=periodic)
        energy = (out["energy"].detach().double() + self.model.e0_sum(graph)[None]).cpu().numpy()
        forces = out["forces"].detach().double().cpu().numpy()
        stress = out["stress"].detach().double().cpu().numpy() if periodic else None
        bounds = np.concatenate([[0], np.cumsum(graph.n_atoms.cpu().numpy())])
        results = []
        scale = self.force_std_scale
        for g, atoms in enumerate(structures):
            f_comm = forces[:, bounds[g] : bounds[g + 1]]
            e_comm = energy[:, g]
            f_std = np.linalg.norm(f_comm.std(axis=0), axis=-1)
            res: dict[str, Any] = {
                "energy": float(e_comm.mean()),
                "free_energy": float(e_comm.mean()),
                "forces": f_comm.mean(axis=0),
                "energy_std": float(e_comm.std()),
                "forces_std": scale * f_std,
                "max_force_std": scale * float(f_std.max()),
                "forces_std_raw": f_std,
                "max_force_std_raw": float(f_std.max()),
                "energy_comm": e_comm.copy(),
                "forces_comm": f_comm.copy(),
            }
            if stress is not None and atoms.pbc.any():
                s_comm = np.stack([full_3x3_to_voigt_6_stress(s) for s in stress[:, g]])
                res.update(
                    stress=s_comm.mean(axis=0), stress_std=s_comm.std(axis=0), stress_comm=s_comm
                )
            results.append(res)
        return results

    def _predict_states(self, structures: Sequence[Atoms]) -> list[dict[str, Any]]:
        """:meth:`predict_batch` of a committee of several states (module docstring)."""
        states = [self._state_of(a) for a in structures]
        if any(a.pbc.any() for a in structures):
            raise ValueError("a committee of several states takes molecules (no periodic cell)")
        graph = build_graph(
            structures, self.species, self.cutoff, device=self.device, dtype=self.dtype
        )
        with self.model.evaluating():
            out = self.model(graph, forces=True)
        e0 = self.model.e0_sum(graph)[None, :, None]
        return state_results(
            (out["energy"].detach().double() + e0).cpu().numpy(),
            out["forces"].detach().double().cpu().numpy(),
            graph.n_atoms.cpu().numpy(),
            states,
            self.force_std_scale,
        )
