"""Slide: one lazily read image pyramid with normalised metadata.

Entry point: :func:`open_slide`. It sniffs the content (not the suffix) and opens it with
the opener the format registry (:mod:`napari_histo.io.formats`) names: Aperio SVS
(JPEG / JPEG 2000), Hamamatsu NDPI, generic pyramidal TIFF (CAMELYON16 ``.tif``, SubIFD
pyramids), OME-TIFF, OME-Zarr (NGFF 0.4 and 0.5 directories) and plain PNG/JPEG/BMP/TIFF;
with the optional ``openslide`` extra also MIRAX, Hamamatsu VMS, Sakura and Zeiss slides
(and vendor TIFFs tifffile cannot parse), through OpenSlide.

- ``Slide.levels``: dask arrays (Y, X, 3) uint8, largest first, chunks aligned to the file's
  tiles; nothing is decoded until a region is computed. ``Slide.level_arrays`` are the same
  levels as plain numpy-sliceable objects (faster than dask for one-off slices).
- Pixels of any type become RGB uint8 by a fixed, lazy policy (see
  :mod:`napari_histo.io._image`): 16-bit scaled by its bit depth, gray replicated, alpha
  composited over white.
- A file without a pyramid (or whose pyramid stops above 1024 px) gets computed levels: 2x2
  block means of the level above, on access (``metadata.level_native`` tells which).
- ``read_region`` decodes only the tiles it needs, in parallel, through a small LRU of decoded
  tiles; a corrupt tile is reported with ``warnings.warn`` (the first 20 per level, named by
  row/column/byte offset) and shown white (0 in masks).
- Bad input raises one clear error: ``SlideOpenError`` (missing, empty, truncated header,
  header claiming more tiles than stored), ``UnsupportedSlideError`` (unknown content). A
  file whose data is cut short opens with a warning; missing tiles show white.
- Uncompressed strip images are read in virtual strips/blocks (one ``pread`` per row range),
  so a huge single-strip TIFF opens and pans without loading it. Note that the coarsest
  *computed* level of a huge image without a pyramid still costs one pass over level 0 the
  first time it is shown.
"""

from __future__ import annotations

import hashlib
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import SlideOpenError, UnsupportedSlideError
from napari_histo.core.limits import check_regular_file
from napari_histo.io._cache import FailureTracker, TileCache
from napari_histo.io._pyramid import MIN_SIDE, LevelArray, add_computed_levels, to_dask
from napari_histo.io.formats import (
    OPENERS,
    describe_formats,
    format_for_path,
    formats_for_container,
    missing_extra_message,
    openslide_available,
    strip_suffix,
)
from napari_histo.io.slide_parts import SlideParts
from napari_histo.io.sniff import sniff_format

__all__ = ["Slide", "SlideMetadata", "open_slide", "ASSOCIATED_NAMES"]

#: names accepted by :meth:`Slide.associated_image`
ASSOCIATED_NAMES = ("thumbnail", "label", "macro", "map")


@dataclass(frozen=True)
class SlideMetadata:
    """Normalised metadata; ``mpp`` is level-0 microns per pixel (y, x), or None when unknown.

    ``level_shapes`` are (height, width); ``level_downsamples`` one factor per level (the mean
    of y and x), ``level_downsamples_yx`` both; ``level_native`` is False for levels computed
    by napari-histo (not stored in the file); ``tile_shapes`` are the dask chunk (h, w) of
    each level.
    """

    format: str
    vendor: str | None
    mpp: tuple[float, float] | None
    objective_power: float | None
    level_shapes: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    associated: tuple[str, ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)
    level_downsamples_yx: tuple[tuple[float, float], ...] = ()
    level_native: tuple[bool, ...] = ()
    tile_shapes: tuple[tuple[int, int], ...] = ()
    source_dtype: str | None = None
    source_samples: int | None = None
    compression: str | None = None

    @property
    def level_mpps(self) -> tuple[tuple[float, float], ...] | None:
        """Microns per pixel (y, x) of every level, or None when the slide has no mpp."""
        if self.mpp is None:
            return None
        if self.level_downsamples_yx:
            return tuple((self.mpp[0] * dy, self.mpp[1] * dx) for dy, dx in self.level_downsamples_yx)
        return tuple((self.mpp[0] * d, self.mpp[1] * d) for d in self.level_downsamples)

    @property
    def native_level_count(self) -> int:
        """Number of levels stored in the file."""
        return sum(self.level_native) if self.level_native else len(self.level_shapes)


