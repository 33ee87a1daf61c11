"""The MPI controller as a state machine, message by message (no mpiexec: a fake comm).

The controller only moves messages; the decisions (verdicts, the queue, recording labels)
are the run state's, the same code as in one process. These tests feed it the messages
of one label's path and check what it sends and stores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms

from pal_atoms.core.label import Label
from pal_atoms.core.protocols import Verdict
from pal_atoms.store import LabelStore
from pal_atoms.workflow import ActiveLearning
from pal_atoms.workflow.mpi.codec import (
    decode_predictions,
    encode_predictions,
    encode_structures,
    label_message,
)
from pal_atoms.workflow.mpi.comm import Message, Tag
from pal_atoms.workflow.mpi.controller import MPIController
from pal_atoms.workflow.mpi.layout import Layout, Role
from pal_atoms.workflow.prediction import failed_prediction
from pal_atoms.workflow.selection import TrustWindow
from pal_atoms.workflow.settings import WorkflowSettings


class _Done:
    def Test(self) -> bool:
        return True


class FakeComm:
    """Records what the controller sends; ``Recv`` hands out queued arrays."""

    def __init__(self, size: int):
        self.size = size
        self.isent: list[tuple[int, Tag, np.ndarray]] = []
        self.sent: list[tuple[int, Tag, Any]] = []
        self.arrays: list[np.ndarray] = []

    def Get_size(self) -> int:
        return self.size

    def Isend(self, buf: Any, dest: int, tag: int) -> _Done:
        self.isent.append((dest, Tag(tag), np.array(buf[0])))
        return _Done()

    def Recv(self, buf: Any, source: int, tag: int) -> None:
        buf[0][:] = self.arrays.pop(0)

    def send(self, obj: Any, dest: int, tag: int) -> None:
        self.sent.append((dest, Tag(tag), obj))


class _Gen:
    generator_id = 0

    def state(self) -> dict:
        return {}


def cell(shift: float) -> Atoms:
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8 + shift, 0, 0]], cell=[3, 3, 3], pbc=True)
    atoms.info.update(charge=0, multiplicity=1)
    return atoms


def make(tmp_path) -> tuple[MPIController, FakeComm, LabelStore, dict[Role, list[int]]]:
    layout = Layout(prediction=1, oracle=1, training=0)
    comm = FakeComm(4)
    al = ActiveLearning(
        committee=object(),
        oracle=object(),
        generators=[_Gen()],
        store=tmp_path / "labels.h5",
        selection=TrustWindow(lower=0.1, upper=10.0),
        settings=WorkflowSettings(diversity_A=0.0, label_burst=4),
        layout=layout,
    )
    ranks = {r: layout.ranks(4, r) for r in Role}
    return MPIController(al, comm, layout), comm, LabelStore(tmp_path / "labels.h5"), ranks


def prediction(n: int, spread: float) -> dict[str, Any]:
    return {
        "energy": -1.0,
        "forces": np.zeros((n, 3)),
        "energy_std": 0.0,
        "max_force_std": spread,
        "forces_std": np.full(n, spread),
    }


def test_one_label_path_with_a_failed_prediction_and_stress(tmp_path):
    ctrl, comm, store, ranks = make(tmp_path)
    (g,), (p,), (o,) = ranks[Role.GENERATOR], ranks[Role.PREDICTION], ranks[Role.ORACLE]
    frames = [cell(0.0), cell(0.3)]
    ctrl.handle(
        Message(g, Tag.PREDICT, encode_structures([(a, 0, i) for i, a in enumerate(frames)])), store
    )
    ctrl.dispatch()
    assert [(d, t) for d, t, _ in comm.isent] == [(p, Tag.BATCH)]

    # The prediction rank answers: an uncertain prediction, and one that failed.
    reply = encode_predictions([prediction(2, 0.5), failed_prediction(2)], [None, Verdict.FAILED])
    ctrl.handle(Message(p, Tag.BATCH_RESULT, reply), store)
    dest, tag, answer = comm.isent[-1]
    assert (dest, tag) == (g, Tag.RESULT)
    assert [v for _, v in decode_predictions(answer)] == [Verdict.UNCERTAIN, Verdict.FAILED]
    assert ctrl.al.summary.failed_predictions == 1 and ctrl.al.summary.predictions == 2
    assert len(ctrl.al.queue) == 1  # the failed one is not labelled

    # The uncertain structure goes to the oracle; its label comes back with stress.
    ctrl.dispatch()
    assert comm.isent[-1][:2] == (o, Tag.LABEL)
    rng = np.random.default_rng(0)
    done = Label(
        atoms=frames[0],
        status="ok",
        energy=-3.0,
        forces=rng.normal(size=(2, 3)),
        stress=rng.normal(size=6),
        oracle="emt",
        method="EMT",
    )
    control, data = label_message(done, generator_id=0, step=0, uncertainty=0.5)
    comm.arrays.append(data)
    ctrl.handle(Message(o, Tag.LABEL_DONE, control), store)
    ctrl._store_labels(store)
    (stored,) = store.read()
    np.testing.assert_array_equal(stored.calc.results["stress"], done.stress)
    np.testing.assert_array_equal(stored.get_forces(), done.forces)
    assert stored.info["generator_step"] == 0 and stored.info["oracle"] == "emt"
    assert ctrl.al.summary.labels_ok == 1 and o in ctrl.free_oracles
    store.close()


def test_a_bug_on_a_worker_rank_becomes_an_error_stop(tmp_path):
    ctrl, _, store, ranks = make(tmp_path)
    (g,) = ranks[Role.GENERATOR]
    ctrl.handle(Message(g, Tag.LOG, {"event": "error", "error": "KeyError: 'x'"}), store)
    assert ctrl.rank_error == f"rank {g} failed: KeyError: 'x'"
    store.close()
