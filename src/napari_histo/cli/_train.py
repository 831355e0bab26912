"""`napari-histo train` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from napari_histo.core.errors import HistoError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `train` subcommand."""
    p = sub.add_parser("train", help="(not yet available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Report that the command is not built yet."""
    raise HistoError("'train' is not available in this version yet")
