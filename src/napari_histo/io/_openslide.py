"""Optional OpenSlide fallback: vendor formats tifffile cannot read, behind the Slide interface.

Used by :func:`napari_histo.io.slide.open_slide` for the registry's OpenSlide formats (MIRAX
``.mrxs``, Hamamatsu ``.vms``/``.vmu``, Sakura ``.svslide``, Zeiss ``.czi``) and for vendor
TIFFs tifffile fails on, only when ``openslide`` imports (the ``openslide`` extra:
``openslide-python`` + ``openslide-bin``). This module imports ``openslide`` only inside
:func:`open_openslide_parts`, so it is importable without it.

Each pyramid level is an :class:`OpenSlideLevel`, a :class:`~napari_histo.io._pyramid.LevelArray`
whose decode unit is one ``read_region`` call of one tile (the level's tile size when
OpenSlide reports it, else 512 px): the slide's dask levels are built on it like any other
reader's, so nothing is read until a region is computed, tiles go through the slide's LRU and
reads of several tiles run on the decode pool (the OpenSlide C library is thread-safe).
``read_region`` takes level-0 coordinates and returns RGBA; transparent (unscanned) pixels
are composited over white like every other reader's alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import SlideOpenError, UnsupportedSlideError, one_line
from napari_histo.core.limits import check_decode
from napari_histo.io._cache import TileCache
from napari_histo.io._image import to_rgb8
from napari_histo.io._pyramid import LevelArray
from napari_histo.io.slide_parts import SlideParts

__all__ = ["OpenSlideLevel", "open_openslide_parts"]

#: decode unit when OpenSlide does not report the level's tile size
DEFAULT_TILE = 512
#: tile sizes reported by OpenSlide are clamped to this range
_TILE_RANGE = (64, 4096)
#: OpenSlide's associated-image names -> napari-histo's (Slide.associated_image)
_ASSOCIATED = {"thumbnail": "thumbnail", "label": "label", "macro": "macro"}


class OpenSlideLevel(LevelArray):
    """One OpenSlide pyramid level read tile by tile through ``read_region``."""

    unit = "tile"

    def __init__(self, osr: Any, level: int, tile: tuple[int, int], *, cache: TileCache | None,
                 key: Any, name: str) -> None:
        self.name = name
        self._osr = osr
        self._level = int(level)
        self._downsample = float(osr.level_downsamples[level])
        w, h = (int(v) for v in osr.level_dimensions[level])
        super().__init__(h, w, tile, cache=cache, key=key, name=name)

    def _decode_segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        sh, sw = self.seg_shape
        y0, x0 = sy * sh, sx * sw
        h, w = min(sh, self.shape[0] - y0), min(sw, self.shape[1] - x0)
        # read_region: (x, y) of the top-left corner in level-0 pixels, size (w, h) at level
        location = (int(round(x0 * self._downsample)), int(round(y0 * self._downsample)))
        try:
            region = self._osr.read_region(location, self._level, (w, h))
            rgba = np.asarray(region.convert("RGBA") if region.mode != "RGBA" else region)
        except Exception as err:
            raise SlideOpenError(f"{self.name}: OpenSlide cannot read the tile at row {sy}, "
                                 f"column {sx} ({one_line(err, 200)})") from err
        return to_rgb8(rgba)


def _float_prop(props: Any, key: str) -> float | None:
    try:
        v = float(props.get(key))
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _tile_shape(props: Any, level: int) -> tuple[int, int]:
    size = []
    for axis in ("height", "width"):
        try:
            v = int(props.get(f"openslide.level[{level}].tile-{axis}") or DEFAULT_TILE)
        except (TypeError, ValueError):
            v = DEFAULT_TILE
        size.append(min(max(v, _TILE_RANGE[0]), _TILE_RANGE[1]))
    return (size[0], size[1])


def open_openslide_parts(path: Path, *, cache: TileCache, key: Any,
                         labels: bool = False) -> SlideParts:
    """Open ``path`` with OpenSlide; return the parts ``io.slide.assemble`` builds a Slide from.

    Raises
    ------
    UnsupportedSlideError
        ``openslide`` is not installed, or a label mask was asked for (masks are read by
        tifffile, PIL or zarr only).
    SlideOpenError
        OpenSlide cannot open the file, or its levels are beyond :mod:`napari_histo.core.limits`.
    """
    try:
        import openslide
    except Exception as err:  # a missing package or a missing native library
        raise UnsupportedSlideError(
            f"{path.name}: reading this slide needs OpenSlide, an optional extra: "
            f"pip install 'napari-histo[openslide]' ({one_line(err, 120)})") from None
    if labels:
        raise UnsupportedSlideError(f"{path.name}: masks in OpenSlide-only formats are not "
                                    "supported; save the mask as a TIFF or PNG")
    try:
        osr = openslide.OpenSlide(str(path))
    except Exception as err:
        raise SlideOpenError(f"{path.name}: OpenSlide cannot open it ({type(err).__name__}: "
                             f"{one_line(err, 200)})") from None
    try:
        props = osr.properties
        levels: list[LevelArray] = []
        for i in range(int(osr.level_count)):
            lvl = OpenSlideLevel(osr, i, _tile_shape(props, i), cache=cache, key=(key, i),
                                 name=f"{path.name} level {i}")
            if levels and (lvl.shape[0] > levels[-1].shape[0] or lvl.shape[1] > levels[-1].shape[1]):
                break  # not a pyramid level
            levels.append(lvl)
        if not levels:
            raise SlideOpenError(f"{path.name}: OpenSlide reports no image level")
        h0, w0 = levels[0].shape[:2]
        downs = [(h0 / lv.shape[0], w0 / lv.shape[1]) for lv in levels]
        mpp_x = _float_prop(props, "openslide.mpp-x")
        mpp_y = _float_prop(props, "openslide.mpp-y") or mpp_x
        mpp = (mpp_y, mpp_x) if mpp_x and mpp_y else None
        vendor = props.get("openslide.vendor") or None
        associated = [ours for theirs, ours in _ASSOCIATED.items()
                      if theirs in osr.associated_images]

        def associated_reader(name: str) -> npt.NDArray[np.uint8]:
            theirs = next(k for k, v in _ASSOCIATED.items() if v == name)
            try:
                img = osr.associated_images[theirs]
                w, h = img.size
                check_decode(int(h), int(w), f"{path.name} associated image {name!r}",
                             channels=4, error=SlideOpenError)
                return to_rgb8(np.asarray(img.convert("RGBA")))
            except SlideOpenError:
                raise
            except Exception as err:
                raise SlideOpenError(f"{path.name}: associated image {name!r} is unreadable "
                                     f"({one_line(err, 200)})") from err

        from napari_histo.io.formats import format_for_path

        fmt = format_for_path(path)
        properties = {str(k): str(v) for k, v in props.items()}
    except BaseException:
        osr.close()
        raise
    return SlideParts(
        format=f"{fmt.name if fmt is not None else 'slide'} (openslide)",
        vendor=vendor,
        mpp=mpp,
        objective_power=_float_prop(props, "openslide.objective-power"),
        levels=levels,
        downsamples=downs,
        properties=properties,
        associated=tuple(associated),
        associated_reader=associated_reader,
        closer=osr.close,
        source_dtype="uint8",
        source_samples=4,
        compression=None,
    )
