"""The CFD oracle: OpenFOAM's simpleFoam on a laminar channel, checked against Poiseuille."""

from __future__ import annotations

import numpy as np
import pytest

from pal_atoms.core.errors import InputError, OracleSetupError
from pal_atoms.core.label import LabelStatus
from pal_atoms.core.samples import Schema
from pal_atoms.generic import FunctionOracle, label_sample
from pal_atoms.generic.channel import ChannelFlow, ChannelFlowSettings, openfoam_available
from pal_atoms.generic.channel_case import inlet_profile

MISSING = openfoam_available()
needs_openfoam = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


@needs_openfoam
def test_an_empty_channel_has_the_poiseuille_drag():
    flow = ChannelFlow()
    out = flow({"promoters": np.zeros((0, 2))})
    assert out["cf"] == pytest.approx(12 / flow.settings.reynolds, rel=0.02)
    assert 0.0 < out["st"] < 0.2


@needs_openfoam
def test_promoters_raise_drag_and_heat_transfer_and_mirror_images_agree():
    flow = ChannelFlow()
    empty = flow({"promoters": np.zeros((0, 2))})
    low = flow({"promoters": [[3.0, 0.3]]})
    high = flow({"promoters": [[3.0, 0.7]]})  # the mirror image about the mid-plane
    assert low["cf"] > 1.2 * empty["cf"] and low["st"] > empty["st"]
    assert high["cf"] == pytest.approx(low["cf"], rel=1e-3)
    assert high["st"] == pytest.approx(low["st"], rel=1e-3)


@needs_openfoam
def test_a_promoter_outside_the_channel_is_a_failed_label_with_the_reason():
    oracle = FunctionOracle(ChannelFlow(), name="openfoam")
    oracle.bind(Schema({"promoters": (1, 2)}, {"cf": (), "st": ()}))
    label = label_sample(
        Schema({"promoters": (1, 2)}, {"y": ()}).sample({"promoters": [[3.0, 0.95]]}), oracle
    )
    assert label.status is LabelStatus.FAILED and "not inside the channel" in label.error


def test_without_openfoam_the_oracle_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "apt-get install openfoam" in openfoam_available()
    with pytest.raises(OracleSetupError, match="OpenFOAM is not installed"):
        ChannelFlow()({"promoters": np.zeros((0, 2))})
    sample = Schema({"promoters": (1, 2)}, {"y": ()}).sample({"promoters": [[3.0, 0.5]]})
    label = label_sample(sample, FunctionOracle(ChannelFlow()))
    assert label.status is LabelStatus.FAILED and "OpenFOAM is not installed" in label.error


def test_the_inlet_carries_exactly_the_bulk_velocity():
    for n in (4, 20, 33):
        u = inlet_profile(n)
        assert u.mean() == pytest.approx(1.0) and u.max() <= 1.5
        np.testing.assert_allclose(u, u[::-1])


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"reynolds": 5000.0}, "laminar"),
        ({"cell_size_H": 0.3}, "divide"),
        ({"promoter_size_H": 0.6}, "half"),
        ({"length_H": -1.0}, "positive"),
    ],
)
def test_bad_channel_settings_say_why(kwargs, text):
    with pytest.raises(InputError, match=text):
        ChannelFlowSettings(**kwargs)


def test_the_promoter_box_keeps_clear_of_walls_inlet_and_outlet():
    s = ChannelFlowSettings()
    (xl, xh), (yl, yh) = s.bounds(1)
    assert xl >= 1.0 and xh <= s.length_H - 1.0
    assert yl - s.promoter_size_H / 2 >= s.cell_size_H - 1e-12
    assert 1.0 - (yh + s.promoter_size_H / 2) >= s.cell_size_H - 1e-12
