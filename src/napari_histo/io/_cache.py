"""Decoded-tile cache and the shared decode thread pool of the slide readers.

A small LRU (bounded in bytes) keeps recently decoded tiles so that napari panning and
overlapping region reads do not decode the same JPEG tile twice. The thread pool decodes the
tiles of a large region read in parallel (imagecodecs releases the GIL while decoding).

The cache also remembers which segments could not be decoded (:meth:`TileCache.record_failure`,
called by the readers when they substitute a fill tile): a failed tile served later from the
cache, or decoded again after eviction, still counts as a failure for whoever tracks failures
(:meth:`TileCache.track_failures`: tissue detection, a prediction run).

Knobs (environment, read through :mod:`napari_histo.core.settings`):
``NAPARI_HISTO_TILE_CACHE_MB`` (default 64, 0 disables the cache) and
``NAPARI_HISTO_DECODE_THREADS`` (default: number of CPUs).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from napari_histo.core import settings

__all__ = ["FailureTracker", "TileCache", "decode_pool", "default_cache_bytes", "in_decode_pool",
           "locate_failures"]


def default_cache_bytes() -> int:
    """Cache size in bytes from ``NAPARI_HISTO_TILE_CACHE_MB`` (default 64 MB)."""
    return max(0, int(settings.tile_cache_mb() * 1024 * 1024))


class TileCache:
    """Thread-safe LRU of decoded tiles, bounded by their total size in bytes.

    Parameters
    ----------
    max_bytes
        Capacity; tiles larger than a quarter of it are never cached (a huge strip would
        evict everything else).
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        #: segments that could not be decoded (key -> reason), never evicted
        self._failed: dict[Hashable, str] = {}
        self._trackers: list[FailureTracker] = []

    def get(self, key: Hashable) -> np.ndarray | None:
        """Return the cached tile or None (and count the hit or miss)."""
        with self._lock:
            tile = self._data.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            if self._trackers and key in self._failed:  # a cached failure is still a failure
                for t in self._trackers:
                    t.keys.setdefault(key, self._failed[key])
            return tile

    def record_failure(self, key: Hashable, reason: str = "") -> None:
        """Remember that segment ``key`` could not be decoded (its tile is a fill value).

        Called by the readers for every failed decode; active trackers see it at once, and
        later cache hits of the same key report it again to new trackers.
        """
        with self._lock:
            self._failed[key] = reason
            for t in self._trackers:
                t.keys.setdefault(key, reason)

    @property
    def failures(self) -> dict[Hashable, str]:
        """Every segment that failed to decode so far (key -> reason)."""
        with self._lock:
            return dict(self._failed)

    def track_failures(self) -> FailureTracker:
        """Context manager collecting the failed segments read (decoded or cached) inside it."""
        return FailureTracker(self)

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        """Store a tile (made read-only so a caller cannot corrupt the cache)."""
        size = tile.nbytes
        if self.max_bytes <= 0 or size > self.max_bytes // 4:
            return
        tile.flags.writeable = False
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            self._data[key] = tile
            self._nbytes += size
            while self._nbytes > self.max_bytes and self._data:
                _, evicted = self._data.popitem(last=False)
                self._nbytes -= evicted.nbytes

    def clear(self) -> None:
        """Drop every tile (failures stay recorded: the file did not get better)."""
        with self._lock:
            self._data.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._data)


class FailureTracker:
    """Failed segments touched while active: ``with cache.track_failures() as t: ...``.

    ``keys`` maps each failed segment key to the reader's reason. Thread-safe: the cache
    fills it under its lock, from any reader thread.
    """

    def __init__(self, cache: TileCache | None) -> None:
        self.cache = cache
        self.keys: dict[Hashable, str] = {}

    def __enter__(self) -> FailureTracker:
        if self.cache is not None:
            with self.cache._lock:
                self.cache._trackers.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cache is not None:
            with self.cache._lock:
                if self in self.cache._trackers:
                    self.cache._trackers.remove(self)

    def __len__(self) -> int:
        return len(self.keys)


def locate_failures(slide: Any, keys: Any) -> dict[tuple[int, int, int], tuple[float, ...] | None]:
    """Failed segment keys -> ``(level, row, column)`` and their level-0 box (y0, x0, y1, x1).

    Keys are ``(level key, sy, sx)`` as the readers record them; a key whose level is not one
    of ``slide.level_arrays`` maps to ``(-1, sy, sx)`` (or ``(-1, -1, n)``) with no box.
    """
    arrays = list(getattr(slide, "level_arrays", None) or [])
    index = {}
    for i, a in enumerate(arrays):
        try:
            index[a.key] = i
        except TypeError:  # unhashable level key: cannot be matched
            continue
    out: dict[tuple[int, int, int], tuple[float, ...] | None] = {}
    for n, key in enumerate(keys):
        try:
            lkey, sy, sx = key
            i = index.get(lkey, -1)
        except (TypeError, ValueError):
            out[(-1, -1, n)] = None
            continue
        if i < 0:
            out[(-1, int(sy), int(sx))] = None
            continue
        a = arrays[i]
        sh, sw = a.seg_shape
        h, w = a.shape[0], a.shape[1]
        dy, dx = slide.level_downsample_yx(i)
        box = (sy * sh * dy, sx * sw * dx, min(h, (sy + 1) * sh) * dy, min(w, (sx + 1) * sw) * dx)
        out[(i, int(sy), int(sx))] = tuple(float(v) for v in box)
    return out


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def _mark_worker() -> None:
    # Lets a worker see that it runs inside the pool: nested reads decode inline instead of
    # submitting to the pool and waiting on it (which could deadlock a saturated pool).
    _LOCAL.in_pool = True


def in_decode_pool() -> bool:
    """True when called from one of the decode pool's threads."""
    return bool(getattr(_LOCAL, "in_pool", False))


def decode_threads() -> int:
    """Number of decode threads from ``NAPARI_HISTO_DECODE_THREADS`` (default: CPU count)."""
    return settings.decode_threads()


def decode_pool() -> ThreadPoolExecutor:
    """The process-wide decode pool, created on first use."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(
                    max_workers=decode_threads(),
                    thread_name_prefix="napari-histo-decode",
                    initializer=_mark_worker,
                )
    return _POOL


_ACTIVE = 0
_ACTIVE_LOCK = threading.Lock()


def parallel_map(func: Callable[[Any], Any], items: list[Any], *, min_items: int = 3) -> list[Any]:
    """``[func(i) for i in items]``, on the decode pool when that can help.

    Runs inline for few items (submitting costs more than it saves), inside pool threads, and
    when another thread is already fanning out a read: then the callers themselves keep the
    cores busy and nesting both would only add context switches (measured: 0.77x the raw
    decode limit with 2 reader threads before this rule). The calling thread decodes the
    first item itself rather than idle while the pool works.
    """
    global _ACTIVE
    if len(items) < min_items or in_decode_pool() or decode_threads() < 2:
        return [func(i) for i in items]
    with _ACTIVE_LOCK:
        _ACTIVE += 1
        busy = _ACTIVE > 1
    try:
        if busy:
            return [func(i) for i in items]
        pool = decode_pool()
        futures = [pool.submit(func, i) for i in items[1:]]
        first = func(items[0])
        return [first] + [f.result() for f in futures]
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE -= 1
