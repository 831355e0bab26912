"""Undecodable slide tiles of a prediction run: counted however they were met, kept in the
store's metadata so a kill or a resume loses none of them.

A tile can fail while finding tissue, be served later from the tile cache (still a failure),
or fail while predicting; :func:`summarise_failures` merges all three into the count and
boxes a store, the CLI summary and the napari layer metadata report.
"""

from __future__ import annotations

import math
from typing import Any

from napari_histo.engine.inference._pipeline import RunStats

__all__ = ["MAX_SEGMENTS_IN_META", "segments_from_meta", "segments_to_meta",
           "summarise_failures"]

Box = tuple[int, int, int, int]


def summarise_failures(stats: RunStats, segments: dict[tuple[int, int, int], Any],
                       origin0: tuple[float, float], down: tuple[float, float],
                       out_shape: tuple[int, ...],
                       ) -> tuple[int, list[Box], dict[tuple[int, int, int], Any]]:
    """(failed tiles, failed boxes in output px, failed slide segments inside the output).

    ``segments``: undecodable slide segments ``(level, row, column) -> level-0 box`` met
    anywhere (tissue detection, the tile cache, prediction reads). The count is the blocks
    that could not be read at all plus the undecodable segments overlapping the output
    (never fewer than the decode warnings the run itself caught).
    """
    oy, ox = float(origin0[0]), float(origin0[1])
    dy, dx = float(down[0]), float(down[1])
    h, w = int(out_shape[-2]), int(out_shape[-1])
    y_end, x_end = oy + h * dy, ox + w * dx
    boxes: list[Box] = [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in stats.failed_boxes]
    kept: dict[tuple[int, int, int], Any] = {}
    for key, b in segments.items():
        if b is None:
            kept[key] = None
            continue
        if b[2] <= oy or b[0] >= y_end or b[3] <= ox or b[1] >= x_end:
            continue  # outside this run's region
        kept[key] = b
        y0, x0 = max(0, math.floor((b[0] - oy) / dy)), max(0, math.floor((b[1] - ox) / dx))
        y1, x1 = min(h, math.ceil((b[2] - oy) / dy)), min(w, math.ceil((b[3] - ox) / dx))
        if y1 > y0 and x1 > x0 and (y0, x0, y1, x1) not in boxes:
            boxes.append((y0, x0, y1, x1))
    warned = stats.failed_tiles - stats.failed_block_tiles
    return stats.failed_block_tiles + max(len(kept), warned), boxes, kept


#: failed segments kept in a store's metadata (the count is always complete)
MAX_SEGMENTS_IN_META = 1000


def segments_to_meta(segs: dict[tuple[int, int, int], Any]) -> list[list[Any]]:
    """Failed segments as JSON: ``[level, row, column, y0, x0, y1, x1]`` (box in level-0 px)."""
    out = []
    for (lv, sy, sx), b in list(segs.items())[:MAX_SEGMENTS_IN_META]:
        out.append([lv, sy, sx, *(round(float(v), 3) for v in b)] if b else [lv, sy, sx])
    return out


def segments_from_meta(items: Any) -> dict[tuple[int, int, int], Any]:
    """Inverse of :func:`segments_to_meta` (bad entries are skipped)."""
    out: dict[tuple[int, int, int], Any] = {}
    for it in items or []:
        try:
            key = (int(it[0]), int(it[1]), int(it[2]))
            out[key] = tuple(float(v) for v in it[3:7]) if len(it) >= 7 else None
        except (TypeError, ValueError, IndexError):
            continue
    return out
