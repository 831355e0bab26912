"""Progress events as JSON lines (``train --events``): round trip, partial lines, garbage."""

from __future__ import annotations

import math

import numpy as np

from napari_histo.core.progress import EpochEnd, Message, Progress
from napari_histo.core.progress_stream import EventLineReader, event_from_line, event_line


def test_events_round_trip_with_nan_and_intervals() -> None:
    events = [
        Progress(3, 10, "epoch 1", {"loss": np.float32(0.5), "epoch": 1}, store=None),
        Progress(1, 4, "predict", {"y0": 0, "x0": 0, "y1": 8, "x1": 8}, store="/tmp/a.zarr"),
        EpochEnd(2, {"train_loss": 0.25, "val_dice": float("nan"), "val_dice_ci": [0.5, 0.75]},
                 "/run/epoch_002.pt"),
        Message("small validation set", "warning"),
    ]
    back = [event_from_line(event_line(ev)) for ev in events]
    assert back[0] == Progress(3, 10, "epoch 1", {"loss": 0.5, "epoch": 1.0})
    assert back[1] == events[1] and back[1].box == (0, 0, 8, 8)
    ep = back[2]
    assert isinstance(ep, EpochEnd) and ep.epoch == 2 and ep.checkpoint == "/run/epoch_002.pt"
    assert ep.metrics["train_loss"] == 0.25 and math.isnan(ep.metrics["val_dice"])
    assert ep.metrics["val_dice_ci"] == [0.5, 0.75]
    assert back[3] == events[3]
    assert "NaN" not in event_line(events[2])  # plain JSON: null, not NaN


def test_reader_joins_partial_lines_and_skips_garbage() -> None:
    lines = [event_line(Progress(i, 5, "epoch 1")) for i in range(1, 4)]
    lines.insert(1, "not json at all")
    lines.insert(2, '{"event": "progress", "done": "x"}')  # an event with a bad field
    lines.insert(3, '[1, 2, 3]')
    text = ("\n".join(lines) + "\n" + event_line(Message("héllo"))).encode("utf-8")
    reader = EventLineReader()
    got = []
    for i in range(0, len(text), 7):  # chunks cut lines and the UTF-8 "é" anywhere
        got += reader.feed(text[i:i + 7])
    assert [ev.done for ev in got] == [1, 2, 3]  # the last line waits for its newline
    got += reader.close()
    assert got[-1] == Message("héllo")
    assert reader.skipped == 3
    assert reader.close() == [] and reader.feed(b"\n\n  \n") == []  # blank lines: nothing
