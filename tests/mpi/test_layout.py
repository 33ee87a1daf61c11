"""Rank layout and device placement (no MPI runtime needed)."""

from __future__ import annotations

import pytest

from pal_atoms.core.errors import ConfigError, LayoutError
from pal_atoms.workflow.mpi.layout import Layout, Role, device_for
from pal_atoms.workflow.settings import WorkflowSettings


def test_roles_are_interleaved_and_generators_take_the_rest():
    layout = Layout(prediction=2, oracle=3, training=1)
    roles = layout.roles(10)
    assert roles[0] is Role.CONTROLLER
    assert roles.count(Role.PREDICTION) == 2 and roles.count(Role.ORACLE) == 3
    assert roles.count(Role.TRAINING) == 1 and roles.count(Role.GENERATOR) == 3
    # Not contiguous: the kinds alternate, so a node boundary splits every kind.
    assert roles[1:4] == [Role.PREDICTION, Role.TRAINING, Role.ORACLE]
    assert layout.ranks(10, Role.ORACLE) == [i for i, r in enumerate(roles) if r is Role.ORACLE]
    with pytest.raises(LayoutError, match="cannot hold"):
        layout.check(7)
    # Ranks per kernel, for the first log line (kernels first, no empty kinds).
    assert layout.counts(10) == {
        "controller": 1, "prediction": 2, "training": 1, "oracle": 3, "generator": 3
    }  # fmt: skip
    assert "training" not in Layout(training=0).counts(4)


def test_gpu_placement_by_node_local_rank(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_for(Role.PREDICTION, 0) == "cuda:0"
    assert device_for(Role.TRAINING, 3) == "cuda:1"
    assert device_for(Role.ORACLE, 1) == "cpu"  # only committee ranks get GPUs
    assert device_for(Role.GENERATOR, 1) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert device_for(Role.PREDICTION, 0) == "cpu"


def test_explicit_device_lists_win():
    assert device_for(Role.PREDICTION, 1, ["cuda:3"]) == "cuda:3"
    assert device_for(Role.TRAINING, 1, ["cuda:0", "cuda:1"]) == "cuda:1"
    settings = WorkflowSettings(prediction_devices=["cuda:0"], training_devices=("cuda:1",))
    assert settings.prediction_devices == ("cuda:0",)
    with pytest.raises(ConfigError, match="not a torch device"):
        WorkflowSettings(training_devices=("gpu0",))
