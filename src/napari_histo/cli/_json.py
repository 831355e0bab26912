"""``--json`` output shared by every subcommand: one JSON object on stdout.

NaN and infinities become ``null`` (JSON has neither), numpy scalars plain numbers, paths
and anything else unknown their text. Progress and human-readable lines never go to stdout
in JSON mode, so ``json.loads(stdout)`` always works; on an error the CLI still prints its
one line on stderr and, in JSON mode, an ``{"ok": false, "error": ...}`` object on stdout
(see :func:`napari_histo.cli._run`).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Iterator
from typing import Any


def json_help(what: str) -> str:
    """``--json`` help text, one wording for every subcommand (argparse %-escapes kept)."""
    return (f"print {what} as one JSON object on stdout (progress and messages go to "
            'stderr); on an error stdout gets {"ok": false, "error": MESSAGE, "exit_code": N} '
            "besides the one-line message on stderr")


@contextlib.contextmanager
def warnings_into(notes: list[tuple[str, str]]) -> Iterator[None]:
    """Python warnings raised meanwhile also go into ``notes`` as ("warning", text).

    They are still printed (one line on stderr); with ``--json`` they then appear in the
    object's ``warnings`` list too, so a script sees every warning a person would.
    """
    from napari_histo.core.limits import one_line

    saved = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        notes.append(("warning", one_line(str(message))))
        saved(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf as None, tuples as lists and numpy scalars as Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar (no numpy import here)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return jsonable(item())
    return value


def print_json(obj: Any, *, indent: int | None = None) -> None:
    """Print ``obj`` as one JSON document on stdout."""
    print(json.dumps(jsonable(obj), indent=indent, default=str, allow_nan=False))
    sys.stdout.flush()


def print_json_error(command: str, message: str, exit_code: int) -> None:
    """The error object of JSON mode (stdout; the one-line message still goes to stderr)."""
    print_json({"command": command, "ok": False, "exit_code": exit_code, "error": message})
