"""The runners' shared concurrency tools: :func:`mtlbench.run.sync.file_lock` serialises
processes, :class:`mtlbench.run.sync.Periodic` calls a function until stopped or it says
``False``."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from mtlbench.run.sync import Periodic, file_lock


def _hold(lock: str, log: str, tag: str) -> None:
    with file_lock(Path(lock)):
        with open(log, "a") as f:
            f.write(f"{tag}-in\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write(f"{tag}-out\n")


def test_file_lock_lets_one_process_in_at_a_time(tmp_path):
    lock, log = tmp_path / "sub" / ".lock", tmp_path / "log"  # the folder is created
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(str(lock), str(log), t)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    lines = log.read_text().split()
    assert len(lines) == 4
    # never interleaved: whoever entered first left before the other entered
    assert lines[0].endswith("-in") and lines[1] == lines[0].replace("-in", "-out"), lines


def test_periodic_calls_until_stopped_or_false():
    calls: list[int] = []
    done = threading.Event()

    def tick() -> bool:
        calls.append(1)
        if len(calls) == 3:
            done.set()
            return False  # ends the thread
        return True

    with Periodic(0.01, tick) as periodic:
        assert done.wait(60)
        periodic._thread.join(60)  # type: ignore[union-attr]
        assert not periodic._thread.is_alive()  # type: ignore[union-attr]
    assert len(calls) == 3
    counted: list[int] = []
    with Periodic(0.01, lambda: counted.append(1)):
        while len(counted) < 2:
            time.sleep(0.01)
    n = len(counted)
    time.sleep(0.05)
    assert len(counted) == n  # stopped with the block (None does not stop it; False does)
