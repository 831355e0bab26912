"""Open a TIFF-family file as slide parts: pyramid levels, downsamples, metadata, associated images.

The main series is tifffile's first series that is not an associated image (Aperio
"Baseline", NDPI/OME/generic series 0); its ``levels`` are the pyramid (SVS reduced pages,
NDPI, SubIFDs, CAMELYON16-style page pyramids, all recognised by tifffile). Levels stored as
one page are read directly (:class:`~napari_histo.io._tiff.TiffLevel`); others through
tifffile's zarr store.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import HistoError, SlideOpenError, reading
from napari_histo.core.limits import check_decode, one_line
from napari_histo.io._cache import TileCache
from napari_histo.io._image import to_rgb8
from napari_histo.io._pyramid import LevelArray
from napari_histo.io._tiff import TiffLevel, open_tiff, pread_fn
from napari_histo.io._tiff_meta import tiff_metadata
from napari_histo.io.slide_parts import SlideParts

__all__ = ["open_tiff_slide"]

_ASSOC_WORDS = (("thumb", "thumbnail"), ("label", "label"), ("macro", "macro"), ("map", "map"))


def _assoc_name(series: Any) -> str | None:
    names = [str(series.name or "")]
    try:
        names.append(str(series.keyframe.description or "")[:40])
    except Exception:
        pass
    for text in names:
        low = text.strip().lower()
        for word, name in _ASSOC_WORDS:
            if low.startswith(word) or low.endswith(f"{word} image"):
                return name
    return None


def _direct_ok(lvl: Any) -> bool:
    page = lvl.keyframe
    return (
        len(lvl.pages) == 1
        and page.imagedepth == 1
        and page.dtype is not None
        and all(d == 1 for d in page.shape[:-3])
    )


def _zarr_level(
    series: Any, i: int, *, cache: TileCache, key: Any, name: str, labels: bool
) -> LevelArray:
    import zarr

    from napari_histo.io._zarr_source import ArrayLevel

    store = series.aszarr(level=i)
    arr = zarr.open_array(store, mode="r")
    return ArrayLevel(arr, series.levels[i].axes, cache=cache, key=key, name=name, labels=labels)


def open_tiff_slide(
    path: Path, *, cache: TileCache, key: Any, labels: bool = False
) -> SlideParts:
    """Open ``path`` and return the parts :func:`napari_histo.io.slide.open_slide` assembles.

    Raises
    ------
    SlideOpenError
        Unreadable structure, or sizes beyond :mod:`napari_histo.core.limits` (refused
        from the header, before any pixel is decoded).
    """
    with _quiet_tifffile(), reading(f"{path.name}: TIFF structure", SlideOpenError):
        return _open_tiff_slide(path, cache=cache, key=key, labels=labels)


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    # tifffile logs recoverable structure problems (e.g. a truncated IFD chain) as warnings
    # on its logger, and a header that contradicts itself (e.g. a size that does not match
    # its strips) as errors; we report what matters ourselves, once, through warnings.warn
    # or a SlideOpenError, so a user never sees a second, raw line.
    logger = logging.getLogger("tifffile")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _open_tiff_slide(path: Path, *, cache: TileCache, key: Any, labels: bool) -> SlideParts:
    tif = open_tiff(path)
    read, close_fd = pread_fn(path)
    weakref.finalize(read, tif.close)  # levels may outlive the Slide: close with the last one
    lock = threading.Lock()

    def closer() -> None:
        close_fd()
        with lock:
            tif.close()

    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                series_list = list(tif.series)
        except Exception as err:
            raise SlideOpenError(f"{path.name}: cannot parse the TIFF image series ({err})") from err
        if not series_list:
            raise SlideOpenError(f"{path.name}: TIFF contains no image")
        main = next((s for s in series_list if _assoc_name(s) is None), series_list[0])
        file_size = path.stat().st_size
        levels: list[LevelArray] = []
        for i, lvl in enumerate(main.levels):
            page = lvl.keyframe
            h, w = int(page.imagelength), int(page.imagewidth)
            if levels and (h > levels[-1].shape[0] or w > levels[-1].shape[1]):
                break  # not a pyramid level
            name = f"{path.name} level {i}"
            if _direct_ok(lvl):
                levels.append(
                    TiffLevel(page, read, file_size=file_size, cache=cache, key=(key, i),
                              name=name, labels=labels)
                )
            else:
                levels.append(
                    _zarr_level(main, i, cache=cache, key=(key, i), name=name, labels=labels)
                )
        if not levels:
            raise SlideOpenError(f"{path.name}: TIFF contains no readable image level")
        h0, w0 = levels[0].shape[:2]
        downs = [(h0 / lv.shape[0], w0 / lv.shape[1]) for lv in levels]
        first = levels[0]
        if isinstance(first, TiffLevel):
            n_bad = first.past_eof()
            if n_bad:
                warnings.warn(
                    f"{path.name} is truncated: {n_bad} of {len(first.offsets)} tiles of level 0 "
                    "lie beyond the end of the file and will show as white",
                    stacklevel=3,
                )
        page0 = main.levels[0].keyframe
        meta = tiff_metadata(tif, page0)
        associated: dict[str, Any] = {}
        for s in series_list:
            if s is main:
                continue
            nm = _assoc_name(s)
            if nm is not None and nm not in associated:
                associated[nm] = s

        def associated_reader(name: str) -> npt.NDArray[np.uint8]:
            series = associated[name]
            try:
                kf = series.keyframe
                check_decode(int(kf.imagelength), int(kf.imagewidth),
                             f"{path.name} associated image {name!r}",
                             channels=int(kf.samplesperpixel or 1),
                             itemsize=np.dtype(kf.dtype or np.uint8).itemsize,
                             error=SlideOpenError)
            except HistoError:
                raise
            except Exception as err:
                raise SlideOpenError(f"{path.name}: associated image {name!r} has an unreadable "
                                     f"header ({one_line(err, 200)})") from err
            try:
                with lock:
                    arr = series.asarray()
            except Exception as err:
                raise SlideOpenError(f"{path.name}: associated image {name!r} is unreadable "
                                     f"({one_line(err, 200)})") from err
            arr = np.asarray(arr)
            while arr.ndim > 3 or (arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[-1] > 4):
                arr = arr[0]
            return to_rgb8(arr)

    except BaseException:
        closer()
        raise
    return SlideParts(
        format=meta["format"],
        vendor=meta["vendor"],
        mpp=meta["mpp"],
        objective_power=meta["objective_power"],
        properties=meta["properties"],
        levels=levels,
        downsamples=downs,
        associated=tuple(associated),
        associated_reader=associated_reader,
        closer=closer,
        source_dtype=str(page0.dtype),
        source_samples=int(page0.samplesperpixel),
        compression=meta["properties"].get("tiff.Compression"),
    )
