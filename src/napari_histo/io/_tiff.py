"""TIFF-family source (SVS, NDPI, generic/CAMELYON pyramids, SubIFD pyramids, OME-TIFF).

tifffile parses the structure (IFDs, series, pyramid levels, vendor metadata) and provides the
codecs (``TiffPage.decode`` -> imagecodecs). Tile bytes are read here with ``os.pread`` on our
own file descriptor from ``page.dataoffsets/databytecounts``: it needs no lock, so several
threads decode tiles truly in parallel, and it skips zarr's per-chunk overhead.

Layouts the direct path does not cover (multi-page channel stacks, volumes) go through
tifffile's zarr store instead (:class:`napari_histo.io._zarr_source.ArrayLevel`).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import SlideOpenError
from napari_histo.core.limits import check_image_size
from napari_histo.io._cache import TileCache
from napari_histo.io._image import to_rgb8
from napari_histo.io._pyramid import LevelArray, filler

__all__ = ["TiffLevel", "open_tiff", "pread_fn"]

_JPEG = {6, 7, 34892, 33007}

#: corrupt tiles named per level before the reader stops reporting them
MAX_REPORTS = 20


class PRead:
    """Positional reads of one file without a shared seek (``os.pread`` needs no lock).

    The descriptor closes on :meth:`close` or when the last level using it is garbage
    collected, so dask arrays may outlive the Slide object that created them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.closed = False
        self._lock = None if hasattr(os, "pread") else threading.Lock()

    def __call__(self, offset: int, n: int) -> bytes:
        if self.closed:
            raise SlideOpenError(f"{self.path.name}: slide is closed")
        if self._lock is None:
            return os.pread(self.fd, n, offset)
        with self._lock:  # pragma: no cover - Windows
            os.lseek(self.fd, offset, os.SEEK_SET)
            return os.read(self.fd, n)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self.fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.close()


def pread_fn(path: Path) -> tuple[PRead, Any]:
    """Return ``(read(offset, n) -> bytes, close())`` for ``path``."""
    reader = PRead(path)
    return reader, reader.close


