"""Lazy pyramid levels: a numpy-like level array read segment by segment, and computed levels.

Every pyramid level is a :class:`LevelArray`: an object with ``shape``, ``dtype``, ``ndim``
and numpy slicing that decodes only the file segments (tiles, strips, chunks) a slice touches,
through a shared :class:`~napari_histo.io._cache.TileCache`. Dask arrays are built on top of
it with ``inline_array=True``: dask's default ``from_array`` graph makes every slice of a
gigapixel level pay for culling all of its chunks (~0.3 s for 300k chunks, measured), which
would make napari stutter.

Slides without a pyramid get :class:`DownsampledLevel` levels (2x2 block mean of the level
above, computed on access, never materialised) until the smallest side is <= ``MIN_SIDE``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import SlideOpenError
from napari_histo.core.limits import MAX_ARRAY_BYTES, check_decode, check_image_size
from napari_histo.io._cache import TileCache, parallel_map

__all__ = ["LevelArray", "DownsampledLevel", "add_computed_levels", "to_dask", "MIN_SIDE"]

#: computed levels are added until the smallest level's longer side is at most this.
MIN_SIDE = 1024

_WHITE = np.uint8(255)

#: ``np.asarray(level)`` on anything bigger is refused (a gigapixel level-0 would OOM)
_MAX_ARRAY_BYTES = MAX_ARRAY_BYTES


class LevelArray(ABC):
    """Lazy (H, W, 3) uint8 view of one pyramid level, decoded segment by segment.

    Subclasses implement :meth:`_decode_segment`. Reads are thread-safe as long as
    ``_decode_segment`` is (the cache has its own lock). Label levels (masks) are 2-D
    (``channels=None``) of an integer ``dtype`` and use ``fill=0`` for missing data.

    Parameters
    ----------
    height, width
        Level size in pixels.
    seg_shape
        Size (h, w) of the file's decode unit (tile, strip, zarr chunk).
    cache
        Decoded-segment cache shared by the slide's levels, or None.
    key
        Hashable prefix identifying this level in the cache.
    chunk_shape
        Dask chunk size; defaults to ``seg_shape`` (chunks aligned to the file's tiles).
    name
        Level name for error messages.

    Raises
    ------
    SlideOpenError
        A size beyond :data:`~napari_histo.core.limits.MAX_SIDE`, or a decode unit too big
        to decode at once (checked here, before anything is read).
    """

    native = True
    #: what one decode unit is called in messages
    unit = "segment"

    def __init__(
        self,
        height: int,
        width: int,
        seg_shape: tuple[int, int],
        *,
        cache: TileCache | None,
        key: Hashable,
        chunk_shape: tuple[int, int] | None = None,
        channels: int | None = 3,
        dtype: Any = np.uint8,
        fill: int = 255,
        name: str | None = None,
    ) -> None:
        what = name or getattr(self, "name", None) or "image level"
        height, width = check_image_size(height, width, what, error=SlideOpenError)
        if self.native:
            sh0, sw0 = min(int(seg_shape[0]), height), min(int(seg_shape[1]), width)
            check_decode(sh0, sw0, f"{what} ({self.unit})", channels=channels or 1,
                         itemsize=np.dtype(dtype).itemsize, error=SlideOpenError,
                         hint="the file is corrupt, or re-save it as a tiled TIFF")
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.fill = fill
        self.shape: tuple[int, ...] = (
            (int(height), int(width), channels) if channels else (int(height), int(width))
        )
        self.ndim = len(self.shape)
        sh, sw = max(1, int(seg_shape[0])), max(1, int(seg_shape[1]))
        self.seg_shape = (sh, sw)
        self.grid = (math.ceil(height / sh), math.ceil(width / sw))
        self.cache = cache
        self.key = key
        self.chunk_shape = chunk_shape or (min(sh, height), min(sw, width))
        #: ``(func, args)`` that reopens this level in another process (set by the slide)
        self.reopen: tuple[Any, tuple[Any, ...]] | None = None
        #: applied to each decoded segment before caching (masks map 0/255 to 0/1 with it)
        self.postprocess: Any = None

    def __reduce__(self) -> Any:
        # Levels hold open files; pickling (dask distributed, DataLoader workers) reopens the
        # slide by path in the receiving process instead.
        if self.reopen is None:
            raise TypeError(f"{type(self).__name__} cannot be pickled without a reopen recipe")
        return self.reopen

    def __dask_tokenize__(self) -> Any:
        # cheap, deterministic identity (file token + level) instead of pickling the object
        return (type(self).__name__, self.key, self.shape)

    @property
    def size(self) -> int:
        """Number of elements (numpy protocol)."""
        return int(np.prod(self.shape))

    @abstractmethod
    def _decode_segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        """Decode segment (row ``sy``, column ``sx``) to RGB uint8, cropped to the image."""

    def segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        """Decoded segment, from the cache when present."""
        cache = self.cache
        if cache is None:
            return self._decoded(sy, sx)
        k = (self.key, sy, sx)
        tile = cache.get(k)
        if tile is None:
            tile = self._decoded(sy, sx)
            cache.put(k, tile)
        return tile

    def _decoded(self, sy: int, sx: int) -> np.ndarray:
        tile = self._decode_segment(sy, sx)
        if self.postprocess is not None:
            tile = self.postprocess(tile)
        return tile

    def read(self, y0: int, y1: int, x0: int, x1: int) -> npt.NDArray[np.uint8]:
        """Pixels ``[y0:y1, x0:x1]`` (clipped to the level) as a new (h, w, 3) array.

        Segments are decoded in parallel on the decode pool when a read spans several.
        """
        h, w = self.shape[0], self.shape[1]
        y0, x0 = max(0, y0), max(0, x0)
        y1, x1 = min(h, y1), min(w, x1)
        out = np.empty((max(0, y1 - y0), max(0, x1 - x0)) + self.shape[2:], dtype=self.dtype)
        if out.size == 0:
            return out
        sh, sw = self.seg_shape
        ids = [
            (sy, sx)
            for sy in range(y0 // sh, (y1 - 1) // sh + 1)
            for sx in range(x0 // sw, (x1 - 1) // sw + 1)
        ]
        if len(ids) == 1:
            tiles = [self.segment(*ids[0])]
        else:
            tiles = parallel_map(lambda i: self.segment(*i), ids)
        for (sy, sx), tile in zip(ids, tiles, strict=False):
            ty0, tx0 = sy * sh, sx * sw
            ay0, ay1 = max(y0, ty0), min(y1, ty0 + tile.shape[0])
            ax0, ax1 = max(x0, tx0), min(x1, tx0 + tile.shape[1])
            if ay1 > ay0 and ax1 > ax0:
                out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = tile[
                    ay0 - ty0 : ay1 - ty0, ax0 - tx0 : ax1 - tx0
                ]
        return out

    def __getitem__(self, key: Any) -> npt.NDArray[np.uint8]:
        """Numpy basic slicing (ints and slices, any step); reads only the covered segments."""
        if not isinstance(key, tuple):
            key = (key,)
        nd = self.ndim
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (nd - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (nd - len(key))
        if len(key) > nd:
            raise IndexError(f"too many indices for a {nd}-d level: {key!r}")
        ylo, yhi, yrel = _axis(key[0], self.shape[0])
        xlo, xhi, xrel = _axis(key[1], self.shape[1])
        arr = self.read(ylo, yhi, xlo, xhi)
        return arr[(yrel, xrel) + tuple(key[2:])]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.size * self.dtype.itemsize > _MAX_ARRAY_BYTES:
            raise MemoryError(
                f"refusing to load a whole {self.shape[1]} x {self.shape[0]} px level into "
                "memory; slice it (level[y0:y1, x0:x1]) or use a coarser level"
            )
        arr = self.read(0, self.shape[0], 0, self.shape[1])
        return arr if dtype is None else arr.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shape[1]}x{self.shape[0]} seg={self.seg_shape}>"


def _axis(k: Any, n: int) -> tuple[int, int, Any]:
    """(lo, hi, relative index) so that ``full[k] == full[lo:hi][relative]``."""
    if isinstance(k, slice):
        r = range(*k.indices(n))
        if len(r) == 0:
            return 0, 0, slice(0, 0)
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
        stop = r.stop - lo
        return lo, hi, slice(r.start - lo, None if stop < 0 else stop, r.step)
    i = int(k)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {k} out of range for size {n}")
    return i, i + 1, 0


class DownsampledLevel(LevelArray):
    """A level computed on access as the 2x2 block mean of ``parent`` (never materialised).

    The last row/column of an odd-sized parent is averaged with itself (edge padding), so
    the level covers the full extent: ``ceil(h / 2) x ceil(w / 2)``. Label levels (2-D) take
    every other pixel instead: class indices must never be averaged.
    """

    native = False

    def __init__(self, parent: LevelArray, *, cache: TileCache | None, key: Hashable) -> None:
        h, w = math.ceil(parent.shape[0] / 2), math.ceil(parent.shape[1] / 2)
        ch, cw = parent.chunk_shape
        seg = (max(64, ch), max(64, cw))
        super().__init__(
            h, w, seg, cache=cache, key=key, chunk_shape=(min(seg[0], h), min(seg[1], w)),
            channels=parent.channels, dtype=parent.dtype, fill=parent.fill,
        )
        self.parent = parent

    def _decode_segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        sh, sw = self.seg_shape
        y0, x0 = sy * sh, sx * sw
        y1, x1 = min(self.shape[0], y0 + sh), min(self.shape[1], x0 + sw)
        src = self.parent.read(2 * y0, 2 * y1, 2 * x0, 2 * x1)
        if self.channels is None:
            return np.ascontiguousarray(src[::2, ::2])
        return block_mean2(src, y1 - y0, x1 - x0)


def block_mean2(src: np.ndarray, h: int, w: int) -> npt.NDArray[np.uint8]:
    """2x2 block mean of ``src`` (edge-padded to 2h x 2w), rounded, as uint8."""
    ph, pw = 2 * h - src.shape[0], 2 * w - src.shape[1]
    if ph or pw:
        src = np.pad(src, ((0, ph), (0, pw), (0, 0)), mode="edge")
    acc = src[0::2, 0::2].astype(np.uint16)
    acc += src[1::2, 0::2]
    acc += src[0::2, 1::2]
    acc += src[1::2, 1::2]
    acc += 2
    acc //= 4
    return acc.astype(np.uint8)


def add_computed_levels(
    levels: list[LevelArray], *, cache: TileCache | None, key: Hashable, min_side: int = MIN_SIDE
) -> list[LevelArray]:
    """Append 2x downsampled levels until the smallest level's longer side is <= ``min_side``.

    Used when a file has a single level (or a pyramid that stops early).
    """
    out = list(levels)
    while max(out[-1].shape[:2]) > min_side:
        out.append(DownsampledLevel(out[-1], cache=cache, key=(key, "computed", len(out))))
    return out


def to_dask(level: LevelArray, name: str) -> da.Array:
    """Wrap a level as a dask array whose chunks are the level's (tile-aligned) chunks."""
    return da.from_array(
        level,
        chunks=(level.chunk_shape[0], level.chunk_shape[1]) + tuple(level.shape[2:]),
        name=name,
        asarray=False,
        fancy=False,
        lock=False,
        inline_array=True,
        meta=np.empty((0,) * level.ndim, dtype=level.dtype),
    )


def white(h: int, w: int) -> npt.NDArray[np.uint8]:
    """A white (background) RGB tile."""
    return np.full((h, w, 3), _WHITE, dtype=np.uint8)


def filler(level: LevelArray, h: int, w: int) -> np.ndarray:
    """A tile of the level's fill value (white for images, 0 for labels)."""
    return np.full((h, w) + tuple(level.shape[2:]), level.fill, dtype=level.dtype)
