"""Exception hierarchy: every error a user can act on derives from HistoError.

The CLI turns a HistoError into one line on stderr and exit code 2; the napari plugin shows
its message as a notification. Messages must say what was wrong and what to do about it.
"""

from __future__ import annotations


class HistoError(Exception):
    """Base of all errors napari-histo raises on purpose (bad input, bad config...)."""


class SlideOpenError(HistoError):
    """A slide or image file exists but cannot be opened (empty, truncated, corrupt header)."""


class UnsupportedSlideError(HistoError):
    """The file is not in a format napari-histo reads."""


class CorruptDataError(HistoError):
    """Part of a file (a tile, a chunk) cannot be decoded; the rest may still be usable."""


class DataError(HistoError):
    """Training/evaluation data is unusable: empty folder, size mismatch, bad mask values."""


class ConfigError(HistoError):
    """A configuration value is invalid or inconsistent."""


class CheckpointError(HistoError):
    """A model checkpoint is missing, corrupt, of an unknown version or unsafe to load."""


class OutputExistsError(HistoError):
    """An output path exists and neither resume nor overwrite was asked for."""


class CancelledError(HistoError):
    """A long task was cancelled by the user."""
