"""Schemas, samples, the sample store (statuses, provenance, durability) and the codec."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pal_atoms.core.errors import InputError, StoreError, StoreFormatError
from pal_atoms.core.label import LabelStatus
from pal_atoms.core.protocols import Verdict
from pal_atoms.core.samples import Sample, SampleLabel, Schema
from pal_atoms.generic.codec import SampleCodec
from pal_atoms.store.sample_store import SampleStore

SCHEMA = Schema({"x": (2,), "grid": (3, 4)}, {"cf": (), "profile": (5,)})


def sample(seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    return SCHEMA.sample({"x": rng.random(2), "grid": rng.random((3, 4))})


def ok_label(seed: int) -> SampleLabel:
    s = sample(seed)
    values = SCHEMA.outputs_of({"cf": s["x"].sum(), "profile": np.arange(5.0) * seed})
    return SampleLabel(
        sample=s,
        status="ok",
        values=values,
        oracle="f",
        method="m",
        settings={"mesh": 3},
        wall_time_s=0.5,
    )


@pytest.mark.parametrize(
    ("inputs", "outputs", "text"),
    [
        ({}, {"y": ()}, "non-empty"),
        ({"x": (0,)}, {"y": ()}, "positive"),
        ({"x": (2,)}, {"x": ()}, "input and output"),
        ({"1x": (2,)}, {"y": ()}, "identifiers"),
    ],
)
def test_a_bad_schema_says_what_is_wrong(inputs, outputs, text):
    with pytest.raises(InputError, match=text):
        Schema(inputs, outputs)


def test_samples_are_checked_and_flatten_in_schema_order():
    s = sample(0)
    flat = SCHEMA.flat_inputs(s)
    assert flat.shape == (SCHEMA.n_inputs,) == (14,)
    back = SCHEMA.unflat("inputs", flat)
    np.testing.assert_array_equal(back["grid"], s["grid"])
    with pytest.raises(InputError, match="shape"):
        SCHEMA.sample({"x": [1, 2, 3], "grid": np.zeros((3, 4))})
    with pytest.raises(InputError, match="missing"):
        SCHEMA.outputs_of({"cf": 1.0})


def test_a_failed_label_carries_no_values():
    with pytest.raises(ValueError, match="must not carry"):
        SampleLabel(sample=sample(0), status="failed", values={"cf": np.array(1.0)})
    with pytest.raises(ValueError, match="finite"):
        SampleLabel(sample=sample(0), status="ok", values={"cf": np.array(np.nan)})


def test_the_store_keeps_statuses_provenance_and_only_ok_values(tmp_path):
    path = tmp_path / "s.h5"
    with SampleStore(path, SCHEMA) as store:
        store.append_labels(
            [(ok_label(1), {"generator_id": 3, "generator_step": 7, "uncertainty": 0.4})]
        )
        bad = SampleLabel(sample=sample(2), status=LabelStatus.TIMEOUT, error="killed after 2 s")
        store.append_labels([(bad, {"generator_id": 1})])
        store.append_batch([(sample(3), {"status": "cancelled", "error": "run stopped"})])
    with SampleStore(path, mode="r") as store:
        assert len(store) == 3
        assert store.counts() == {"ok": 1, "timeout": 1, "cancelled": 1}
        (ok,) = store.read("ok")
        ref = ok_label(1)
        np.testing.assert_allclose(ok["profile"], ref.values["profile"])
        np.testing.assert_allclose(ok["grid"], ref.sample["grid"])
        assert ok.info["generator_id"] == 3 and ok.info["generator_step"] == 7
        assert ok.info["uncertainty"] == pytest.approx(0.4) and ok.info["oracle"] == "f"
        assert store.settings(ok.info["settings_hash"]) == {"mesh": 3}
        (timeout,) = store.read("timeout")
        assert "cf" not in timeout and timeout.info["error"] == "killed after 2 s"
        assert list(store.column("error")) == ["", "killed after 2 s", "run stopped"]
        with pytest.raises(StoreError, match="read-only"):
            store.append_batch([(sample(4), {"status": "cancelled"})])


def test_an_interrupted_append_is_cut_off_and_the_rest_survives(tmp_path):
    path = tmp_path / "s.h5"
    with SampleStore(path, SCHEMA) as store:
        store.append_labels([(ok_label(i), {}) for i in range(3)])
    with h5py.File(path, "a") as f:  # rows written, the commit never happened (a kill)
        for name in ("records", "inputs", "outputs", "text"):
            f[name].resize(5, axis=0)
    with SampleStore(path, mode="r") as store:
        assert len(store) == 3 and len(store.read("ok")) == 3
    with SampleStore(path) as store:  # opening to write repairs the tail
        store.append_labels([(ok_label(9), {})])
        assert len(store) == 4
        np.testing.assert_allclose(store.read("ok")[-1]["profile"], ok_label(9).values["profile"])


def test_wrong_files_and_schemas_get_clear_errors(tmp_path):
    path = tmp_path / "s.h5"
    SampleStore(path, SCHEMA).close()
    with pytest.raises(StoreFormatError, match="schema"):
        SampleStore(path, Schema({"x": (2,)}, {"y": ()}))
    assert SampleStore(path).schema == SCHEMA  # the file's own schema
    with pytest.raises(StoreError, match="does not exist"):
        SampleStore(tmp_path / "none.h5", mode="r")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(StoreFormatError, match="empty"):
        SampleStore(tmp_path / "empty.h5", SCHEMA)
    with h5py.File(tmp_path / "other.h5", "w"):
        pass
    with pytest.raises(StoreFormatError, match="not a pal-atoms sample store"):
        SampleStore(tmp_path / "other.h5", SCHEMA)


def test_the_codec_round_trips_samples_predictions_and_labels():
    codec = SampleCodec(SCHEMA)
    items = [(sample(i), i, 10 * i) for i in range(3)]
    buf = codec.encode_structures(items)
    for (s, g, k), (s2, g2, k2) in zip(items, codec.decode_structures(buf), strict=True):
        assert (g, k) == (g2, k2)
        np.testing.assert_array_equal(s["grid"], s2["grid"])
    results = [{"uncertainty": 0.3, "mean": ok_label(1).values, "std": ok_label(2).values}]
    record = codec.prediction_records(codec.encode_predictions(results, [None]))[0]
    got, verdict = codec.read_prediction(codec.set_verdict(record, Verdict.UNCERTAIN))
    assert verdict is Verdict.UNCERTAIN and got["uncertainty"] == 0.3
    np.testing.assert_array_equal(got["std"]["profile"], ok_label(2).values["profile"])
    label = ok_label(4)
    control, data = codec.label_message(label, generator_id=1, step=2, uncertainty=0.5)
    assert len(data) == codec.label_data_size(0, control)
    back = codec.label_from_message(label.sample, control, data)
    assert back.ok and back.settings == {"mesh": 3}
    np.testing.assert_array_equal(back.values["profile"], label.values["profile"])
    (item,) = codec.decode_labels(codec.encode_labels([label.to_atoms()]))
    np.testing.assert_array_equal(item["profile"], label.values["profile"])
    with pytest.raises(ValueError, match="truncated"):
        codec.structure_records(buf[:-1])