class TiffLevel(LevelArray):
    """One pyramid level stored in a single TIFF page (tiled or stripped), read directly.

    Parameters
    ----------
    page
        The level's page (keyframe) from tifffile.
    read
        ``read(offset, nbytes) -> bytes`` on the file.
    file_size
        File size in bytes, to report segments past the end of a truncated file.
    name
        Human-readable level name for warnings (``"level 0"``).
    """

    def __init__(
        self,
        page: Any,
        read: Any,
        *,
        file_size: int,
        cache: TileCache | None,
        key: Any,
        name: str,
        labels: bool = False,
    ) -> None:
        h, w = check_image_size(page.imagelength, page.imagewidth, name, error=SlideOpenError)
        self.tiled = bool(page.is_tiled)
        self.unit = "tile" if self.tiled else "strip"
        # Uncompressed contiguous images (tifffile and many tools write them as ONE strip)
        # are read in virtual strips of ~1 MB: any row range is a single pread.
        self.contiguous = (
            not self.tiled
            and page.compression == 1
            and page.is_contiguous
            and page.predictor == 1
            and page.fillorder == 1
            and not (page.planarconfig == 2 and page.samplesperpixel > 1)
            and page.dtype is not None
        )
        if self.tiled:
            seg = (int(page.tilelength), int(page.tilewidth))
        elif self.contiguous:
            spp = page.samplesperpixel if page.planarconfig == 1 else 1
            self._rowbytes = w * spp * np.dtype(page.dtype).itemsize
            self._rowdtype = np.dtype(page.dtype).newbyteorder(page.parent.byteorder)
            self._spp = spp
            if w <= 4096:  # full-width virtual strips of ~1 MB: one pread each
                seg = (max(1, min(h, (1 << 20) // max(1, self._rowbytes))), w)
            else:  # very wide rows: 256 x 1024 blocks, one pread per row
                seg = (min(h, 256), 1024)
        else:
            seg = (min(int(page.rowsperstrip or h), h), w)
        chunk = seg
        if not self.tiled:
            # strips are wide and short: give dask/napari blocks of ~1024 rows x 1024 cols
            rows = seg[0] * max(1, 1024 // seg[0])
            chunk = (min(rows, h), min(w, 1024) if w > 2048 else w)
        self.labels = labels
        if labels:
            dt = np.dtype(page.dtype) if page.dtype is not None else np.dtype(np.uint8)
            if dt.kind not in "ub":
                raise SlideOpenError(
                    f"{name}: a label mask must hold unsigned integers, not {dt} values"
                )
            dt = np.dtype(np.uint8) if dt.kind == "b" else dt
            super().__init__(h, w, seg, cache=cache, key=key, chunk_shape=chunk,
                             channels=None, dtype=dt, fill=0, name=name)
        else:
            super().__init__(h, w, seg, cache=cache, key=key, chunk_shape=chunk, name=name)
        self.name = name
        self._read = read
        self.file_size = file_size
        self.page = page
        self.planar_separate = page.planarconfig == 2 and page.samplesperpixel > 1
        self.offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self.counts = np.asarray(page.databytecounts, dtype=np.int64)
        nseg = self.grid[0] * self.grid[1]
        need = nseg * (page.samplesperpixel if self.planar_separate else 1)
        if self.contiguous:
            need = 1
            self._base = int(self.offsets[0]) if len(self.offsets) else 0
        if len(self.offsets) < need or len(self.counts) < need:
            raise SlideOpenError(
                f"{name}: the header claims {w} x {h} px ({need} tiles) but only "
                f"{len(self.offsets)} tile offset(s) are stored; the file is corrupt or truncated"
            )
        self._nseg = nseg
        self.bad_segments = 0
        self._bad_lock = threading.Lock()
        page.init_decode()  # tifffile's decoder closure is not thread-safe on first access
        self._decode = page.decode
        self._kwargs: dict[str, Any] = {}
        if page.compression in _JPEG:
            self._kwargs = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}
        if self.tiled:
            self._kwargs["_fullsize"] = True
        bits = page.bitspersample
        self._maxvalue = None
        if page.dtype is not None and np.dtype(page.dtype).kind in "ui":
            if bits and bits < np.dtype(page.dtype).itemsize * 8:
                self._maxvalue = float(2**bits - 1)
        self._miniswhite = page.photometric == 0
        self._colormap = page.colormap if page.photometric == 3 else None

    def past_eof(self) -> int:
        """Number of segments whose bytes lie (partly) beyond the end of the file."""
        return int(np.count_nonzero(self.offsets + self.counts > self.file_size))

    def _fetch(self, index: int, sy: int, sx: int) -> np.ndarray | None:
        off, n = int(self.offsets[index]), int(self.counts[index])
        if n == 0 or off == 0:
            return None  # sparse/empty tile: background
        data = self._read(off, n)  # raises SlideOpenError once the slide is closed
        if len(data) < n:
            raise OSError(f"only {len(data)} of {n} bytes present (file truncated)")
        seg, _, _ = self._decode(data, index, **self._kwargs)
        return seg

    def _read_rows(self, y0: int, h: int, x0: int, w: int) -> np.ndarray:
        """Rows ``y0:y0+h``, columns ``x0:x0+w`` of an uncompressed contiguous image."""
        px = self._rowbytes // self.shape[1]
        start = self._base + y0 * self._rowbytes + x0 * px
        if w == self.shape[1]:
            n = h * self._rowbytes
            data: bytes | bytearray = self._read(start, n)
            if len(data) < n:
                raise OSError(f"only {len(data)} of {n} bytes present (file truncated)")
        else:
            n = w * px
            data = bytearray(h * n)
            for i in range(h):
                row = self._read(start + i * self._rowbytes, n)
                if len(row) < n:
                    raise OSError(f"row {y0 + i}: only {len(row)} of {n} bytes present (file truncated)")
                data[i * n : (i + 1) * n] = row
        return np.frombuffer(data, dtype=self._rowdtype).reshape(h, w, self._spp)

    def _decode_segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        sh, sw = self.seg_shape
        h = min(sh, self.shape[0] - sy * sh)
        w = min(sw, self.shape[1] - sx * sw)
        index = 0 if self.contiguous else sy * self.grid[1] + sx
        try:
            if self.contiguous:
                raw = self._read_rows(sy * sh, h, sx * sw, w)
                if not raw.dtype.isnative:
                    raw = raw.astype(raw.dtype.newbyteorder("="))
                if self.labels:
                    return np.ascontiguousarray(raw[..., 0], dtype=self.dtype)
                return to_rgb8(raw, maxvalue=self._maxvalue, miniswhite=self._miniswhite,
                               colormap=self._colormap)
            if self.planar_separate:
                planes = []
                for s in range(self.page.samplesperpixel):
                    p = self._fetch(index + s * self._nseg, sy, sx)
                    if p is None:
                        return filler(self, h, w)
                    planes.append(p[0, :h, :w, 0])
                raw = np.stack(planes, axis=-1)
            else:
                seg = self._fetch(index, sy, sx)
                if seg is None:
                    return filler(self, h, w)
                raw = seg[0, :h, :w]
            if self.labels:
                lab = raw[..., 0] if raw.ndim == 3 else raw
                return np.ascontiguousarray(lab, dtype=self.dtype)
            rgb = to_rgb8(raw, maxvalue=self._maxvalue, miniswhite=self._miniswhite,
                          colormap=self._colormap)
            if rgb.shape[0] != h or rgb.shape[1] != w:
                raise ValueError(f"decoded tile has shape {rgb.shape[:2]}, expected {(h, w)}")
            return rgb
        except SlideOpenError:
            raise
        except Exception as err:  # a corrupt tile must not take the slide down
            self._report(sy, sx, index, err)
            return filler(self, h, w)

    def _report(self, sy: int, sx: int, index: int, err: Exception) -> None:
        # Name each bad tile, but only the first MAX_REPORTS per level: a truncated gigapixel
        # file would otherwise flood napari with one notification per tile.
        with self._bad_lock:
            self.bad_segments += 1
            n = self.bad_segments
        if self.cache is not None:  # counted even once cached or no longer reported
            self.cache.record_failure((self.key, sy, sx), str(err))
        if n > MAX_REPORTS:
            return
        kind = "tile" if self.tiled else "strip"
        more = (f"; further bad {kind}s of this level are not reported"
                if n == MAX_REPORTS else "")
        warnings.warn(
            f"{self.name}: {kind} (row {sy}, column {sx}) at byte "
            f"{int(self.offsets[index]) if len(self.offsets) > index else '?'} could not be "
            f"decoded ({err}); shown as {'0' if self.labels else 'white'}{more}",
            stacklevel=4,
        )


def grid_of(page: Any) -> tuple[int, int]:
    """(rows, columns) of segments of a page."""
    h, w = int(page.imagelength), int(page.imagewidth)
    if page.is_tiled:
        return math.ceil(h / page.tilelength), math.ceil(w / page.tilewidth)
    return math.ceil(h / max(1, page.rowsperstrip or h)), 1


def open_tiff(path: Path) -> Any:
    """Open a TIFF with tifffile, turning its errors into SlideOpenError."""
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError,
            struct_error(), MemoryError) as err:
        raise SlideOpenError(
            f"{path.name}: TIFF structure is unreadable, the file is probably truncated or "
            f"corrupt ({type(err).__name__}: {err})"
        ) from err


def struct_error() -> type[Exception]:
    import struct

    return struct.error