class Slide:
    """An opened slide: ``levels`` (dask pyramid), ``metadata`` and region reads.

    Thread-safe for reads. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        levels: list[da.Array],
        metadata: SlideMetadata,
        *,
        level_arrays: list[LevelArray] | None = None,
        associated_reader: Callable[[str], npt.NDArray[np.uint8]] | None = None,
        closer: Callable[[], None] | None = None,
        cache: TileCache | None = None,
    ) -> None:
        self.path = path
        self.levels = levels
        self.metadata = metadata
        self.level_arrays = level_arrays
        self.cache = cache
        self._associated_reader = associated_reader
        self._closer = closer
        self._closed = False

    @property
    def name(self) -> str:
        """File name without its (possibly double) suffix, e.g. ``tumor_064``."""
        return strip_suffix(self.path.name)

    @property
    def level_count(self) -> int:
        """Number of pyramid levels (native and computed)."""
        return len(self.levels)

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 size (height, width) in pixels."""
        return self.metadata.level_shapes[0]

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Level-0 microns per pixel (y, x), or None."""
        return self.metadata.mpp

    @property
    def level_mpps(self) -> tuple[tuple[float, float], ...] | None:
        """Microns per pixel (y, x) of every level, or None."""
        return self.metadata.level_mpps

    def level_downsample_yx(self, level: int) -> tuple[float, float]:
        """Downsample (y, x) of ``level`` relative to level 0."""
        if self.metadata.level_downsamples_yx:
            return self.metadata.level_downsamples_yx[level]
        d = self.metadata.level_downsamples[level]
        return (d, d)

    def level_for_mpp(self, mpp: float) -> int:
        """Index of the coarsest level whose resolution is not coarser than ``mpp`` (1% slack)."""
        if self.metadata.mpp is None:
            raise SlideOpenError(f"{self.path.name} has no microns-per-pixel; pass --mpp or a level")
        best = 0
        for i, d in enumerate(self.metadata.level_downsamples):
            if self.metadata.mpp[1] * d <= mpp * 1.01:
                best = i
        return best

    def level_for_downsample(self, downsample: float) -> int:
        """Index of the coarsest level whose downsample is <= ``downsample`` (1% slack)."""
        best = 0
        for i, d in enumerate(self.metadata.level_downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> npt.NDArray[np.uint8]:
        """Read ``size`` (h, w) pixels of ``level`` whose top-left is ``location`` (y, x) in
        level-0 pixels; parts outside the slide are filled with white (255).

        Only the tiles the region touches are decoded (in parallel when there are several);
        recently decoded tiles come from the slide's LRU cache.
        """
        if self._closed:
            raise SlideOpenError(f"{self.path.name}: slide is closed")
        if not 0 <= level < len(self.levels):
            raise IndexError(f"level {level} out of range (slide has {len(self.levels)})")
        dy, dx = self.level_downsample_yx(level)
        y0, x0 = int(round(location[0] / dy)), int(round(location[1] / dx))
        h, w = int(size[0]), int(size[1])
        if h < 0 or w < 0:
            raise ValueError(f"negative region size {size}")
        lvl = self.levels[level]
        lh, lw = lvl.shape[:2]
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, lh), min(x0 + w, lw)
        inside = ye > ys and xe > xs
        if inside and ys == y0 and xs == x0 and ye == y0 + h and xe == x0 + w:
            return self._read(level, ys, ye, xs, xe)
        fill = self.level_arrays[level].fill if self.level_arrays is not None else 255
        out = np.full((h, w) + tuple(lvl.shape[2:]), fill, dtype=lvl.dtype)
        if inside:
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = self._read(level, ys, ye, xs, xe)
        return out

    def _read(self, level: int, y0: int, y1: int, x0: int, x1: int) -> npt.NDArray[np.uint8]:
        if self.level_arrays is not None:
            return self.level_arrays[level].read(y0, y1, x0, x1)
        return np.asarray(self.levels[level][y0:y1, x0:x1])

    def track_failures(self) -> FailureTracker:
        """Context manager collecting the tiles of this slide that fail to decode inside it
        (an empty tracker when the slide has no tile cache)."""
        return FailureTracker(self.cache)

    def associated_image(self, name: str) -> npt.NDArray[np.uint8]:
        """Associated image ``name`` (thumbnail, label, macro) as (H, W, 3) uint8.

        Raises
        ------
        KeyError
            When the slide has no such image (see ``metadata.associated``).
        """
        key = name.lower()
        if key not in self.metadata.associated or self._associated_reader is None:
            raise KeyError(
                f"{self.path.name} has no associated image {name!r}; "
                f"available: {', '.join(self.metadata.associated) or 'none'}"
            )
        return self._associated_reader(key)

    def thumbnail(self, max_side: int = 1024) -> npt.NDArray[np.uint8]:
        """The whole slide at the first level whose longer side is <= ``max_side`` (or the smallest)."""
        for i, (h, w) in enumerate(self.metadata.level_shapes):
            if max(h, w) <= max_side:
                return self.read_region((0, 0), i, (h, w))
        h, w = self.metadata.level_shapes[-1]
        return self.read_region((0, 0), len(self.levels) - 1, (h, w))

    def close(self) -> None:
        """Release file handles (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.cache is not None:
            self.cache.clear()
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"<Slide {self.path.name!r} {self.metadata.format} {w}x{h} px, "
                f"{self.level_count} levels, mpp={self.mpp}>")


