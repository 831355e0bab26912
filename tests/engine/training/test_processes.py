"""Following a subprocess's event stream (engine.training.processes), with real processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from napari_histo.core.progress import EpochEnd, Message, Progress
from napari_histo.engine.training.processes import (
    ProcessOutcome,
    _error_line,
    _last_json,
    follow_process,
)

# writes two events in pieces (a line cut in the middle), a garbage line, then exits
WRITER = r"""
import json, sys, time
path = sys.argv[1]
with open(path, "a") as f:
    def put(text):
        f.write(text); f.flush(); time.sleep(0.05)
    put('{"event": "progress", "done": 1, "total": 2, "de')
    put('sc": "train", "info": {"loss": 0.5}}\n')
    put('garbage\n')
    put(json.dumps({"event": "epoch_end", "epoch": 1, "metrics": {"val_dice": None},
                    "checkpoint": "x.pt"}) + "\n")
print('{"ok": true}')
"""

SLEEPER = r"""
import signal, sys, time
signal.signal(signal.SIGINT, lambda *a: sys.exit(130))
print("ready", flush=True)
time.sleep(60)
"""


def test_follow_yields_the_events_and_the_outcome(tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    gen = follow_process([sys.executable, "-c", WRITER, str(events)], events, heartbeat_s=0.01)
    got = []
    try:
        while True:
            got.append(next(gen))
    except StopIteration as stop:
        outcome = stop.value
    real = [ev for ev in got if not isinstance(ev, Message)]
    # heartbeats repeat the Progress; the epoch comes once, after it; garbage is skipped
    assert {type(ev) for ev in real} == {Progress, EpochEnd}
    assert [type(ev) for ev in real].count(EpochEnd) == 1 and isinstance(real[0], Progress)
    assert real[0] == Progress(1, 2, "train", {"loss": 0.5})  # joined across two writes
    ep = next(ev for ev in real if isinstance(ev, EpochEnd))
    assert ep.checkpoint == "x.pt" and ep.metrics["val_dice"] != ep.metrics["val_dice"]  # NaN
    assert outcome.returncode == 0 and _last_json(outcome.stdout) == {"ok": True}


def test_closing_the_follower_interrupts_the_process(tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    procs = []
    gen = follow_process([sys.executable, "-c", SLEEPER], events, on_start=procs.append,
                         heartbeat_s=0.05, stop_grace_s=10.0)
    next(gen)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:  # quiet process: heartbeats keep coming
        next(gen)
        if procs[0].poll() is None and time.monotonic() - t0 > 0.5:
            break
    gen.close()
    assert procs[0].returncode == 130  # SIGINT, handled: not killed


def test_error_line_prefers_the_json_error_then_stderr() -> None:
    obj = {"ok": False, "error": "batch_size 2 is too small"}
    out = ProcessOutcome(2, "", "napari-histo train: error: other")
    assert _error_line(out, obj) == "batch_size 2 is too small"
    assert _error_line(out, None) == "other"
    assert "code 2" in _error_line(ProcessOutcome(2, "", ""), None)
    assert _last_json('{"ok": true}\n{"ok": false, "error": "interrupted"}\n')["ok"] is False


@pytest.mark.parametrize("lines", ["", "no json\n"])
def test_last_json_none_without_an_object(lines: str) -> None:
    assert _last_json(lines) is None
