"""Per-trial progress and the time left: plain lines off a terminal, one redrawn line on it."""

from __future__ import annotations

import io
import time

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.run import progress as progress_mod
from mtlbench.run.base import ELSEWHERE
from mtlbench.run.progress import EpochReporter, ProgressView, duration, read_progress, summary
from mtlbench.trial import TrialConfig, resolve


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trials(n: int = 2, epochs: int = 10):
    return [resolve(TrialConfig("_tiny", "ls", seed, {"epochs": epochs})) for seed in range(n)]


def test_the_reporter_writes_the_epoch_and_its_rate(tmp_path, monkeypatch):
    clock = iter([100.0, 104.0, 108.0])
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    reporter = EpochReporter(tmp_path, "t", epochs=10, run="r")
    reporter(3)  # resumed: the first epoch this run finishes is the fourth
    reporter(4)
    data = read_progress(tmp_path, "t")
    assert (data["epoch"], data["epochs"], data["run"]) == (5, 10, "r")
    assert data["s_per_epoch"] == pytest.approx(4.0)
    reporter.remove()
    assert read_progress(tmp_path, "t") is None


def test_time_left_from_the_measured_seconds_per_epoch(tmp_path):
    a, b = _trials()
    view = ProgressView("s", tmp_path, [a, b], slots=2, run="r", enabled=False)
    assert view.time_left() is None  # nothing measured yet
    reporter = EpochReporter(tmp_path, a.trial_id, epochs=10, run="r")
    reporter(0)
    reporter.started = time.monotonic() - 10.0  # 5 epochs in 10 s: 2 s each
    reporter(4)
    view.poll()
    # a: 5 epochs left, b: 10, at 2 s per epoch, on two slots
    assert view.time_left() == pytest.approx((5 * 2 + 10 * 2) / 2, rel=0.05)
    view.finish(a.trial_id, "done")
    assert view.time_left() == pytest.approx(10 * 2 / 2, rel=0.05)


def test_plain_lines_when_not_a_terminal(tmp_path, monkeypatch):
    a, b = _trials()
    stream = io.StringIO()
    view = ProgressView("s", tmp_path, [a, b], run="r", stream=stream)
    EpochReporter(tmp_path, a.trial_id, epochs=10, run="r")(2)
    view.poll()
    view.poll()  # within PLAIN_EVERY_S: no second line for the same trial
    view.finish(a.trial_id, "done")
    view.finish(b.trial_id, ELSEWHERE)
    text = stream.getvalue()
    assert "\r" not in text and "\033" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert f"{a.trial_id} epoch 3/10" in lines[0] and "left" in lines[0]
    assert lines[1] == f"done: {a.trial_id}"
    assert lines[2] == f"left to another process: {b.trial_id}"


def test_one_redrawn_line_on_a_terminal(tmp_path):
    [a] = _trials(1)
    stream = Terminal()
    view = ProgressView("s", tmp_path, [a], run="r", stream=stream)
    EpochReporter(tmp_path, a.trial_id, epochs=10, run="r")(0)
    view.poll()
    view.poll()
    assert stream.getvalue().count("\r\033[K") == 2 and "\n" not in stream.getvalue()
    assert "sweep s: 0/1 trials" in stream.getvalue() and "epoch 1/10" in stream.getvalue()


def test_another_runs_progress_is_not_shown(tmp_path):
    [a] = _trials(1)
    stream = io.StringIO()
    view = ProgressView("s", tmp_path, [a], run="mine", stream=stream)
    EpochReporter(tmp_path, a.trial_id, epochs=10, run="theirs")(0)
    view.poll()
    assert stream.getvalue() == ""


def test_summary_counts_own_trials_and_says_what_was_left():
    assert summary(["done", "done", "failed"]) == "done=2 failed=1"
    assert summary(["done", ELSEWHERE, ELSEWHERE]) == "done=1; 2 left to another process"
    assert summary([ELSEWHERE]) == "ran none; 1 left to another process"


@pytest.mark.parametrize(
    "seconds, text", [(42, "42 s"), (7 * 60, "7 min"), (2 * 3600 + 5 * 60, "2 h 05 min")]
)
def test_durations_read_well(seconds, text):
    assert duration(seconds) == text


def test_status_shows_the_epoch_of_a_running_trial(tmp_path):
    from mtlbench.run.lease import Lease
    from mtlbench.run.state import trial_states

    [a] = _trials(1)
    lease = Lease.claim(tmp_path, a.trial_id)
    assert isinstance(lease, Lease)
    EpochReporter(tmp_path, a.trial_id, epochs=10, run=None)(2)
    [state] = trial_states(tmp_path, [a])
    assert state.status == "running" and state.detail.endswith("epoch 3/10")
    lease.release()
