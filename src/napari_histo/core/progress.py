"""Progress events shared by the engine, the CLI and the napari widgets.

Long jobs are generator functions: they ``yield`` small events (numbers and strings, never
arrays, so Qt signals stay cheap) and ``return`` their result. The CLI drains them with
:func:`run_task`; the GUI runs them in a napari thread worker. ``generator.close()`` cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

R = TypeVar("R")

_BOX_KEYS = ("y0", "x0", "y1", "x1")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of work finished (``total`` may be 0 when unknown).

    ``info``: numbers only, e.g. ``epoch``/``loss``/``lr`` of a training step, or the output
    box ``y0``/``x0``/``y1``/``x1`` of a prediction block just written (see :attr:`box`).
    ``store``: the output store (a path) a prediction writes into, announced once before
    its first block so a viewer can lay out its layers.
    """

    done: int
    total: int
    desc: str = ""
    info: dict[str, float] = field(default_factory=dict)
    store: str | None = None

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """Output box (y0, x0, y1, x1) of the block this event reports written, if any."""
        if not all(k in self.info for k in _BOX_KEYS):
            return None
        y0, x0, y1, x1 = (int(self.info[k]) for k in _BOX_KEYS)
        return (y0, x0, y1, x1)


@dataclass(frozen=True)
class EpochEnd:
    """One training epoch finished; ``metrics`` maps e.g. ``train_loss``/``val_dice`` to floats."""

    epoch: int
    metrics: dict[str, float]
    checkpoint: str | None = None


@dataclass(frozen=True)
class Message:
    """A line of text for the user (``level``: info, warning or error)."""

    text: str
    level: str = "info"


Event = Union[Progress, EpochEnd, Message]
Task = Generator[Event, None, R]


def run_task(task: Generator[Event, None, R], on_event: Callable[[Event], Any] | None = None) -> R:
    """Drain a task generator, passing each event to ``on_event``; return the task's result."""
    try:
        while True:
            event = next(task)
            if on_event is not None:
                on_event(event)
    except StopIteration as stop:
        return stop.value
    finally:
        task.close()
