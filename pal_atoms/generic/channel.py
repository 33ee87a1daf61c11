"""A CFD oracle: steady 2D laminar channel flow with heat transfer around eddy promoters.

PAL's thermo-fluid application (paper, section 3.4) labels channel geometries with the
drag coefficient ``cf`` and the Stanton number ``st`` from an OpenFOAM solver. Here the
case is built in code and solved with OpenFOAM's ``simpleFoam`` (ESI v1912, Debian's
``openfoam`` package); :mod:`foamlib` writes the dictionaries and fields.

The case, in units of the channel height ``H`` and the bulk velocity ``U_b``: a channel
of length ``length_H``, a fully developed (parabolic) inlet profile, walls at ``T = 1``,
inlet fluid at ``T = 0``, ``Re = U_b H / nu`` and ``Pr = nu / D``; square eddy promoters
of side ``promoter_size_H`` (no-slip, adiabatic) are cut out of a uniform grid of cell
size ``cell_size_H`` (``topoSet`` + ``subsetMesh``), so positions act on the cell grid.
Temperature is a passive scalar solved with the flow (``scalarTransport``).

* ``cf = (p_in - p_out) H / (L rho U_b^2)``: the total drag (walls and promoters) per wall
  area over the dynamic pressure, from the pressure drop; ``12 / Re`` for an empty
  channel (Poiseuille flow).
* ``st = H / (2 L) ln((T_w - T_in) / (T_w - T_out))``: the mean Stanton number for
  isothermal walls from the mixing-cup outlet temperature (log-mean temperature
  difference).

A sample holds ``promoters``: centres ``(x, y)`` in units of ``H``, shape
``(n_promoters, 2)``. Failures (a promoter outside the channel, a solver that diverges or
stops unconverged) raise, which the oracle records as a failed label.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pal_atoms.core.errors import InputError, OracleError, OracleSetupError
from pal_atoms.generic.channel_case import write_dictionaries

__all__ = ["ChannelFlow", "ChannelFlowSettings", "openfoam_available"]

#: Where Debian's openfoam package keeps its ``etc`` (its utilities need it).
DEBIAN_PROJECT_DIR = "/usr/share/openfoam"
_TOOLS = ("blockMesh", "topoSet", "subsetMesh", "simpleFoam")


def openfoam_available() -> str | None:
    """``None`` if OpenFOAM's utilities run here, else the reason they do not."""
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"OpenFOAM is not installed ({', '.join(missing)} not on PATH); on Debian: "
            "apt-get install openfoam (bash scripts/openfoam.sh)"
        )
    try:
        import foamlib  # noqa: F401
    except ImportError:
        return "foamlib is not installed (pip install 'pal-atoms[cfd]')"
    return None


@dataclass(frozen=True, kw_only=True)
class ChannelFlowSettings:
    """The channel case (lengths in units of the channel height ``H``).

    Args:
        length_H: Channel length.
        reynolds: ``Re = U_b H / nu``.
        prandtl: ``Pr = nu / D``.
        cell_size_H: Grid spacing (square cells).
        promoter_size_H: Side of a square promoter.
        max_iterations: SIMPLE iterations before the case counts as unconverged.
        residual_p: Converged when the pressure residual drops below this.
        keep_cases: Keep each case folder (under ``work_dir``) for inspection.
        work_dir: Where cases run (default: the system's temporary folder).
    """

    length_H: float = 8.0
    reynolds: float = 100.0
    prandtl: float = 0.7
    cell_size_H: float = 0.05
    promoter_size_H: float = 0.2
    max_iterations: int = 3000
    residual_p: float = 1e-6
    keep_cases: bool = False
    work_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("length_H", "reynolds", "prandtl", "cell_size_H", "promoter_size_H"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value!r}")
        if self.reynolds > 2000:
            raise InputError(f"reynolds={self.reynolds} is not laminar channel flow (<= 2000)")
        for name, extent in (("length_H", self.length_H), ("height", 1.0)):
            n = extent / self.cell_size_H
            if abs(n - round(n)) > 1e-9:
                raise InputError(f"cell_size_H must divide the channel's {name} evenly")
        if self.promoter_size_H >= 0.5:
            raise InputError("promoter_size_H must be below half the channel height")
        if self.max_iterations < 10:
            raise InputError(f"max_iterations must be >= 10, got {self.max_iterations}")

    def bounds(self, n_promoters: int) -> list[tuple[float, float]]:
        """Box of promoter centres that keeps a gap of one cell to walls, inlet, outlet.

        Returns ``[(x_lo, x_hi), (y_lo, y_hi)] * n_promoters`` (a generator's ``bounds``).
        """
        h = self.promoter_size_H / 2 + self.cell_size_H
        return [(1.0, self.length_H - 1.0), (h, 1.0 - h)] * n_promoters


