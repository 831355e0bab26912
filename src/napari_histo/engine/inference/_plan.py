"""Block plans: which tiles each output block needs, and how their outputs are assembled.

Two kinds share one pipeline:

- :class:`SegmentPlan`: dense segmentation; output pixels = working pixels; overlapping
  tiles blended with a sin^2 window (see :mod:`napari_histo.engine.tiling`);
- :class:`HeatmapPlan`: patch classification; one output pixel per ``stride`` px cell, the
  model sees a ``context`` px patch centred on the cell (CAMELYON-style: 128 / 299).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError
from napari_histo.engine.tiling import BlockLayout, blend_window

__all__ = ["HeatmapPlan", "Plan", "SegmentPlan"]

Box = tuple[int, int, int, int]


@dataclass
class Plan:
    """Common geometry: ``out_shape`` output px, ``chunk`` output px per block side."""

    out_shape: tuple[int, int]
    chunk: int
    num_classes: int
    cell: int = 1  # working px per output px

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Blocks along y and x."""
        return (math.ceil(self.out_shape[0] / self.chunk), math.ceil(self.out_shape[1] / self.chunk))

    def blocks(self) -> list[tuple[int, int]]:
        """All blocks, row-major."""
        ny, nx = self.grid_shape
        return [(by, bx) for by in range(ny) for bx in range(nx)]

    def block_box(self, b: tuple[int, int]) -> Box:
        """Output-pixel box of a block, clipped to the output."""
        c = self.chunk
        y0, x0 = b[0] * c, b[1] * c
        return (y0, x0, min(y0 + c, self.out_shape[0]), min(x0 + c, self.out_shape[1]))

    # subclasses --------------------------------------------------------------------
    def read_box(self, b: tuple[int, int]) -> Box:  # pragma: no cover - abstract
        raise NotImplementedError

    def tiles(self, b: tuple[int, int]) -> list[tuple[tuple[int, int], Box]]:  # pragma: no cover
        """(offset in the read box, core box in working px) of each model input."""
        raise NotImplementedError

    def input_size(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def assemble(self, b: tuple[int, int], offsets: list[tuple[int, int]],
                 probs: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
        raise NotImplementedError  # pragma: no cover

    def extract(self, region: npt.NDArray[np.uint8],
                offsets: list[tuple[int, int]]) -> npt.NDArray[np.uint8]:
        """Stack the model inputs at ``offsets`` of a read region into (N, T, T, 3)."""
        t = self.input_size()
        out = np.empty((len(offsets), t, t, 3), dtype=np.uint8)
        for k, (oy, ox) in enumerate(offsets):
            out[k] = region[oy : oy + t, ox : ox + t]
        return out

    @property
    def total_tiles(self) -> int:
        """Model inputs over the whole output."""
        return sum(len(self.tiles(b)) for b in self.blocks())


@dataclass
class SegmentPlan(Plan):
    """Overlapping tiles, ``block_tiles`` per block side, blended."""

    tile: int = 256
    overlap: int = 64
    block_tiles: int = 2
    layout: BlockLayout = field(init=False)
    window: npt.NDArray[np.float32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.layout = BlockLayout(self.out_shape, self.tile, self.overlap, self.block_tiles)
        self.chunk = self.layout.block
        self.window = blend_window(self.tile, self.overlap)

    def input_size(self) -> int:
        """Model input side."""
        return self.tile

    def read_box(self, b: tuple[int, int]) -> Box:
        """Block core plus halo, in working px."""
        return self.layout.read_box(*b)

    def tiles(self, b: tuple[int, int]) -> list[tuple[tuple[int, int], Box]]:
        """Each tile's offset and its core (tile minus halo, clipped) for the tissue test."""
        h = self.layout.halo
        H, W = self.out_shape
        out = []
        for off in self.layout.tile_offsets(*b):
            y0, x0, y1, x1 = self.layout.tile_box(*b, off)
            core = (max(y0 + h, 0), max(x0 + h, 0), min(y1 - h, H), min(x1 - h, W))
            out.append((off, core))
        return out

    def assemble(self, b: tuple[int, int], offsets: list[tuple[int, int]],
                 probs: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
        """Blend tile probabilities (N, C, T, T) into the block (C, h, w); uncovered = 0."""
        y0, x0, y1, x1 = self.block_box(b)
        h, w = y1 - y0, x1 - x0
        ry0, rx0, ry1, rx1 = self.read_box(b)
        c = self.num_classes
        if probs is None or not offsets:
            return np.zeros((c, h, w), dtype=np.float32)
        acc = np.zeros((c, ry1 - ry0, rx1 - rx0), dtype=np.float32)
        wsum = np.zeros((ry1 - ry0, rx1 - rx0), dtype=np.float32)
        t = self.tile
        win = self.window
        for k, (oy, ox) in enumerate(offsets):
            acc[:, oy : oy + t, ox : ox + t] += probs[k] * win
            wsum[oy : oy + t, ox : ox + t] += win
        hh = self.layout.halo
        acc = acc[:, hh : hh + h, hh : hh + w]
        wsum = wsum[hh : hh + h, hh : hh + w]
        out = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
        return out


@dataclass
class HeatmapPlan(Plan):
    """One output pixel per ``stride`` px cell; ``context`` px patch centred on each cell."""

    stride: int = 128
    context: int = 299
    block_cells: int = 16

    def __post_init__(self) -> None:
        if self.context < 1 or self.stride < 1:
            raise ConfigError("stride and context must be >= 1 px")
        self.cell = self.stride
        self.chunk = self.block_cells

    def input_size(self) -> int:
        """Model input side (= context)."""
        return self.context

    def _lead(self) -> int:
        # patch top-left relative to the cell's top-left (centres coincide)
        return (self.stride - self.context) // 2

    def read_box(self, b: tuple[int, int]) -> Box:
        """Union of the context patches of the block's cells, in working px."""
        cy0, cx0, cy1, cx1 = self.block_box(b)
        s, k, lead = self.stride, self.context, self._lead()
        return (cy0 * s + lead, cx0 * s + lead, (cy1 - 1) * s + lead + k, (cx1 - 1) * s + lead + k)

    def tiles(self, b: tuple[int, int]) -> list[tuple[tuple[int, int], Box]]:
        """Each cell's patch offset and the cell itself (working px) for the tissue test."""
        cy0, cx0, cy1, cx1 = self.block_box(b)
        s = self.stride
        return [(((cy - cy0) * s, (cx - cx0) * s), (cy * s, cx * s, (cy + 1) * s, (cx + 1) * s))
                for cy in range(cy0, cy1) for cx in range(cx0, cx1)]

    def assemble(self, b: tuple[int, int], offsets: list[tuple[int, int]],
                 probs: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
        """Place each cell's class probabilities (N, C) at its output pixel."""
        cy0, cx0, cy1, cx1 = self.block_box(b)
        out = np.zeros((self.num_classes, cy1 - cy0, cx1 - cx0), dtype=np.float32)
        if probs is None or not offsets:
            return out
        idx = np.asarray(offsets) // self.stride
        out[:, idx[:, 0], idx[:, 1]] = probs.T
        return out
