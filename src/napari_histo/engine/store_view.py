"""A prediction store shown while it is written: its levels as array-likes read on demand.

The Segment widget shows a large whole-slide prediction as multiscale napari layers over the
OME-Zarr store the engine is writing (issue 11). napari re-slices such layers on the GUI
thread at every pan and zoom, reading the visible pixels of the shown level; read straight
from zarr each time, that is a zarr read (decode, and a GIL round trip with zarr's I/O
thread for every chunk, slow on a machine busy predicting) at every camera move. So:

* the levels read through one chunk cache shared by the heatmap and its labels;
* while a store is streamed (:func:`start_streaming`), the worker reads the chunks a
  finished block changed, on every level (:func:`read_block_chunks`), and the GUI thread
  only puts them in the cache (:func:`put_chunks`); a chunk nothing landed in yet is zeros,
  with no read at all. The GUI thread reads zarr only for chunks the cache evicted;
* otherwise a written block drops (:func:`forget_box`) the cached chunks it changed.

No dask: napari's dask cache keys tasks by name, so it would keep showing stale chunks.
Nothing here knows napari; the module imports zarr only when a level is first read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["CACHE_BYTES", "StoreLevel", "forget_box", "forget_store", "put_chunks",
           "read_block_chunks", "start_streaming", "stop_streaming", "store_levels"]

#: bytes of decoded chunks kept for store-backed layers (all stores together); a 1600 x 1200
#: px view needs ~8 MB per level shown
CACHE_BYTES = 160 * 2**20

_Key = tuple[str, int, int, int]  # (store path, level, chunk row, chunk column)
_cache: OrderedDict[_Key, tuple[np.ndarray, int, int]] = OrderedDict()  # chunk, its y0, x0
_cache_bytes = 0
_lock = threading.Lock()
#: streamed stores -> the chunks (level, row, column) that hold data (all others are zeros)
_landed: dict[str, set[tuple[int, int, int]]] = {}

#: decoded chunks of one block, every level: {(level, row, col): (foreground, y0, x0)}
Chunks = dict[tuple[int, int, int], tuple[np.ndarray, int, int]]


def start_streaming(path: str) -> None:
    """``path`` is being written and every written block will come through
    :func:`put_chunks`: until :func:`stop_streaming`, chunks not put read as zeros."""
    with _lock:
        _landed[str(path)] = set()


def stop_streaming(path: str) -> None:
    """Back to reading ``path`` from zarr for chunks not in the cache."""
    with _lock:
        _landed.pop(str(path), None)


def put_chunks(path: str, chunks: Chunks) -> None:
    """Cache the chunks a finished block changed (read by the worker: no zarr read here)."""
    path = str(path)
    for (level, cy, cx), (chunk, y0, x0) in chunks.items():
        _put((path, level, cy, cx), chunk, y0, x0)
        with _lock:
            landed = _landed.get(path)
            if landed is not None:
                landed.add((level, cy, cx))


def read_block_chunks(levels: list[Any], box: tuple[int, int, int, int]) -> Chunks:
    """The chunks of every level (zarr arrays, largest first) that the level-0 ``box`` (a
    block just written, with its lower levels) overlaps, as float32 foreground.

    Runs in the worker thread, so the GUI thread never decodes a streamed block.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    out: Chunks = {}
    for k, arr in enumerate(levels):
        f = 2**k
        hk, wk = (int(v) for v in arr.shape[-2:])
        ch, cw = (int(c) for c in arr.chunks[-2:])
        ky0, kx0, ky1, kx1 = y0 // f, x0 // f, min(hk, -(-y1 // f)), min(wk, -(-x1 // f))
        if ky1 <= ky0 or kx1 <= kx0:
            break
        r0, r1 = ky0 // ch * ch, min(hk, -(-ky1 // ch) * ch)
        c0, c1 = kx0 // cw * cw, min(wk, -(-kx1 // cw) * cw)
        lead = (slice(None),) * (arr.ndim - 2)
        block = _foreground(np.asarray(arr[lead + (slice(r0, r1), slice(c0, c1))]),
                            arr.ndim, int(arr.shape[0]))
        for py0 in range(r0, r1, ch):
            for px0 in range(c0, c1, cw):
                out[(k, py0 // ch, px0 // cw)] = (np.ascontiguousarray(
                    block[py0 - r0: py0 - r0 + ch, px0 - c0: px0 - c0 + cw]), py0, px0)
    return out


