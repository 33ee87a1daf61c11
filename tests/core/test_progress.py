"""Progress display: live line on a (fake) terminal, throttled log lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest

from pal_atoms.workflow.progress import (
    Progress,
    format_duration,
    format_status,
    oracle_busy_fraction,
)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(**changes):
    base = {
        "time": 1.7e9,
        "elapsed_s": 125.0,
        "labels_ok": 40,
        "labels_failed": 2,
        "generator_steps": 6400,
        "steps_per_s": 51.2,
        "uncertain_fraction": 0.1,
        "max_force_std": 0.1321,
        "training_rounds": 3,
        "test_force_mae": 0.0451,
        "busy_s": {"prediction": 20.0, "oracle": 100.0, "training": 5.0, "store": 0.1},
        "queued": 3,
        "duplicates": 0,
        "dropped": 0,
        "final": False,
    }
    base.update(changes)
    return base


def test_format_status_has_numbers_with_units():
    text = format_status(record())
    assert text.startswith("2m05s | labels 40 ok, 2 failed | oracle busy 80%")
    assert "51.2 steps/s" in text
    assert "max force std 0.132 eV/Å" in text
    assert "test MAE 0.0451 eV/Å" in text
    assert "queue 3" in text


def test_format_status_leaves_out_missing_and_null_fields():
    text = format_status({"labels_ok": 0, "test_force_mae": None, "max_force_std": float("nan")})
    assert text == "labels 0 ok"
    assert format_status({}) == ""


def test_mpi_busy_fraction_wins_over_busy_seconds():
    assert oracle_busy_fraction(record(oracle_busy_fraction=0.5)) == 0.5
    assert oracle_busy_fraction(record()) == pytest.approx(0.8)
    assert oracle_busy_fraction({"elapsed_s": 0.0, "busy_s": {"oracle": 1.0}}) is None
    assert "2 predictions pending" in format_status(record(pending_predictions=2))


@pytest.mark.parametrize(
    ("seconds", "text"), [(3.21, "3.2s"), (65, "1m05s"), (7325, "2h02m"), (-1, "?")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_tty_redraws_one_line_in_place():
    stream, clock = FakeTTY(), FakeClock()
    progress = Progress(stream, clock=clock)
    assert progress.live
    progress.update(record(labels_ok=5, test_force_mae=0.1))
    clock.now = 1.0
    progress.update(record(labels_ok=6, test_force_mae=None))  # shorter line
    progress.close()
    progress.close()
    out = stream.getvalue()
    assert "\n" not in out[:-1]
    assert out.endswith("\n")
    frames = out[:-1].split("\r")[1:]
    assert len(frames) == 2
    assert "labels 6 ok" in frames[1]
    assert len(frames[1]) == len(frames[0])  # padded: the longer old line is blanked
    progress.update(record())  # after close: ignored
    assert stream.getvalue() == out


def test_tty_redraws_are_throttled_but_final_always_shows():
    stream, clock = FakeTTY(), FakeClock()
    progress = Progress(stream, clock=clock)
    progress.update(record(labels_ok=1))
    progress.update(record(labels_ok=2))  # same instant: skipped
    progress.update(record(labels_ok=3, final=True))
    frames = stream.getvalue().split("\r")[1:]
    assert ["labels 1 ok" in f for f in frames] == [True, False]
    assert "labels 3 ok" in frames[1]
    assert frames[1].rstrip().endswith("final")
    assert progress.last is not None
    assert progress.last["labels_ok"] == 3


def test_plain_mode_logs_at_most_every_interval(caplog):
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream, interval_s=2.0, clock=clock)
    assert not progress.live
    with caplog.at_level(logging.INFO, logger="pal_atoms.workflow.progress"):
        for i in range(10):  # one update every 0.5 s for 4.5 s
            clock.now = 0.5 * i
            progress.update(record(labels_ok=i))
        progress.update(record(labels_ok=99, final=True))
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split("labels ")[1].split(" ")[0] for line in lines] == ["0", "4", "8", "99"]
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert stream.getvalue() == ""  # nothing on the stream itself, no stray newline


def test_force_plain_overrides_the_stream():
    assert not Progress(FakeTTY(), force_plain=True).live
    assert Progress(io.StringIO(), force_plain=False).live
    with pytest.raises(ValueError, match="interval_s"):
        Progress(io.StringIO(), interval_s=-1)


def test_long_lines_are_cut_to_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    stream = FakeTTY()
    with Progress(stream) as progress:
        progress.update(record())
    line = stream.getvalue().strip("\r\n")
    assert len(line) < 30
    assert line.endswith("…")


def test_eta_is_to_the_nearest_cap_at_the_rates_so_far():
    from pal_atoms.workflow.progress import eta_to_cap

    kw = {"labels_ok": 10, "steps": 100, "max_steps": None}
    # 10 labels in 60 s: 390 more take 2340 s, the time limit comes first (300 s left)
    assert eta_to_cap(60.0, time_limit_s=360.0, max_labels=400, **kw) == {
        "eta_s": 300.0,
        "eta_cap": "time_limit",
    }
    assert eta_to_cap(60.0, time_limit_s=None, max_labels=20, **kw) == {
        "eta_s": 60.0,
        "eta_cap": "max_labels",
    }
    assert eta_to_cap(0.0, time_limit_s=None, max_labels=20, **kw) == {}
    assert eta_to_cap(5.0, labels_ok=0, steps=0, time_limit_s=None, max_labels=5, max_steps=9) == {}


def test_the_terminal_line_has_a_bar_and_the_log_line_an_eta():
    record = {"elapsed_s": 90.0, "labels_ok": 3, "eta_s": 270.0, "eta_cap": "time_limit"}
    assert format_status(record).endswith("ETA 4m30s (time_limit)")
    assert format_status(record, bar=True).startswith("[###.........]  25%")
    assert "ETA" not in format_status({**record, "final": True})