# --------------------------------------------------------------------------- opening


def open_slide(path: str | Path, *, cache_bytes: int | None = None) -> Slide:
    """Open a slide or image lazily (no level-0 pixel is decoded).

    Parameters
    ----------
    path
        File (or OME-Zarr directory). The format is sniffed from the content, so a PNG
        named ``.svs`` still opens as a PNG.
    cache_bytes
        Size of the decoded-tile LRU (default ``NAPARI_HISTO_TILE_CACHE_MB``, 64 MB).

    Raises
    ------
    SlideOpenError
        Missing, empty, truncated or corrupt file.
    UnsupportedSlideError
        The content is not a format napari-histo reads.
    """
    path = Path(path)
    cache = TileCache(cache_bytes)
    token = slide_token(path)
    parts = open_parts(path, cache=cache, key=token, labels=False)
    return assemble(path, parts, cache=cache, token=token, cls=Slide, reopen=open_slide)


def open_parts(path: Path, *, cache: TileCache, key: str, labels: bool) -> SlideParts:
    """Sniff ``path`` and open it with the matching source (shared by slides and masks).

    Named pipes, sockets and devices are refused before anything opens them (a read from a
    FIFO blocks until a writer appears).
    """
    st = check_regular_file(path, what=path.name or str(path), error=SlideOpenError,
                            allow_dir=True)
    kind = sniff_format(path)
    if stat.S_ISDIR(st.st_mode):
        if kind != "zarr":
            raise UnsupportedSlideError(
                f"{path.name}: is a directory but not an OME-Zarr image (no zarr.json/.zattrs)"
            )
    elif st.st_size == 0:
        raise SlideOpenError(f"{path.name}: file is empty (0 bytes)")
    by_name = format_for_path(path)
    if by_name is not None and by_name.opener == "openslide":
        # an OpenSlide vendor suffix wins over the content (a MIRAX index may start like
        # a JPEG): OpenSlide reads it, or the message names the extra to install
        opener = OPENERS[by_name.opener]
    elif kind is not None:
        opener = OPENERS[formats_for_container(kind)[0].opener]
    else:
        raise UnsupportedSlideError(
            missing_extra_message(path)
            or f"{path.name}: not a recognised slide or image (content sniffed, suffix "
               f"ignored); supported: {describe_formats()}"
        )
    if not opener.available():
        raise UnsupportedSlideError(
            missing_extra_message(path)
            or f"{path.name}: this format is read through an optional extra: "
               f"pip install 'napari-histo[{opener.extra}]'"
        )
    try:
        return opener.load()(path, cache=cache, key=key, labels=labels)
    except SlideOpenError:
        # a vendor TIFF tifffile cannot parse: OpenSlide, when installed, may still read it
        if (opener.name != "tiff" or labels or by_name is None or by_name.vendor is None
                or not openslide_available()):
            raise
        fallback = OPENERS["openslide"].load()
        try:
            return fallback(path, cache=cache, key=key, labels=labels)
        except Exception:
            pass
        raise