def _put(key: _Key, chunk: np.ndarray, y0: int, x0: int) -> None:
    global _cache_bytes
    with _lock:
        old = _cache.pop(key, None)
        if old is not None:
            _cache_bytes -= old[0].nbytes
        _cache[key] = (chunk, y0, x0)
        _cache_bytes += chunk.nbytes
        while _cache_bytes > CACHE_BYTES and len(_cache) > 1:
            _, (gone, _, _) = _cache.popitem(last=False)
            _cache_bytes -= gone.nbytes


def _get(key: _Key) -> tuple[np.ndarray, int, int] | None:
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def forget_box(path: str, box: tuple[int, int, int, int]) -> int:
    """Drop the cached chunks of store ``path``, on every level, that overlap ``box``
    (level-0 px ``y0, x0, y1, x1``: a block just written); returns how many went."""
    global _cache_bytes
    y0, x0, y1, x1 = (int(v) for v in box)
    path = str(path)
    with _lock:
        gone = []
        for key, (chunk, cy0, cx0) in _cache.items():
            if key[0] != path:
                continue
            f = 2 ** key[1]
            ky0, kx0, ky1, kx1 = y0 // f, x0 // f, -(-y1 // f), -(-x1 // f)
            h, w = chunk.shape
            if cy0 < ky1 and ky0 < cy0 + h and cx0 < kx1 and kx0 < cx0 + w:
                gone.append(key)
        for key in gone:
            _cache_bytes -= _cache.pop(key)[0].nbytes
    return len(gone)


def forget_store(path: str) -> None:
    """Drop every cached chunk of store ``path`` (its layers are gone, or it was rewritten)."""
    global _cache_bytes
    with _lock:
        for key in [k for k in _cache if k[0] == str(path)]:
            _cache_bytes -= _cache.pop(key)[0].nbytes


def _foreground(raw: np.ndarray, ndim: int, classes: int) -> np.ndarray:
    """Stored probabilities (uint8 = round(255 p), or float) -> float32 foreground."""
    prob = raw.astype(np.float32)
    if raw.dtype == np.uint8:
        prob *= 1.0 / 255.0
    if ndim == 3:
        prob = prob[1] if classes == 2 else 1.0 - prob[0]
    return prob


