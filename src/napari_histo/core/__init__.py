"""Shared vocabulary of every layer: errors, progress events, small types (stdlib + numpy only)."""

from napari_histo.core.errors import (
    CancelledError,
    CheckpointError,
    ConfigError,
    CorruptDataError,
    DataError,
    HistoError,
    OutputExistsError,
    SlideOpenError,
    UnsupportedSlideError,
)
from napari_histo.core.progress import EpochEnd, Event, Message, Progress, Task, run_task

__all__ = [
    "CancelledError",
    "CheckpointError",
    "ConfigError",
    "CorruptDataError",
    "DataError",
    "EpochEnd",
    "Event",
    "HistoError",
    "Message",
    "OutputExistsError",
    "Progress",
    "SlideOpenError",
    "Task",
    "UnsupportedSlideError",
    "run_task",
]