def open_zarr_parts(path: Path, *, cache: TileCache, key: str, labels: bool) -> SlideParts:
    """Slide parts of an OME-Zarr image (the registry's ``zarr`` opener)."""
    from napari_histo.io._zarr_source import ngff_slide_parts

    return ngff_slide_parts(path, cache=cache, key=key, labels=labels)


def slide_token(path: Path) -> str:
    """A short key naming this version of the file: path, size and modification time hashed.

    Keys the decoded-tile cache and names the dask arrays of an opened slide or mask, so a
    file rewritten in place never serves stale tiles.
    """
    try:
        st = path.stat()
        stamp = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = str(path)
    return hashlib.sha1(stamp.encode()).hexdigest()[:16]


def assemble(
    path: Path,
    parts: SlideParts,
    *,
    cache: TileCache,
    token: str,
    cls: type[Slide] = Slide,
    reopen: Callable[[str], Slide] | None = None,
) -> Slide:
    """Build a :class:`Slide` (or subclass ``cls``) from opened parts, adding computed levels.

    ``reopen`` is the module-level function that opens ``path`` again in another process
    when a level is pickled (dask distributed, DataLoader workers): :func:`open_slide` by
    default, :func:`~napari_histo.io.masks.open_mask` for masks.
    """
    opener = open_slide if reopen is None else reopen
    native: list[LevelArray] = list(parts.levels)
    downs_yx: list[tuple[float, float]] = list(parts.downsamples)
    arrays = add_computed_levels(native, cache=cache, key=token, min_side=MIN_SIDE)
    if parts.postprocess is not None:
        for a in native:
            a.postprocess = parts.postprocess
    for _k in range(len(native), len(arrays)):
        py, px = downs_yx[-1]
        downs_yx.append((py * 2.0, px * 2.0))
    for i, arr in enumerate(arrays):
        arr.reopen = (_reopen_level, (str(path), i, opener))
    levels = [to_dask(a, f"napari-histo-{token}-{i}") for i, a in enumerate(arrays)]
    meta = SlideMetadata(
        format=parts.format,
        vendor=parts.vendor,
        mpp=parts.mpp,
        objective_power=parts.objective_power,
        level_shapes=tuple((a.shape[0], a.shape[1]) for a in arrays),
        level_downsamples=tuple((dy + dx) / 2.0 for dy, dx in downs_yx),
        associated=tuple(parts.associated),
        properties=dict(parts.properties),
        level_downsamples_yx=tuple(downs_yx),
        level_native=tuple(a.native for a in arrays),
        tile_shapes=tuple(a.chunk_shape for a in arrays),
        source_dtype=parts.source_dtype,
        source_samples=parts.source_samples,
        compression=parts.compression,
    )
    return cls(
        path,
        levels,
        meta,
        level_arrays=arrays,
        associated_reader=parts.associated_reader,
        closer=parts.closer,
        cache=cache,
    )


def open_plain_parts(path: Path, *, cache: TileCache, key: str, labels: bool) -> SlideParts:
    """Slide parts of a PNG/JPEG/BMP/GIF picture (the registry's ``plain`` opener)."""
    from napari_histo.io._image import PlainImage, PlainLevel

    img = PlainImage(path)
    level = PlainLevel(img, key=(key, 0), labels=labels)
    return SlideParts(
        format=img.format,
        vendor=None,
        mpp=img.mpp,
        objective_power=None,
        levels=[level],
        downsamples=[(1.0, 1.0)],
        properties={f"image.{k}": v for k, v in img.info.items() if not isinstance(v, bytes)},
        source_dtype="uint16" if img.mode.startswith("I") else "uint8",
        source_samples=len(img.mode) if img.mode in ("RGB", "RGBA", "LA", "L") else None,
        compression=img.format,
    )


# Pickled levels reopen their slide once per process (dask distributed, DataLoader workers).
_REOPENED: dict[str, Slide] = {}
_REOPEN_LOCK = threading.Lock()


def _reopen_level(path: str, index: int, opener: Callable[[str], Slide]) -> LevelArray:
    key = f"{opener.__module__}.{opener.__qualname__}:{path}"
    with _REOPEN_LOCK:
        slide = _REOPENED.get(key)
        if slide is None:
            slide = opener(path)
            _REOPENED[key] = slide
    assert slide.level_arrays is not None
    return slide.level_arrays[index]