class StoreLevel:
    """One pyramid level of a prediction store, read on demand (a napari layer's data).

    An array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``): napari reads only the
    part of the level it shows, so a store still being written (its levels filled block by
    block by the writer) shows what has landed, and the GUI thread never touches more than
    the visible pixels. Reads the foreground probability as float32, or, with ``threshold``,
    the thresholded labels (uint8). A store not created yet reads as zeros.
    """

    ndim = 2

    def __init__(self, path: str, level: int, shape: tuple[int, int],
                 threshold: float | None = None) -> None:
        self.path = str(path)
        self.level = int(level)
        self.shape = (int(shape[0]), int(shape[1]))
        self.threshold = threshold
        self.dtype = np.dtype(np.float32 if threshold is None else np.uint8)
        self._arr: Any = None

    @property
    def size(self) -> int:
        """Number of pixels (numpy's ``size``)."""
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def at_threshold(self, threshold: float) -> StoreLevel:
        """The same level read as labels (foreground >= ``threshold``), same chunk cache."""
        return StoreLevel(self.path, self.level, self.shape, float(threshold))

    def _array(self) -> Any:
        if self._arr is None:
            import zarr

            try:
                self._arr = zarr.open_array(f"{self.path}/{self.level}", mode="r")
            except Exception:  # not created yet (or gone): nothing to show
                return None
        return self._arr

    def _read(self, arr: Any, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        lead = (slice(None),) * (arr.ndim - 2)
        raw = np.asarray(arr[lead + (slice(y0, y1), slice(x0, x1))])
        return _foreground(raw, arr.ndim, int(arr.shape[0]))

    def _box(self, arr: Any, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Foreground over a box, from cached chunks; the missing ones in one zarr read."""
        ch, cw = (int(c) for c in arr.chunks[-2:])
        rows = range(y0 // ch, -(-y1 // ch))
        cols = range(x0 // cw, -(-x1 // cw))
        found: dict[tuple[int, int], tuple[np.ndarray, int, int]] = {}
        missing = []
        with _lock:
            landed = _landed.get(self.path)
            landed = set(landed) if landed is not None else None
        for cy in rows:
            for cx in cols:
                hit = _get((self.path, self.level, cy, cx))
                if hit is not None:
                    found[(cy, cx)] = hit
                elif landed is None or (self.level, cy, cx) in landed:
                    missing.append((cy, cx))  # else: streamed, nothing landed: zeros
        if missing:
            my0, my1 = min(m[0] for m in missing) * ch, (max(m[0] for m in missing) + 1) * ch
            mx0, mx1 = min(m[1] for m in missing) * cw, (max(m[1] for m in missing) + 1) * cw
            my1, mx1 = min(my1, self.shape[0]), min(mx1, self.shape[1])
            block = self._read(arr, my0, mx0, my1, mx1)
            for cy, cx in missing:
                py0, px0 = cy * ch, cx * cw
                chunk = np.ascontiguousarray(
                    block[py0 - my0: py0 - my0 + ch, px0 - mx0: px0 - mx0 + cw])
                _put((self.path, self.level, cy, cx), chunk, py0, px0)
                found[(cy, cx)] = (chunk, py0, px0)
        out = np.zeros((y1 - y0, x1 - x0), np.float32)
        for chunk, py0, px0 in found.values():
            h, w = chunk.shape
            a0, a1 = max(y0, py0), min(y1, py0 + h)
            b0, b1 = max(x0, px0), min(x1, px0 + w)
            if a1 > a0 and b1 > b0:
                out[a0 - y0: a1 - y0, b0 - x0: b1 - x0] = chunk[a0 - py0: a1 - py0,
                                                                b0 - px0: b1 - px0]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        zeros = np.broadcast_to(np.zeros((), self.dtype), self.shape)[key]
        arr = self._array()
        if arr is None or zeros.size == 0:
            return np.zeros(zeros.shape, self.dtype)
        plain = (len(key) == 2 and all(isinstance(k, slice) and k.step in (None, 1)
                                       for k in key))
        if plain:
            (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key, self.shape,
                                                                     strict=True))
            prob = self._box(arr, y0, x0, y1, x1)
        else:  # integer or strided indexing: straight from zarr (napari does not do this)
            lead = (slice(None),) * (arr.ndim - 2)
            prob = _foreground(np.asarray(arr[lead + key]), arr.ndim, int(arr.shape[0]))
        if self.threshold is None:
            return prob
        return (prob >= self.threshold).astype(np.uint8)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


def store_levels(path: str, shape: tuple[int, int],
                 threshold: float | None = None) -> list[StoreLevel]:
    """Every level of the prediction store at ``path`` whose level 0 is ``shape`` (output
    px), as :class:`StoreLevel` s: the same levels the writer creates up front."""
    from napari_histo.io.ome_zarr import pyramid_depth
    from napari_histo.io.ome_zarr._pyramid import level_shapes

    shape2 = (int(shape[0]), int(shape[1]))
    shapes = level_shapes(shape2, pyramid_depth(shape2))
    return [StoreLevel(path, k, s, threshold) for k, s in enumerate(shapes)]
