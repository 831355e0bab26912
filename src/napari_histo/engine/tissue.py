"""Tissue detection: Otsu on saturation of a low-resolution image, then morphology.

Used by inference (skip background tiles) and by training (sample patches on tissue only).
Works on a thumbnail array or on a Slide (a low-resolution level is read, never level 0 of a
big pyramid). Saturation separates stained tissue from the white/grey glass better than grey
level; the Otsu threshold is clamped so an all-tissue image is not split into two halves.

A thumbnail tile the reader could not decode comes back white, which would look like glass:
:func:`tissue_map` counts such tiles (``TissueMap.failed``, through the slide's tile cache)
and marks their area as tissue, so the region is still predicted rather than silently
skipped as background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from napari_histo.io.protocols import SlideLike

__all__ = ["TissueMap", "slide_thumbnail", "tissue_map", "tissue_mask"]

#: Saturation (0..1) below which a pixel is never tissue, and above which it always is.
SAT_MIN, SAT_MAX = 0.04, 0.12


def _saturation(rgb: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """HSV saturation in 0..1, without float copies of the RGB image (thumbnails are big)."""
    rgb = rgb[..., :3]
    mx = rgb.max(axis=-1)
    sat = (mx - rgb.min(axis=-1)).astype(np.float32)
    sat /= np.maximum(mx, 1).astype(np.float32)
    return sat


def tissue_mask(
    image: Any,
    *,
    max_side: int = 2048,
    threshold: float | None = None,
    closing_radius: int = 2,
    min_object_frac: float = 2e-4,
    fill_holes_frac: float = 1e-3,
) -> npt.NDArray[np.bool_]:
    """Boolean tissue mask of an RGB image (H, W, 3) or of a Slide's low-resolution level.

    Parameters
    ----------
    image : ndarray or Slide
        A thumbnail (uint8 RGB), or a Slide (a level with longest side near ``max_side`` is
        read; use :func:`tissue_map` to also get the scale back to level-0 pixels).
    threshold : float, optional
        Saturation threshold in 0..1; default Otsu, clamped to [0.04, 0.12].
    closing_radius, min_object_frac, fill_holes_frac
        Morphology in mask pixels / fractions of the mask area (drops dust, fills nuclei gaps).
    """
    from scipy import ndimage
    from skimage import filters, morphology

    if not isinstance(image, np.ndarray):
        image, _ = slide_thumbnail(image, max_side=max_side)
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    sat = _saturation(img)
    # Pure black (scanner padding, pen) is not tissue either.
    dark = img[..., :3].max(axis=-1) < 25
    if threshold is None:
        vals = sat[~dark]
        if vals.size == 0 or float(vals.max() - vals.min()) < 1e-3:
            t = SAT_MIN
        else:
            t = float(filters.threshold_otsu(vals))
        threshold = float(np.clip(t, SAT_MIN, SAT_MAX))
    mask = (sat > threshold) & ~dark
    area = mask.size
    if closing_radius > 0:
        r = closing_radius
        padded = np.pad(mask, r, mode="edge")
        mask = ndimage.binary_closing(padded, morphology.disk(r))[r:-r, r:-r]
    min_size = max(1, int(area * min_object_frac))
    mask = _remove_small(mask, min_size)
    hole = max(1, int(area * fill_holes_frac))
    mask = _fill_small_holes(mask, hole)
    return np.asarray(mask, dtype=bool)


def _remove_small(mask: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.bool_]:
    """Drop connected components of at most ``size`` pixels (stable across skimage APIs)."""
    from skimage import measure

    lab = measure.label(mask, connectivity=2)
    if lab.max() == 0:
        return mask
    counts = np.bincount(lab.ravel())
    keep = counts > size
    keep[0] = False
    return keep[lab]


def _fill_small_holes(mask: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.bool_]:
    from skimage import measure

    inv = ~mask
    lab = measure.label(inv, connectivity=1)
    if lab.max() == 0:
        return mask
    counts = np.bincount(lab.ravel())
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    small = counts <= size
    small[0] = False
    small[border] = False
    return mask | small[lab]


def slide_thumbnail(slide: SlideLike, *, max_side: int = 2048) -> tuple[npt.NDArray[np.uint8], float]:
    """Read a low-resolution RGB image of a Slide; return it and its downsample vs level 0.

    The smallest level whose longest side is still >= ``max_side`` is read (or the smallest
    level), then strided down if it is much larger, so memory stays small on big pyramids.
    """
    levels = slide.levels
    shapes = [(int(lvl.shape[0]), int(lvl.shape[1])) for lvl in levels]
    choice = len(levels) - 1
    for i, shp in enumerate(shapes):
        if max(shp) >= max_side:
            choice = i
    arr = levels[choice]
    step = max(1, int(max(shapes[choice]) // max_side))
    if step == 1 and hasattr(slide, "read_region"):
        # one decode into one array (a dask compute would concatenate copies of chunks)
        thumb = np.asarray(slide.read_region((0, 0), choice, shapes[choice]))[..., :3]
    else:
        if step > 1:
            arr = arr[::step, ::step]
        thumb = np.asarray(arr[..., :3])
    thumb = thumb.astype(np.uint8, copy=False)
    h0 = shapes[0][0]
    downsample = h0 / max(thumb.shape[0], 1)
    return thumb, float(downsample)


@dataclass(frozen=True)
class TissueMap:
    """A tissue mask with its scale: ``downsample`` level-0 pixels per mask pixel (y, x).

    ``failed``: slide segments ``(level, row, column)`` that could not be decoded while the
    thumbnail was read, with their level-0 box (None when unknown); their area is tissue.
    """

    mask: npt.NDArray[np.bool_]
    downsample: tuple[float, float]
    failed: dict[tuple[int, int, int], tuple[float, ...] | None] = field(default_factory=dict)

    @property
    def fraction_total(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction(self, box: tuple[float, float, float, float]) -> float:
        """Tissue fraction inside ``box`` = (y0, x0, y1, x1) in level-0 pixels (0 outside)."""
        dy, dx = self.downsample
        y0 = int(np.floor(box[0] / dy))
        x0 = int(np.floor(box[1] / dx))
        y1 = int(np.ceil(box[2] / dy))
        x1 = int(np.ceil(box[3] / dx))
        h, w = self.mask.shape
        if y1 <= y0 or x1 <= x0:
            return 0.0
        sub = self.mask[max(y0, 0) : max(min(y1, h), 0), max(x0, 0) : max(min(x1, w), 0)]
        return float(sub.sum()) / float((y1 - y0) * (x1 - x0))

    def contains(self, y: float, x: float) -> bool:
        """Whether the level-0 point (y, x) falls on tissue."""
        iy, ix = int(y / self.downsample[0]), int(x / self.downsample[1])
        h, w = self.mask.shape
        return 0 <= iy < h and 0 <= ix < w and bool(self.mask[iy, ix])


def tissue_map(slide_or_image: SlideLike | npt.NDArray[Any], *, max_side: int = 2048, unreadable_is_tissue: bool = True,
               **kwargs: Any) -> TissueMap:
    """Tissue mask of a Slide (or a level-0 array) with its scale back to level-0 pixels.

    Thumbnail tiles that could not be decoded are listed in ``TissueMap.failed`` and, with
    ``unreadable_is_tissue`` (default), their area counts as tissue: inference then still
    reads and predicts it (and counts it as failed) instead of skipping it as glass.
    """
    if isinstance(slide_or_image, np.ndarray):
        img = slide_or_image
        step = max(1, int(max(img.shape[:2]) // max_side))
        thumb = img[::step, ::step]
        mask = tissue_mask(thumb, **kwargs)
        return TissueMap(mask, (img.shape[0] / mask.shape[0], img.shape[1] / mask.shape[1]))
    from napari_histo.io._cache import FailureTracker, locate_failures

    cache: Any = getattr(slide_or_image, "cache", None)
    tracker = cache.track_failures() if hasattr(cache, "track_failures") else FailureTracker(None)
    with tracker:
        thumb, _ = slide_thumbnail(slide_or_image, max_side=max_side)
    mask = tissue_mask(thumb, **kwargs)
    h0, w0 = slide_or_image.shape
    ds = (h0 / mask.shape[0], w0 / mask.shape[1])
    failed = locate_failures(slide_or_image, tracker.keys) if tracker.keys else {}
    for box in failed.values():  # unreadable is not background: predict it anyway
        if box is not None and unreadable_is_tissue:
            y0, x0 = int(box[0] // ds[0]), int(box[1] // ds[1])
            y1, x1 = int(-(-box[2] // ds[0])), int(-(-box[3] // ds[1]))
            mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return TissueMap(mask, ds, failed)
