"""Headless command line: ``napari-histo info|train|evaluate|predict|review|demo``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module is
imported only to build the parser, and heavy imports (torch, dask) happen inside the command
so ``napari-histo --help`` stays fast.

Whatever goes wrong ends as one readable line on stderr (``--verbose`` shows the traceback):

======  ==================================================================================
exit    meaning
======  ==================================================================================
0       done (warnings, if any, are one ``napari-histo: warning:`` line each)
2       bad input, bad option, a file that cannot be read or written, disk full, not
        enough memory; the line says which file and what to do
130     interrupted (Ctrl-C)
141     the reader of our output went away (``| head``): quiet, like any Unix tool
======  ==================================================================================

An error napari-histo did not foresee is still one line and exit 2, worded "unexpected
error": it is a bug to report (the hostile-input suite fails on it).

With ``--json`` (info, train, evaluate, predict) stdout carries exactly one JSON object: the
result, or on an error (exit 2 or 130) ``{"command", "ok": false, "exit_code", "error"}``
next to the usual line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from napari_histo import __version__
from napari_histo.core.errors import describe_failure, one_line

SUBCOMMANDS = ("info", "train", "evaluate", "predict", "review", "demo")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (not usage + error), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = OneLineParser(
        prog="napari-histo",
        description="Whole-slide pathology: read slides, train and run segmentation models.",
    )
    parser.add_argument("--version", action="version", version=f"napari-histo {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"napari_histo.cli._{name}")
        module.register(sub)
    return parser


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    return f"napari-histo: warning: {one_line(str(message))}\n"


@contextlib.contextmanager
def _quiet_libraries(verbose: bool) -> Iterator[None]:
    """Warnings as one line each; library log chatter (tifffile, dask) only with --verbose.

    Restores both on exit, so ``main()`` called in-process (tests, scripts) leaves no trace.
    """
    if verbose:
        yield
        return
    saved_format = warnings.formatwarning
    loggers = [logging.getLogger(n) for n in ("tifffile", "distributed", "bokeh", "numcodecs",
                                               "zarr", "PIL")]
    levels = [lg.level for lg in loggers]
    warnings.formatwarning = _format_warning
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        warnings.formatwarning = saved_format
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush cannot fail again.

    stderr too when it went into the same closed pipe (``2>&1 | head``): tqdm swallows its
    failed writes, but the text left in stderr's buffer would fail at exit (status 120).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return
    try:
        sys.stderr.flush()
    except OSError:
        try:
            os.dup2(devnull, sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    except (ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # --help and --version print here, then exit
    except SystemExit:
        if not _flush_stdout():
            return EXIT_BROKEN_PIPE
        raise
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    with _quiet_libraries(args.verbose):
        return _run(args)


def _flush_stdout() -> bool:
    """Flush stdout; False (and stdout silenced) when its reader has gone away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    except (OSError, ValueError):
        pass
    return True


def _run(args: argparse.Namespace) -> int:
    prefix = f"napari-histo {args.command}: error:"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"napari-histo {args.command}: interrupted", file=sys.stderr)
        _json_error(args, "interrupted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as err:  # one line, never a traceback (--verbose shows it)
        if args.verbose:
            raise
        message, _foreseen = describe_failure(err)
    try:
        print(f"{prefix} {one_line(message)}", file=sys.stderr)
    except OSError:
        pass
    _json_error(args, one_line(message), EXIT_ERROR)
    return EXIT_ERROR


def _json_error(args: argparse.Namespace, message: str, code: int) -> None:
    """With --json, stdout also gets the error as a JSON object (scripts parse stdout)."""
    if not getattr(args, "json", False):
        return
    from napari_histo.cli._json import print_json_error

    try:
        print_json_error(args.command, message, code)
    except OSError:
        _silence_stdout()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
