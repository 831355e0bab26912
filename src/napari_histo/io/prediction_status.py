"""How far a prediction store got, read from its files alone (no torch, no engine).

The engine's writer (``engine.inference.writer``) marks each finished block with an empty
file in a hidden sibling folder ``.NAME.ome.zarr.done/`` until the run completes; ``info``
and the napari reader report progress from those markers and the store's fingerprint. One
home for that convention, so the writer and its readers cannot drift apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["block_progress", "done_dir"]


def done_dir(path: str | Path) -> Path:
    """Folder of the finished-block markers of a store (a hidden sibling)."""
    path = Path(path)
    return path.parent / f".{path.name}.done"


def block_progress(path: str | Path, meta: dict[str, Any]) -> tuple[int | None, int | None]:
    """(blocks written, blocks in the run) of a store; None where it cannot be told.

    A complete store has written every block; an unfinished one counts its markers.
    """
    total: int | None
    try:
        fp = meta.get("fingerprint") or {}
        shape, chunk = fp["out_shape"], int(fp["chunk"])
        total = math.ceil(int(shape[-2]) / chunk) * math.ceil(int(shape[-1]) / chunk)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError):
        total = None
    if meta.get("complete"):
        return total, total
    marks = done_dir(path)
    try:
        done = sum(1 for _ in marks.iterdir()) if marks.is_dir() else 0
    except OSError:
        done = 0
    return done, total
