"""Function oracles: every failure is a status, timeouts and crashes in a worker process."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pal_atoms.core.errors import ConfigError
from pal_atoms.core.label import LabelStatus
from pal_atoms.core.samples import Schema
from pal_atoms.generic import FunctionOracle, label_sample
from pal_atoms.workflow.guards import label_guarded

SCHEMA = Schema({"x": (2,)}, {"y": ()})


def square(sample):
    return {"y": float(np.sum(sample["x"] ** 2))}


def sleepy(sample):
    time.sleep(30)
    return {"y": 0.0}


def crashing(sample):
    os._exit(3)


def bound(fn) -> FunctionOracle:
    oracle = FunctionOracle(fn, name="test")
    oracle.bind(SCHEMA)
    return oracle


def test_an_ok_label_carries_checked_values_and_provenance():
    label = label_sample(SCHEMA.sample({"x": [1.0, 2.0]}), bound(square))
    assert label.ok and float(label.values["y"]) == 5.0
    assert label.oracle == "test" and label.method == "square" and label.wall_time_s >= 0


@pytest.mark.parametrize(
    ("fn", "text"),
    [
        (lambda s: 1 / 0, "ZeroDivisionError"),
        (lambda s: {"z": 1.0}, "output 'y' is missing"),
        (lambda s: {"y": [1.0, 2.0]}, "shape"),
        (lambda s: {"y": float("nan")}, "non-finite"),
        (lambda s: 3.0, "not a mapping"),
    ],
)
def test_every_failure_of_the_function_is_a_failed_label(fn, text):
    label = label_sample(SCHEMA.sample({"x": [1.0, 2.0]}), bound(fn))
    assert label.status is LabelStatus.FAILED and label.values is None
    assert text in label.error


def test_a_hang_is_killed_at_the_timeout_in_a_worker():
    t0 = time.monotonic()
    label = label_sample(SCHEMA.sample({"x": [0.0, 0.0]}), bound(sleepy), timeout_s=2.0)
    assert label.status is LabelStatus.TIMEOUT and time.monotonic() - t0 < 20
    again = label_sample(SCHEMA.sample({"x": [1.0, 1.0]}), bound(square), timeout_s=20.0)
    assert again.ok  # the worker was replaced


def test_a_crash_in_isolation_is_a_failed_label_not_a_dead_run():
    label = label_sample(SCHEMA.sample({"x": [0.0, 0.0]}), bound(crashing), isolate=True)
    assert label.status is LabelStatus.FAILED and label.error


def test_a_lambda_cannot_be_isolated_and_the_run_records_why():
    oracle = bound(lambda s: {"y": 0.0})
    sample = SCHEMA.sample({"x": [0.0, 0.0]})
    with pytest.raises(ConfigError, match="module-level function"):
        label_sample(sample, oracle, timeout_s=5.0)
    label = label_guarded(label_sample, sample, oracle, timeout_s=5.0, isolate=False)
    assert label.status is LabelStatus.FAILED and "module-level" in label.error


def test_a_function_oracle_needs_a_callable():
    with pytest.raises(ConfigError, match="callable"):
        FunctionOracle(3)