class ChannelFlow:
    """The CFD oracle (a picklable callable for :class:`~pal_atoms.generic.FunctionOracle`).

    Args:
        settings: The case (:class:`ChannelFlowSettings`).

    Calling it with a sample returns ``{"cf": float, "st": float}``.
    """

    def __init__(self, settings: ChannelFlowSettings | None = None):
        self.settings = settings or ChannelFlowSettings()

    def describe(self) -> dict[str, Any]:
        """The settings a label depends on (its provenance)."""
        return {"solver": "simpleFoam (OpenFOAM)", **asdict(self.settings)}

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """Solve the case for ``sample["promoters"]`` and return ``cf`` and ``st``.

        Raises:
            OracleSetupError: OpenFOAM or foamlib missing.
            InputError: a promoter outside the channel.
            OracleError: a utility failed or the solver did not converge.
        """
        reason = openfoam_available()
        if reason:
            raise OracleSetupError(reason)
        promoters = np.asarray(sample["promoters"], dtype=float).reshape(-1, 2)
        self._check(promoters)
        root = self.settings.work_dir
        case = Path(tempfile.mkdtemp(prefix="channel-", dir=root))
        try:
            write_dictionaries(case, self.settings, promoters)
            return self._solve(case, bool(len(promoters)))
        finally:
            if not self.settings.keep_cases:
                shutil.rmtree(case, ignore_errors=True)

    def _check(self, promoters: np.ndarray) -> None:
        s, h = self.settings, self.settings.promoter_size_H / 2
        for x, y in promoters:
            if not (h < x < s.length_H - h and h < y < 1.0 - h):
                raise InputError(f"promoter at ({x:.3g}, {y:.3g}) H is not inside the channel")

    def _solve(self, case: Path, cut: bool) -> dict[str, float]:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if not env.get("WM_PROJECT_DIR") and Path(DEBIAN_PROJECT_DIR, "etc").is_dir():
            env["WM_PROJECT_DIR"] = DEBIAN_PROJECT_DIR
        steps: list[Sequence[str]] = [["blockMesh"]]
        if cut:
            steps += [["topoSet"], ["subsetMesh", "fluid", "-patch", "promoters", "-overwrite"]]
        steps.append(["simpleFoam"])
        for cmd in steps:
            log = case / f"log.{cmd[0]}"
            with log.open("w") as out:
                done = subprocess.run(
                    cmd, cwd=case, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
                )
            if done.returncode:
                tail = " ".join(log.read_text().split()[-40:])
                raise OracleError(f"{cmd[0]} failed (exit {done.returncode}): {tail}")
        iterations, p_in = _last(case / "postProcessing" / "inletPressure")
        _, heat = _last(case / "postProcessing" / "outletHeat")
        if iterations >= self.settings.max_iterations:
            raise OracleError(f"simpleFoam did not converge in {iterations} iterations")
        s = self.settings
        depth = s.cell_size_H  # the 2D case is one cell thick; fluxes include it
        t_out = heat / depth  # mixing-cup outlet temperature (U_b = H = 1, T_in = 0)
        if not (0.0 <= t_out < 1.0) or not math.isfinite(p_in):
            raise OracleError(f"unphysical result: p_in={p_in}, T_out={t_out}")
        return {
            "cf": float(p_in / s.length_H),
            "st": float(math.log(1.0 / (1.0 - t_out)) / (2.0 * s.length_H)),
        }


def _last(folder: Path) -> tuple[int, float]:
    """Iteration and value of the last line of a ``surfaceFieldValue`` output."""
    files = sorted(folder.rglob("*.dat"))
    if not files:
        raise OracleError(f"simpleFoam wrote no {folder.name} output")
    rows = [r.split() for r in files[-1].read_text().splitlines() if r.strip() and r[0] != "#"]
    if not rows:
        raise OracleError(f"{folder.name} output is empty")
    return int(float(rows[-1][0])), float(rows[-1][-1])
