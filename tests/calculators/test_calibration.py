"""Calibration of the committee's force spread: a synthetic case with a known answer, and
the calibrated keys of a real committee."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pal_atoms.calculators import (
    CommitteeCalculator,
    calibration_curve,
    fit_force_calibration,
)
from pal_atoms.calculators.calibration import force_errors


def _synthetic(scale: float, n: int = 20000, seed: int = 0):
    """Per-atom spreads and errors whose true RMS is ``scale`` times the spread."""
    rng = np.random.default_rng(seed)
    std = rng.lognormal(mean=-2.0, sigma=0.7, size=n)  # raw spreads, eV/Å
    # Error vector with per-component variance (scale * std)^2 / 3, so E|e|^2 = (scale std)^2.
    comps = rng.normal(size=(n, 3)) * (scale * std / np.sqrt(3))[:, None]
    return np.linalg.norm(comps, axis=1), std


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_fitted_scale_recovers_the_known_factor(scale):
    errors, std = _synthetic(scale)
    cal = fit_force_calibration(errors, std)
    assert cal.force_std_scale == pytest.approx(scale, rel=0.03)
    assert cal.n_atoms == errors.size
    # After scaling the spread, expected and observed error agree in every bin.
    expected, observed, counts, area = calibration_curve(errors, cal.force_std_scale * std)
    assert counts.sum() == errors.size
    np.testing.assert_allclose(observed / expected, 1.0, atol=0.08)
    assert area < 0.05
    assert cal.miscalibration_area == pytest.approx(area)


def test_uncalibrated_spread_has_a_large_miscalibration_area():
    errors, std = _synthetic(4.0)
    *_, area = calibration_curve(errors, std)
    assert area > 2.5  # observed is ~4x expected in every bin: |4 - 1| = 3


def test_no_data_gives_scale_one():
    cal = fit_force_calibration(np.zeros(0), np.zeros(0))
    assert cal.force_std_scale == 1.0 and cal.n_atoms == 0


def test_calibrated_keys_of_a_real_committee(tmp_path, bi_data):
    committee = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
    atoms = bi_data["test"][0].copy()
    (raw,) = committee.predict_batch([atoms])
    assert raw["max_force_std"] == pytest.approx(raw["max_force_std_raw"])
    errors, stds = force_errors(committee, bi_data["test"], raw=True)
    cal = fit_force_calibration(errors, stds)
    committee.set_calibration(cal)
    (res,) = committee.predict_batch([atoms])
    s = cal.force_std_scale
    assert res["max_force_std"] == pytest.approx(s * res["max_force_std_raw"])
    np.testing.assert_allclose(res["forces_std"], s * res["forces_std_raw"])
    np.testing.assert_allclose(res["forces_std_raw"], raw["forces_std_raw"])
    # Declared keys, gettable through ASE, and saved with the committee.
    atoms.calc = committee
    assert atoms.calc.get_property("max_force_std_raw", atoms) == pytest.approx(
        res["max_force_std_raw"]
    )
    committee.save(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "committee.json").read_text())["calibration"][
        "force_std_scale"
    ] == pytest.approx(s)
    loaded = CommitteeCalculator.load(tmp_path / "c", device="cpu")
    assert loaded.force_std_scale == pytest.approx(s)
    # On its own fit set the calibrated spread matches the RMS error.
    e2, s2 = force_errors(committee, bi_data["test"], raw=False)
    assert np.sqrt(np.mean(e2**2 / s2**2)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_calibration_is_refused(bad):
    committee = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
    with pytest.raises(ValueError, match="force_std_scale"):
        committee.set_calibration({"force_std_scale": bad})


def test_a_publish_calibrates_and_measures_from_one_prediction(bi_data):
    """apply_published: the same numbers as fitting and measuring separately."""
    from pal_atoms.workflow.metrics import force_mae
    from pal_atoms.workflow.publishing import apply_published

    committee = CommitteeCalculator.create("mace", elements=["Bi"], n_members=2, device="cpu")
    validation = bi_data["test"][:6]
    errors, stds = force_errors(committee, validation, raw=True)
    expected = fit_force_calibration(errors, stds).force_std_scale
    info = apply_published(committee, committee.get_weights()[:1], [0], validation=validation)
    assert info["calibration"]["force_std_scale"] == pytest.approx(expected, rel=1e-9)
    assert committee.force_std_scale == pytest.approx(expected, rel=1e-9)
    assert info["val_force_mae"] == pytest.approx(force_mae(committee, validation), rel=1e-9)
