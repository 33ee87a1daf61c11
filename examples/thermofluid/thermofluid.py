"""The thermo-fluid run's parts: CFD oracle, CNN committee, swarms, held-out CFD labels.

Shared by ``run.py`` (the example), ``bench/thermofluid.py`` and the tests.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pal_atoms.generic import Ensemble, FunctionOracle, LatinHypercube, ParticleSwarm, raster_cnn
from pal_atoms.generic.channel import ChannelFlow, ChannelFlowSettings
from pal_atoms.generic.training import TrainingSettings


@dataclass(frozen=True, kw_only=True)
class ThermofluidSettings:
    """The optimisation problem: maximise St with C_f at most ``cf_max``.

    Args:
        promoters: Eddy promoters per geometry (the swarm moves ``2 * promoters`` values).
        cf_max: Largest drag coefficient allowed (the empty channel has 12/Re = 0.12).
        members: Committee size.
        particles: Particles per swarm.
        swarms: Swarms (generators) running at once.
        seed: Seed of the swarms, the sampler and the committee.
    """

    promoters: int = 2
    cf_max: float = 0.3
    members: int = 4
    particles: int = 8
    swarms: int = 2
    seed: int = 0


def channel() -> ChannelFlowSettings:
    """The CFD case (defaults of :class:`ChannelFlowSettings`: Re 100, Pr 0.7, L = 8 H)."""
    return ChannelFlowSettings()


def oracle(flow: ChannelFlowSettings) -> FunctionOracle:
    """OpenFOAM as the oracle."""
    cfd = ChannelFlow(flow)
    return FunctionOracle(
        cfd, name="openfoam", method="simpleFoam laminar", settings=cfd.describe()
    )


def make_model(flow: ChannelFlowSettings) -> Any:
    """The CNN factory (images of the promoters over the channel)."""
    return raster_cnn(extent=(flow.length_H, 1.0), pixels=(8, 64), size=flow.promoter_size_H)


def committee(s: ThermofluidSettings, flow: ChannelFlowSettings) -> Ensemble:
    """A CNN committee predicting ``cf`` and ``st`` from the promoter positions."""
    return Ensemble(
        make_model(flow),
        members=s.members,
        inputs={"promoters": (s.promoters, 2)},
        outputs={"cf": (), "st": ()},
        training=TrainingSettings(epochs=150, lr=3e-3, seed=s.seed),
        seed=s.seed,
        scale_inputs=False,
    )


def swarms(s: ThermofluidSettings, flow: ChannelFlowSettings) -> list[Any]:
    """Swarms on the committee (upper confidence bound of St, C_f limited) and a sampler."""
    bounds = flow.bounds(s.promoters)
    gens: list[Any] = [
        ParticleSwarm(
            bounds,
            particles=s.particles,
            objective="st",
            minimise=False,
            limits={"cf": (None, s.cf_max)},
            kappa=1.0,
            seed=s.seed + g,
            generator_id=g,
        )
        for g in range(s.swarms)
    ]
    gens.append(LatinHypercube(bounds, n_samples=16, seed=s.seed + 100, generator_id=s.swarms))
    return gens


def random_geometries(
    s: ThermofluidSettings, flow: ChannelFlowSettings, n: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """``n`` uniform random promoter placements."""
    box = np.array(flow.bounds(s.promoters))
    rng = np.random.default_rng(seed)
    pts = box[:, 0] + rng.random((n, len(box))) * (box[:, 1] - box[:, 0])
    return [{"promoters": p.reshape(s.promoters, 2)} for p in pts]


def labelled(geometries: list[dict[str, np.ndarray]], flow: ChannelFlowSettings) -> list[dict]:
    """The geometries with their CFD labels (failed ones left out)."""
    cfd = ChannelFlow(flow)
    out = []
    for g in geometries:
        try:
            values = cfd(g)
        except Exception as exc:  # a case that did not converge is no test label
            logging.getLogger(__name__).warning("test geometry left out: %s", exc)
            continue
        out.append({**g, **{k: np.array(v) for k, v in values.items()}})
    return out


def best_feasible(samples: list[dict], cf_max: float) -> dict | None:
    """The labelled sample of highest St with C_f <= ``cf_max`` (None: none)."""
    ok = [x for x in samples if float(x["cf"]) <= cf_max]
    return max(ok, key=lambda x: float(x["st"])) if ok else None


def as_json(s: ThermofluidSettings, flow: ChannelFlowSettings) -> dict[str, Any]:
    """Settings for ``summary.json``."""
    return {"problem": asdict(s), "channel": asdict(flow)}


def draw(
    path: Path, flow: ChannelFlowSettings, best: dict | None, curve: list, cf_max: float
) -> None:
    """Figure: the best geometry found, and the surrogate's held-out error vs labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), gridspec_kw={"height_ratios": [1, 1.4]})
    ax1.add_patch(Rectangle((0, 0), flow.length_H, 1, fill=False, lw=1.5))
    if best is not None:
        a = flow.promoter_size_H
        for x, y in np.asarray(best["promoters"]):
            ax1.add_patch(Rectangle((x - a / 2, y - a / 2), a, a, color="tab:red"))
        ax1.set_title(
            f"best labelled geometry: St = {float(best['st']):.4f}, "
            f"C_f = {float(best['cf']):.3f} (limit {cf_max:g})"
        )
    ax1.set_xlim(-0.1, flow.length_H + 0.1)
    ax1.set_ylim(-0.1, 1.1)
    ax1.set_aspect("equal")
    ax1.set_xlabel("x / H")
    if curve:
        n, err = zip(*curve, strict=True)
        ax2.plot(n, err, "o-")
    ax2.set_xlabel("CFD labels")
    ax2.set_ylabel("held-out MAE (C_f, St averaged)")
    ax2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
