"""Headless command line: ``napari-histo info|train|evaluate|predict|demo``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module is
imported only to build the parser, and heavy imports (torch, dask) happen inside the command
so ``napari-histo --help`` stays fast. A HistoError becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_histo import __version__
from napari_histo.core.errors import HistoError

SUBCOMMANDS = ("info", "train", "evaluate", "predict", "demo")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HistoError as err:
        if args.verbose:
            raise
        print(f"napari-histo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-histo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
