"""Ground-truth masks: find a slide's sibling mask, open it as label levels, align it.

- :func:`find_ground_truth`: CAMELYON16 ``<name>_mask.tif`` / ``<name>_mask.png`` next to the
  slide, or GlaS ``labels/<name>.png`` next to ``images/<name>.png``.
- :func:`open_mask`: a :class:`Mask` (a :class:`~napari_histo.io.slide.Slide` whose levels
  are 2-D integer label arrays, never RGB); same lazy reading, computed levels use nearest
  sampling so class indices are never averaged.
- :func:`mask_scale_for`: how many slide level-0 pixels one mask level-0 pixel spans, from
  the physical extent (the mask may be stored at any resolution).

Value rule: a mask whose values are only 0 and 255 (the usual 8-bit binary PNG/TIFF export,
e.g. GlaS) is binary and 255 becomes 1; any other values are class indices kept as they are
(CAMELYON 0/1/2, Gleason 0..4). For TIFF masks the rule is decided on the coarsest stored
level (cheap) and then applied lazily tile by tile; masks without a small level keep their
values.

Alignment rule: mask and slide must cover the same physical extent. If their aspect ratios
differ by more than 2 % (one pixel of rounding allowed), :func:`mask_scale_for` raises
:class:`~napari_histo.core.errors.SlideOpenError` rather than draw a misaligned overlay.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import SlideOpenError
from napari_histo.io._cache import TileCache
from napari_histo.io.formats import mask_suffixes, strip_suffix
from napari_histo.io.slide import Slide, assemble, open_parts, slide_token

__all__ = ["Mask", "find_ground_truth", "open_mask", "mask_scale_for", "ASPECT_TOLERANCE"]

#: relative aspect-ratio difference above which a mask is refused for a slide
ASPECT_TOLERANCE = 0.02

#: stored levels up to this many pixels are scanned to decide the 0/255 rule
_SCAN_PIXELS = 4096 * 4096

def _stem(path: Path) -> str:
    return strip_suffix(path.name)


def find_ground_truth(path: str | os.PathLike[str]) -> Path | None:
    """Return the sibling ground-truth mask of slide/image ``path``, or None.

    Looks for ``<name>_mask<suffix>`` beside the file for every mask suffix of the format
    registry (``.tif``, ``.tiff``, ``.btf``, ``.png``), then (GlaS layout)
    ``../labels/<name>.png`` (or the image's own suffix) when the file lives in an
    ``images`` folder. Never raises.
    """
    try:
        p = Path(path)
        stem = _stem(p)
        if stem.endswith("_mask"):
            return None  # a mask has no mask
        for suffix in mask_suffixes():
            cand = p.with_name(f"{stem}_mask{suffix}")
            if cand.is_file() and cand != p:
                return cand
        if p.parent.name.lower() == "images":
            labels = p.parent.parent / "labels"
            for suffix in dict.fromkeys((".png", p.suffix.lower(), ".tif")):
                cand = labels / f"{stem}{suffix}"
                if cand.is_file():
                    return cand
    except (OSError, ValueError):
        return None
    return None


class Mask(Slide):
    """An opened label mask: ``levels`` are 2-D dask arrays of uint8/uint16 class indices.

    ``binary_255`` tells whether 0/255 values were mapped to 0/1. ``read_region`` returns
    (h, w) labels, 0 outside the mask.
    """

    binary_255: bool = False

    @property
    def labels_dtype(self) -> np.dtype[Any]:
        """Dtype of the label values."""
        return np.dtype(self.levels[0].dtype)


def _map_255(tile: np.ndarray) -> np.ndarray:
    out = tile.copy()
    out[out == 255] = 1
    return out


def open_mask(path: str | os.PathLike[str], *, cache_bytes: int | None = None) -> Mask:
    """Open a label mask (TIFF, PNG, OME-Zarr) lazily as a :class:`Mask`.

    Raises
    ------
    SlideOpenError
        Missing/corrupt file, or pixel values that are not unsigned integers.
    UnsupportedSlideError
        Unknown format.
    """
    p = Path(path)
    cache = TileCache(cache_bytes)
    token = slide_token(p) + "-mask"
    parts = open_parts(p, cache=cache, key=token, labels=True)
    levels = parts.levels
    binary = False
    small = min(levels, key=lambda lv: lv.shape[0] * lv.shape[1])
    if small.shape[0] * small.shape[1] <= _SCAN_PIXELS:
        values = np.unique(np.asarray(small.read(0, small.shape[0], 0, small.shape[1])))
        binary = bool(len(values) and set(values.tolist()) <= {0, 255} and 255 in values)
        cache.clear()  # the scan cached raw tiles; later reads must see mapped values
    parts = replace(parts, format=f"{parts.format}-mask",
                    postprocess=_map_255 if binary else parts.postprocess)
    mask = assemble(p, parts, cache=cache, token=token, cls=Mask, reopen=open_mask)
    assert isinstance(mask, Mask)
    mask.binary_255 = binary
    return mask


def mask_scale_for(slide: Slide, mask: Slide) -> tuple[float, float]:
    """Slide level-0 pixels per mask level-0 pixel, (scale_y, scale_x), by physical extent.

    Multiply by ``slide.mpp`` to get the mask's microns per pixel (its napari ``scale``).

    Raises
    ------
    SlideOpenError
        When the aspect ratios differ by more than ``ASPECT_TOLERANCE`` (2 %, with one mask
        pixel of rounding allowed): the mask does not belong to this slide.
    """
    sh, sw = slide.shape
    mh, mw = mask.shape
    scale_y, scale_x = sh / mh, sw / mw
    expected_mh = sh / scale_x  # mask height if it had the slide's aspect ratio
    if abs(mh - expected_mh) > max(ASPECT_TOLERANCE * expected_mh, 1.0):
        raise SlideOpenError(
            f"mask {mask.path.name} ({mw} x {mh} px) does not match slide {slide.path.name} "
            f"({sw} x {sh} px): aspect ratios differ by "
            f"{abs(mh / expected_mh - 1) * 100:.1f}% (> {ASPECT_TOLERANCE * 100:.0f}%); "
            "it is probably the mask of another slide"
        )
    return scale_y, scale_x
