"""Trajectory frames written by a generator, rank-locally, as ASE trajectory, HDF5 or extxyz."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from pal_atoms.core.protocols import Verdict

from .mpi_safety import open_trajectory, write_frames

__all__ = ["FrameWriter"]

logger = logging.getLogger(__name__)

_VERDICT_CODES: dict[Verdict | None, int] = {None: -1, **{v: v.severity for v in Verdict}}


class FrameWriter:
    """Append frames to one file; the format follows the suffix.

    ``.traj``: ASE trajectory (energy and forces attached). ``.h5``/``.hdf5``: HDF5 with
    datasets ``numbers`` ``(n_atoms,)``, ``positions`` ``(n_frames, n_atoms, 3)`` in Å,
    ``energy`` ``(n_frames,)`` in eV, ``step`` and ``verdict`` ``(n_frames,)`` (verdict
    codes -1 none, 0 trusted, 1 uncertain, 2 untrusted; listed in the file attribute
    ``verdict_codes``). ``.xyz``/``.extxyz``: extended XYZ. Every write happens on the
    calling rank (no MPI collectives).

    Args:
        path: Output file.
        append: Append to an existing file (resume) instead of overwriting it.
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix == ".traj":
            self._kind = "traj"
        elif suffix in (".h5", ".hdf5"):
            self._kind = "h5"
        elif suffix in (".xyz", ".extxyz"):
            self._kind = "xyz"
        else:
            raise ValueError(f"frame file must end in .traj, .h5, .hdf5, .xyz or .extxyz: {path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.append = append and self.path.exists()
        if not self.append:
            self.path.unlink(missing_ok=True)
        self.n_frames = 0
        self._traj: Any = None
        self._h5: Any = None

    def write(
        self,
        atoms: Atoms,
        *,
        step: int,
        energy: float | None = None,
        forces: np.ndarray | None = None,
        verdict: Verdict | None = None,
    ) -> None:
        """Append one frame.

        Args:
            atoms: Geometry (positions in Å); not modified.
            step: Generator step index.
            energy: Potential energy in eV.
            forces: Forces in eV/Å, shape ``(n_atoms, 3)``.
            verdict: Verdict of the frame.
        """
        if self._kind == "h5":
            self._write_h5(atoms, step, energy, verdict)
        else:
            frame = atoms.copy()
            frame.info.update(step=int(step), verdict=str(verdict) if verdict else "none")
            if energy is not None:
                frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
            if self._kind == "traj":
                if self._traj is None:
                    self._traj = open_trajectory(self.path, "a" if self.append else "w")
                self._traj.write(frame)
            else:
                write_frames(
                    self.path, frame, fmt="extxyz", append=self.append or self.n_frames > 0
                )
        self.n_frames += 1

    def _write_h5(
        self, atoms: Atoms, step: int, energy: float | None, verdict: Verdict | None
    ) -> None:
        import h5py

        n = len(atoms)
        if self._h5 is None and self.append:
            self._h5 = h5py.File(self.path, "a")
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "w")
            self._h5.attrs["verdict_codes"] = "-1 none, 0 trusted, 1 uncertain, 2 untrusted"
            self._h5.create_dataset("numbers", data=atoms.numbers)
            self._h5.create_dataset(
                "positions", shape=(0, n, 3), maxshape=(None, n, 3), dtype="f8", chunks=(16, n, 3)
            )
            for name, dtype in (("energy", "f8"), ("step", "i8"), ("verdict", "i1")):
                self._h5.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,)
                )
        f = self._h5
        if f["positions"].shape[1] != n:
            raise ValueError(f"HDF5 frames need a fixed atom count ({f['positions'].shape[1]})")
        i = f["energy"].shape[0]
        for name in ("positions", "energy", "step", "verdict"):
            f[name].resize(i + 1, axis=0)
        f["positions"][i] = atoms.positions
        f["energy"][i] = np.nan if energy is None else energy
        f["step"][i] = step
        f["verdict"][i] = _VERDICT_CODES[verdict]
        f.flush()

    def close(self) -> None:
        """Close the file (further writes reopen nothing: make a new writer)."""
        if self._traj is not None:
            self._traj.close()
            self._traj = None
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
