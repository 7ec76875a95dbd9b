"""The writer thread of trials' MLflow runs: in order, only beside an evaluation or when waited for, errors raised."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rys_search.search.trial_runs import TrialRuns


class Recorder:
    """A Tracker's close_trial_run that records its calls (and fails for a trial named 'bad')."""

    def __init__(self):
        self.closed = []

    def close_trial_run(self, trial, study, parent, items=None, params=None):
        if trial == "bad":
            raise RuntimeError("tracking server gone")
        time.sleep(0.01)
        self.closed.append((trial, study, parent, items, params))


def test_runs_are_written_in_order_only_beside_an_evaluation_or_when_waited_for():
    tracker = Recorder()
    runs = TrialRuns(tracker)
    for n in range(3):
        runs.close(n, "s", "p", items={"n": n}, params={"k": n})
    time.sleep(0.3)
    assert tracker.closed == []  # the sampler's turn: nothing written
    with runs.beside():
        deadline = time.monotonic() + 5
        while len(tracker.closed) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [c[0] for c in tracker.closed] == [0, 1, 2]
    assert tracker.closed[1] == (1, "s", "p", {"n": 1}, {"k": 1})
    runs.close(3, "s", "p")
    runs.close(4, "s", "p")
    runs.wait()
    assert [c[0] for c in tracker.closed] == [0, 1, 2, 3, 4]
    assert runs.seconds > 0


def test_a_failed_write_is_raised_in_the_study_thread():
    tracker = Recorder()
    runs = TrialRuns(tracker)
    runs.close("bad", "s", "p")
    runs.close(1, "s", "p")
    with pytest.raises(RuntimeError, match="tracking server gone"):
        runs.wait()
    assert [c[0] for c in tracker.closed] == [1]  # the runs after it are still written
    runs.wait()  # raised once


def test_queued_runs_are_written_when_python_exits_without_waiting(tmp_path):
    out = tmp_path / "closed.txt"
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from rys_search.search.trial_runs import TrialRuns

class Tracker:
    def close_trial_run(self, trial, study, parent, items=None, params=None):
        with open({str(out)!r}, "a") as f:
            f.write(f"{{trial}}\\n")

runs = TrialRuns(Tracker())
for n in range(4):
    runs.close(n, "s", "p")
raise SystemExit(3)  # a loop left by an error: no wait()
"""
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 3
    assert out.read_text().split() == ["0", "1", "2", "3"]


def test_finish_writes_the_rest_and_ends_the_writer_thread():
    import threading

    tracker = Recorder()
    runs = TrialRuns(tracker)
    before = threading.active_count()
    runs.close(0, "s", "p")
    runs.finish()
    assert [c[0] for c in tracker.closed] == [0]
    deadline = time.monotonic() + 5
    while threading.active_count() >= before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before - 1
