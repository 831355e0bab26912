"""Decoded-tile cache and the shared decode thread pool of the slide readers.

A small LRU (bounded in bytes) keeps recently decoded tiles so that napari panning and
overlapping region reads do not decode the same JPEG tile twice. The thread pool decodes the
tiles of a large region read in parallel (imagecodecs releases the GIL while decoding).

Knobs (environment, read only here): ``NAPARI_HISTO_TILE_CACHE_MB`` (default 64, 0 disables
the cache) and ``NAPARI_HISTO_DECODE_THREADS`` (default: number of CPUs).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["TileCache", "decode_pool", "in_decode_pool", "default_cache_bytes"]


def default_cache_bytes() -> int:
    """Cache size in bytes from ``NAPARI_HISTO_TILE_CACHE_MB`` (default 64 MB)."""
    try:
        mb = float(os.environ.get("NAPARI_HISTO_TILE_CACHE_MB", "64"))
    except ValueError:
        mb = 64.0
    return max(0, int(mb * 1024 * 1024))


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

    def get(self, key: Hashable) -> np.ndarray | None:
        """Return the cached tile or None (and count the hit or miss)."""
        with self._lock:
            tile = self._data.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return tile

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
        """Drop every tile."""
        with self._lock:
            self._data.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._data)


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
    try:
        n = int(os.environ.get("NAPARI_HISTO_DECODE_THREADS", "0"))
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 2)


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
