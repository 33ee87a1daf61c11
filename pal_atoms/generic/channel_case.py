"""The OpenFOAM dictionaries of the channel case (see :mod:`pal_atoms.generic.channel`).

Written with :mod:`foamlib`, which formats dictionaries, lists and non-uniform fields.
Non-dimensional: ``H = U_b = rho = c_p = 1``, ``nu = 1 / Re``, ``D = nu / Pr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pal_atoms.generic.channel import ChannelFlowSettings

__all__ = ["inlet_profile", "write_dictionaries"]


def _tokens(value: Any) -> Any:
    """A multi-word entry ("Gauss linear") as the tuple of words foamlib expects."""
    if isinstance(value, str) and " " in value:
        return tuple(value.split())
    if isinstance(value, dict):
        return {k: _tokens(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tokens(v) for v in value]
    return value


def _write(path: Path, cls: str, content: dict[str, Any]) -> None:
    from foamlib import FoamFile

    f = FoamFile(path)
    f["FoamFile"] = {"version": 2.0, "format": "ascii", "class": cls, "object": path.name}
    for key, value in _tokens(content).items():
        f[key] = value


def inlet_profile(n: int) -> np.ndarray:
    """Face averages of the Poiseuille profile ``6 y (1 - y)`` over ``n`` equal faces.

    Exact averages, so the inlet carries exactly the bulk velocity 1. Shape ``(n,)``.
    """
    edges = np.linspace(0.0, 1.0, n + 1)
    primitive = 3 * edges**2 - 2 * edges**3
    return np.diff(primitive) / np.diff(edges)


def write_dictionaries(case: Path, s: ChannelFlowSettings, promoters: np.ndarray) -> None:
    """Mesh, solver, schemes, transport and initial fields of one case."""
    for sub in ("system", "constant", "0"):
        (case / sub).mkdir(parents=True, exist_ok=True)
    L, dz = s.length_H, s.cell_size_H
    nx, ny = round(L / dz), round(1.0 / dz)
    nu = 1.0 / s.reynolds
    _write(
        case / "system" / "blockMeshDict",
        "dictionary",
        {
            "convertToMeters": 1,
            "vertices": [
                [0, 0, 0],
                [L, 0, 0],
                [L, 1, 0],
                [0, 1, 0],
                [0, 0, dz],
                [L, 0, dz],
                [L, 1, dz],
                [0, 1, dz],
            ],
            "blocks": ["hex", [0, 1, 2, 3, 4, 5, 6, 7], [nx, ny, 1], "simpleGrading", [1, 1, 1]],
            "boundary": [
                ("inlet", {"type": "patch", "faces": [[0, 4, 7, 3]]}),
                ("outlet", {"type": "patch", "faces": [[1, 2, 6, 5]]}),
                ("walls", {"type": "wall", "faces": [[0, 1, 5, 4], [3, 7, 6, 2]]}),
                ("promoters", {"type": "wall", "faces": []}),  # filled by subsetMesh
                ("frontAndBack", {"type": "empty", "faces": [[0, 3, 2, 1], [4, 5, 6, 7]]}),
            ],
        },
    )
    surface = {
        "type": "surfaceFieldValue",
        "libs": ["fieldFunctionObjects"],
        "regionType": "patch",
        "writeFields": False,
        "log": False,
    }
    _write(
        case / "system" / "controlDict",
        "dictionary",
        {
            "application": "simpleFoam",
            "startFrom": "startTime",
            "startTime": 0,
            "stopAt": "endTime",
            "endTime": s.max_iterations,
            "deltaT": 1,
            "writeControl": "timeStep",
            "writeInterval": s.max_iterations,
            "writeFormat": "ascii",
            "runTimeModifiable": False,
            "functions": {
                "T": {
                    "type": "scalarTransport",
                    "libs": ["solverFunctionObjects"],
                    "field": "T",
                    "D": nu / s.prandtl,
                },
                "inletPressure": {
                    **surface,
                    "name": "inlet",
                    "operation": "areaAverage",
                    "fields": ["p"],
                },
                "outletHeat": {
                    **surface,
                    "name": "outlet",
                    "operation": "weightedSum",
                    "weightField": "phi",
                    "fields": ["T"],
                },
            },
        },
    )
    _write(
        case / "system" / "fvSchemes",
        "dictionary",
        {
            "ddtSchemes": {"default": "steadyState"},
            "gradSchemes": {"default": "Gauss linear"},
            "divSchemes": {
                "default": "none",
                "div(phi,U)": "bounded Gauss linearUpwind grad(U)",
                "div(phi,T)": "bounded Gauss linearUpwind grad(T)",
                "div((nuEff*dev2(T(grad(U)))))": "Gauss linear",
            },
            "laplacianSchemes": {"default": "Gauss linear corrected"},
            "interpolationSchemes": {"default": "linear"},
            "snGradSchemes": {"default": "corrected"},
        },
    )
    smooth = {
        "solver": "smoothSolver",
        "smoother": "symGaussSeidel",
        "tolerance": 1e-9,
        "relTol": 0.05,
    }
    _write(
        case / "system" / "fvSolution",
        "dictionary",
        {
            "solvers": {
                "p": {
                    "solver": "GAMG",
                    "smoother": "GaussSeidel",
                    "tolerance": 1e-8,
                    "relTol": 0.05,
                },
                "U": smooth,
                "T": smooth,
            },
            "SIMPLE": {
                "nNonOrthogonalCorrectors": 0,
                "consistent": True,
                "residualControl": {"p": s.residual_p, "U": s.residual_p / 10},
            },
            "relaxationFactors": {"equations": {"U": 0.9, "T": 0.9}},
        },
    )
    _write(
        case / "constant" / "transportProperties",
        "dictionary",
        {"transportModel": "Newtonian", "nu": nu},
    )
    _write(case / "constant" / "turbulenceProperties", "dictionary", {"simulationType": "laminar"})
    if len(promoters):
        h = s.promoter_size_H / 2
        corners = [c for x, y in promoters for c in ([x - h, y - h, -1], [x + h, y + h, 1])]
        _write(
            case / "system" / "topoSetDict",
            "dictionary",
            {
                "actions": [
                    {
                        "name": "fluid",
                        "type": "cellSet",
                        "action": "new",
                        "source": "boxToCell",
                        "boxes": corners,
                    },
                    {"name": "fluid", "type": "cellSet", "action": "invert"},
                ]
            },
        )
    u = inlet_profile(ny)
    empty = {"type": "empty"}
    _write(
        case / "0" / "U",
        "volVectorField",
        {
            "dimensions": [0, 1, -1, 0, 0, 0, 0],
            "internalField": [1.0, 0.0, 0.0],
            "boundaryField": {
                "inlet": {
                    "type": "fixedValue",
                    "value": np.stack([u, np.zeros(ny), np.zeros(ny)], axis=1),
                },
                "outlet": {"type": "zeroGradient"},
                "walls": {"type": "noSlip"},
                "promoters": {"type": "noSlip"},
                "frontAndBack": empty,
            },
        },
    )
    _write(
        case / "0" / "p",
        "volScalarField",
        {
            "dimensions": [0, 2, -2, 0, 0, 0, 0],
            "internalField": 0.0,
            "boundaryField": {
                "inlet": {"type": "zeroGradient"},
                "outlet": {"type": "fixedValue", "value": 0.0},
                "walls": {"type": "zeroGradient"},
                "promoters": {"type": "zeroGradient"},
                "frontAndBack": empty,
            },
        },
    )
    _write(
        case / "0" / "T",
        "volScalarField",
        {
            "dimensions": [0, 0, 0, 1, 0, 0, 0],
            "internalField": 0.0,
            "boundaryField": {
                "inlet": {"type": "fixedValue", "value": 0.0},
                "outlet": {"type": "zeroGradient"},
                "walls": {"type": "fixedValue", "value": 1.0},
                "promoters": {"type": "zeroGradient"},
                "frontAndBack": empty,
            },
        },
    )
