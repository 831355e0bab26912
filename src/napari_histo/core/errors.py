"""Exception hierarchy: every error a user can act on derives from HistoError.

The CLI turns a HistoError into one line on stderr and exit code 2; the napari plugin shows
its message as a notification. Messages must say what was wrong and what to do about it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


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


#: longest message shown on one line (a message quoting a whole file stays readable)
MAX_LINE = 600


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` as one line of at most ``limit`` characters: lines joined by "; ", runs of
    whitespace collapsed (library messages quoting tracebacks or tables stay readable)."""
    parts = (" ".join(part.split()) for part in str(text).splitlines())
    flat = "; ".join(p for p in parts if p)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_failure(exc: BaseException) -> tuple[str, bool]:
    """(one-line message, foreseen) for any failure, shared by the CLI and the widgets.

    Foreseen failures are the user's to fix: bad input (HistoError), a file that cannot be
    read or written, a full disk, too little memory, absurdly nested input. Anything else is
    a bug: still one line, worded "unexpected error", with ``foreseen`` False so the GUI can
    offer the traceback and the hostile-input suite can fail on it.
    """
    import errno

    if isinstance(exc, HistoError):
        return one_line(str(exc)), True
    if isinstance(exc, MemoryError):
        return ("not enough memory for this input or these settings; try a smaller region, "
                "tile or batch size"), True
    if isinstance(exc, RecursionError):
        return "input is nested too deeply to read (a corrupt or hostile file?)", True
    if isinstance(exc, OSError):
        where = exc.filename or ""
        if exc.filename2:
            where = f"{where} -> {exc.filename2}"
        what = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return one_line(f"disk full while writing {where or 'the output'}; free some space "
                            "or choose another output folder (the partial output was not marked "
                            "complete)"), True
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return one_line(f"cannot write {where or 'the output'} ({what}); choose a folder "
                            "you can write to"), True
        return one_line(f"{what}: {where}" if where else what), True
    return one_line(f"unexpected error ({type(exc).__name__}: {exc}); run with --verbose for "
                    "the traceback and please report it"), False


@contextlib.contextmanager
def reading(what: str, error: type[HistoError]) -> Iterator[None]:
    """Turn whatever a third-party parser raises while reading ``what`` into one ``error``.

    HistoErrors pass through; a MemoryError or RecursionError (a header claiming absurd
    sizes, a structure nested without end) and anything else become one line naming
    ``what``, so a corrupt file never surfaces as a library traceback.
    """
    try:
        yield
    except HistoError:
        raise
    except (MemoryError, RecursionError) as err:
        raise error(f"{what} is too large or too deeply nested to read "
                    f"({type(err).__name__}); the file is corrupt") from None
    except Exception as err:
        raise error(f"{what} is unreadable ({type(err).__name__}: {one_line(err, 200)})") from err
