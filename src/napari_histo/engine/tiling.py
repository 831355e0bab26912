"""Tile and block geometry for tiled inference (pure numpy, no I/O).

Vocabulary, all in *output pixels* (pixels at the working resolution):

- a **tile** is one model input, ``tile`` px square; neighbouring tiles share ``overlap`` px,
  so the tile stride is ``tile - overlap`` and each tile's outer ``overlap / 2`` px is halo;
- a **block** is ``block_tiles x block_tiles`` tile cores: the unit that is read in one go,
  blended, written as one zarr chunk, resumed and distributed. Blocks are independent (each
  reads its own halo), so a resumed or distributed run computes exactly the same bytes.

Blending uses a separable sin^2 ramp over the overlap: on a stride grid the weights of two
neighbours sum to one, so where both tiles agree the blend reproduces them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError

__all__ = ["BlockLayout", "blend_window", "order_blocks", "ramp_1d"]

Box = tuple[int, int, int, int]


def ramp_1d(tile: int, overlap: int, floor: float = 1e-3) -> npt.NDArray[np.float32]:
    """1-D blending weight: sin^2 ramp over ``overlap`` px at each end, 1 inside."""
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        ramp = np.sin(0.5 * np.pi * (i + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[tile - overlap :] = ramp[::-1]
    return np.maximum(w, floor).astype(np.float32)


def blend_window(tile: int, overlap: int) -> npt.NDArray[np.float32]:
    """2-D separable blending window (tile, tile)."""
    r = ramp_1d(tile, overlap)
    return np.outer(r, r).astype(np.float32)


@dataclass(frozen=True)
class BlockLayout:
    """Blocks of overlapping tiles covering an image of ``shape`` output pixels."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    block_tiles: int = 2

    def __post_init__(self) -> None:
        if self.tile < 8:
            raise ConfigError(f"tile size {self.tile} px is too small (>= 8)")
        if self.overlap < 0 or self.overlap % 2 or self.overlap >= self.tile:
            raise ConfigError(
                f"overlap {self.overlap} px must be even, >= 0 and smaller than the tile "
                f"({self.tile} px)"
            )
        if self.block_tiles < 1:
            raise ConfigError("block_tiles must be >= 1")
        if self.shape[0] < 1 or self.shape[1] < 1:
            raise ConfigError(f"nothing to predict: image shape {self.shape}")

    @property
    def stride(self) -> int:
        """Distance between neighbouring tile origins."""
        return self.tile - self.overlap

    @property
    def halo(self) -> int:
        """Margin of each tile (and block) outside its core."""
        return self.overlap // 2

    @property
    def block(self) -> int:
        """Side of a block core (= output chunk size)."""
        return self.stride * self.block_tiles

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of blocks along y and x."""
        return (math.ceil(self.shape[0] / self.block), math.ceil(self.shape[1] / self.block))

    def blocks(self) -> list[tuple[int, int]]:
        """All block indices in row-major order."""
        ny, nx = self.grid_shape
        return [(by, bx) for by in range(ny) for bx in range(nx)]

    def block_box(self, by: int, bx: int) -> Box:
        """Core of block (by, bx): (y0, x0, y1, x1), clipped to the image."""
        b = self.block
        y0, x0 = by * b, bx * b
        return (y0, x0, min(y0 + b, self.shape[0]), min(x0 + b, self.shape[1]))

    def tile_counts(self, by: int, bx: int) -> tuple[int, int]:
        """Tiles along y and x needed to cover block (by, bx)."""
        y0, x0, y1, x1 = self.block_box(by, bx)
        return (math.ceil((y1 - y0) / self.stride), math.ceil((x1 - x0) / self.stride))

    def read_box(self, by: int, bx: int) -> Box:
        """Input region (output px, may extend beyond the image) feeding block (by, bx)."""
        y0, x0, _, _ = self.block_box(by, bx)
        ny, nx = self.tile_counts(by, bx)
        ry0, rx0 = y0 - self.halo, x0 - self.halo
        return (ry0, rx0, ry0 + (ny - 1) * self.stride + self.tile,
                rx0 + (nx - 1) * self.stride + self.tile)

    def tile_offsets(self, by: int, bx: int) -> list[tuple[int, int]]:
        """Top-left of each tile inside the block's read box, row-major."""
        ny, nx = self.tile_counts(by, bx)
        s = self.stride
        return [(iy * s, ix * s) for iy in range(ny) for ix in range(nx)]

    def tile_box(self, by: int, bx: int, offset: tuple[int, int]) -> Box:
        """A tile's extent in image output pixels (may extend beyond the image)."""
        ry0, rx0, _, _ = self.read_box(by, bx)
        return (ry0 + offset[0], rx0 + offset[1], ry0 + offset[0] + self.tile,
                rx0 + offset[1] + self.tile)


def order_blocks(
    blocks: Sequence[tuple[int, int]],
    boxes: Sequence[Box],
    near: tuple[float, float] | tuple[float, float, float, float] | None = None,
) -> list[int]:
    """Indices of ``blocks`` sorted nearest-first to a point (y, x) or box (y0, x0, y1, x1).

    Distance is from a block's box to the point/box (0 when they overlap), ties broken by
    distance between centres then row-major order, so the order is deterministic.
    ``near=None`` keeps row-major order.
    """
    n = len(blocks)
    if near is None or n == 0:
        return list(range(n))
    b = np.asarray(boxes, dtype=np.float64)
    if len(near) == 2:
        q = np.array([near[0], near[1], near[0], near[1]], dtype=np.float64)
    else:
        q = np.asarray(near, dtype=np.float64)
    dy = np.maximum(0.0, np.maximum(b[:, 0] - q[2], q[0] - b[:, 2]))
    dx = np.maximum(0.0, np.maximum(b[:, 1] - q[3], q[1] - b[:, 3]))
    gap = np.hypot(dy, dx)
    cy = (b[:, 0] + b[:, 2]) / 2 - (q[0] + q[2]) / 2
    cx = (b[:, 1] + b[:, 3]) / 2 - (q[1] + q[3]) / 2
    centre = np.hypot(cy, cx)
    return [int(i) for i in np.lexsort((np.arange(n), centre, gap))]
