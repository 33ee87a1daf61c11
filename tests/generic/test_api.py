"""The public API of a generic run, exactly as issue #18 writes it (one process).

The same code under ``mpiexec -n 5`` (with ``comm=MPI.COMM_WORLD``) is
``tests/mpi/surrogate_job.py``, run by ``tests/mpi/test_generic_modes.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from pal_atoms.generic import Ensemble, FunctionOracle, ParticleSwarm, mlp
from pal_atoms.store.sample_store import SampleStore
from pal_atoms.workflow import ActiveLearning


def branin(x):
    x1, x2 = x
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


@pytest.mark.slow  # 100 labels and 12 training rounds with the default settings
def test_the_issue_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_model = mlp((32, 32))
    al = ActiveLearning(committee=Ensemble(make_model, members=4, inputs={"x": (2,)}, outputs={"y": ()}),  # noqa: E501
                        oracle=FunctionOracle(lambda s: {"y": branin(s["x"])}),
                        generators=[ParticleSwarm(bounds=[(-5, 10), (0, 15)], particles=16, objective="y", minimise=True)],  # noqa: E501
                        store="run/labels.h5", run_dir="run")  # fmt: skip
    summary = al.run()
    assert summary.labels_ok >= 1 and summary.stop_criterion in ("max_labels", "converged")
    with SampleStore("run/labels.h5", mode="r") as store:
        ok = store.read(status="ok")
    assert len(ok) == summary.labels_ok
    for s in ok:
        assert float(s["y"]) == branin(s["x"])
    mean, std = al.committee.predict(ok[:3])["y"]
    assert mean.shape == std.shape == (3,)
    # The committee it hands over is near the labels it was trained on.
    assert np.mean(np.abs(mean - np.array([float(s["y"]) for s in ok[:3]]))) < 20.0
    assert (tmp_path / "run" / "committee").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") >= 1
