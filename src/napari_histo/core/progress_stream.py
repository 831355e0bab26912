"""Progress events as JSON lines, so another process (the Train widget) can follow a run.

``napari-histo train --events FILE`` appends one line per :mod:`core.progress` event
(:func:`event_line`); a follower reads the file as it grows and turns the bytes back into
events with :class:`EventLineReader`, which keeps a partial last line until its end arrives
and skips lines that are not events (so a half-written or foreign line never stops a run
being followed). Non-finite numbers are written as ``null`` (plain JSON) and read back as NaN.
"""

from __future__ import annotations

import json
import math
from typing import Any

from napari_histo.core.progress import EpochEnd, Event, Message, Progress

__all__ = ["EventLineReader", "event_from_line", "event_line"]


def _number(value: Any) -> float | None:
    """A plain float (numpy scalars too), None for NaN/inf."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _numbers(d: dict[str, Any]) -> dict[str, Any]:
    """Metric values: numbers, or lists of numbers (``val_dice_ci``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple)):
            out[str(k)] = [_number(x) for x in v]
        elif v is None or isinstance(v, (int, float)) or hasattr(v, "item"):
            out[str(k)] = _number(v)
    return out


def event_line(event: Event) -> str:
    """One event as one JSON line (without the newline)."""
    if isinstance(event, Progress):
        d: dict[str, Any] = {"event": "progress", "done": int(event.done),
                             "total": int(event.total), "desc": event.desc,
                             "info": _numbers(event.info)}
        if event.store is not None:
            d["store"] = event.store
    elif isinstance(event, EpochEnd):
        d = {"event": "epoch_end", "epoch": int(event.epoch), "metrics": _numbers(event.metrics),
             "checkpoint": event.checkpoint}
    else:
        d = {"event": "message", "text": event.text, "level": event.level}
    return json.dumps(d, allow_nan=False)


def _restore(d: Any) -> dict[str, Any]:
    """Metrics read back: ``null`` -> NaN (lists kept)."""
    if not isinstance(d, dict):
        raise TypeError("not an object")
    return {str(k): ([math.nan if x is None else float(x) for x in v] if isinstance(v, list)
                     else math.nan if v is None else float(v)) for k, v in d.items()}


def event_from_line(line: str | bytes) -> Event | None:
    """The event of one line, or None when the line is not one (garbage, another format)."""
    try:
        d = json.loads(line)
        kind = d.get("event") if isinstance(d, dict) else None
        if kind == "progress":
            store = d.get("store")
            return Progress(int(d["done"]), int(d["total"]), str(d.get("desc") or ""),
                            _restore(d.get("info") or {}),
                            None if store is None else str(store))
        if kind == "epoch_end":
            ckpt = d.get("checkpoint")
            return EpochEnd(int(d["epoch"]), _restore(d.get("metrics") or {}),
                            None if ckpt is None else str(ckpt))
        if kind == "message":
            return Message(str(d["text"]), str(d.get("level") or "info"))
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


class EventLineReader:
    """Turns chunks of a growing JSON-lines stream into events.

    A chunk may end in the middle of a line (or of a UTF-8 character): that part waits for
    the next chunk. Lines that are not events are skipped and counted in :attr:`skipped`.
    """

    def __init__(self) -> None:
        self._pending = b""
        #: lines that were not events
        self.skipped = 0

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk``."""
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return self._parse(lines)

    def close(self) -> list[Event]:
        """The stream ended: its last line even without a newline."""
        rest, self._pending = self._pending, b""
        return self._parse([rest])

    def _parse(self, lines: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for raw in lines:
            if not raw.strip():
                continue
            ev = event_from_line(raw.decode("utf-8", "replace"))
            if ev is None:
                self.skipped += 1
            else:
                events.append(ev)
        return events
