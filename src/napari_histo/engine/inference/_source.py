"""Where tiles come from: an in-memory array, or a slide read at the working resolution.

A source reads boxes in *working pixels* (the model's resolution) and returns uint8 RGB,
padding outside the image (white for slides, mirror for arrays). The slide source picks the
pyramid level nearest the working mpp and resamples only when it is off by > ``MPP_TOL``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError, CorruptDataError
from napari_histo.core.limits import MPP_RANGE, check_upsample, number
from napari_histo.io.formats import plain_image_suffixes

if TYPE_CHECKING:
    from napari_histo.io.protocols import SlideLike

__all__ = ["ArraySource", "MPP_TOL", "Resolution", "SlideSource", "resolve_resolution"]

#: Relative mpp difference under which a pyramid level is used as is (no resampling).
MPP_TOL = 0.05

Box = tuple[int, int, int, int]
PLAIN_IMAGE_SUFFIXES = frozenset(plain_image_suffixes())  # untiled pictures (format registry)


class ArraySource:
    """An RGB array; boxes beyond the edges are mirrored (like the reflection-padded U-Net)."""

    def __init__(self, image: npt.NDArray[Any]) -> None:
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] < 3:
            raise ConfigError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
        if img.dtype != np.uint8:
            raise ConfigError(f"expected a uint8 image, got {img.dtype}")
        self.image = img[..., :3]
        self.shape = (int(img.shape[0]), int(img.shape[1]))

    def read(self, box: Box) -> npt.NDArray[np.uint8]:
        """Pixels of ``box`` (y0, x0, y1, x1); outside the image mirrored."""
        y0, x0, y1, x1 = box
        h, w = self.shape
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        core = self.image[cy0:cy1, cx0:cx1]
        pads = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
        if any(p for pair in pads for p in pair):
            core = np.pad(core, pads, mode="reflect" if min(core.shape[:2]) > 1 else "edge")
        return np.ascontiguousarray(core)


@dataclass(frozen=True)
class Resolution:
    """How working pixels map onto a slide.

    ``level`` is read; ``factor`` is level-0 px per working px (y, x); ``resample`` tells if
    level pixels must be resized; ``mpp`` is the working um/px (y, x) or None when unknown.
    """

    level: int
    factor: tuple[float, float]
    resample: bool
    mpp: tuple[float, float] | None


def is_plain_image(slide: object) -> bool:
    """A single-level PNG/JPEG-like image rather than a scanned slide."""
    path = getattr(slide, "path", None)
    suffix = str(path).lower().rsplit(".", 1)[-1] if path is not None else ""
    return f".{suffix}" in PLAIN_IMAGE_SUFFIXES


def resolve_resolution(slide: SlideLike, *, mpp: float | None, level: int | None,
                       slide_mpp: float | None, model_mpp: float | None) -> Resolution:
    """Choose the level and resampling that bring ``slide`` to the working resolution.

    Raises
    ------
    ConfigError
        Level out of range, a working mpp is needed but the slide has none, or the working
        resolution is more than ``MAX_UPSAMPLE`` (4) times finer than the slide's level 0
        (the output would grow by the square of that factor; refused before anything is
        planned or allocated).
    """
    name = getattr(slide, "name", "slide")
    downs = tuple(float(d) for d in slide.metadata.level_downsamples)
    if not downs or not all(math.isfinite(d) and d > 0 for d in downs):
        raise ConfigError(f"{name}: the slide's pyramid has invalid level downsamples {downs}")
    smpp = slide.metadata.mpp
    if smpp is not None and not all(math.isfinite(v) and v > 0 for v in smpp):
        smpp = None  # nonsense metadata: the same as none
    if smpp is None and slide_mpp is not None:
        v = number("slide_mpp", slide_mpp, *MPP_RANGE)
        smpp = (v, v)
    for label, value in (("mpp", mpp), ("the checkpoint's mpp", model_mpp)):
        number(label, value, *MPP_RANGE, allow_none=True)
    if level is not None:
        if not 0 <= level < len(downs):
            raise ConfigError(f"{slide.name} has {len(downs)} level(s); level {level} does not exist")
        d = downs[level]
        lm = (smpp[0] * d, smpp[1] * d) if smpp else None
        return Resolution(level, (d, d), False, lm)
    target = mpp if mpp is not None else model_mpp
    if target is None:
        return Resolution(0, (1.0, 1.0), False, smpp)
    target = float(target)
    if smpp is not None:
        source = "--mpp" if mpp is not None else "the checkpoint's mpp"
        check_upsample(target, min(smpp), f"{name} ({source})")
    if smpp is None:
        if is_plain_image(slide):  # a PNG tile: assume it is at the working resolution
            warnings.warn(
                f"{name}: no pixel size in the file; assumed to be at the model's resolution "
                f"({target:g} um/px) and read as is (pass --slide-mpp UM to resample)",
                stacklevel=2)
            return Resolution(0, (1.0, 1.0), False, (float(target), float(target)))
        raise ConfigError(
            f"{slide.name} has no microns-per-pixel in its metadata, so the model's "
            f"resolution ({target:g} um/px) cannot be found; pass the slide's level-0 "
            "resolution (--slide-mpp UM) or a pyramid level to read as is (--level N)")
    level_mpp = [smpp[1] * d for d in downs]
    best = min(range(len(downs)), key=lambda i: abs(math.log(level_mpp[i] / target)))
    if abs(level_mpp[best] / target - 1.0) <= MPP_TOL:
        d = downs[best]
        return Resolution(best, (d, d), False, (smpp[0] * d, smpp[1] * d))
    # finest level that is still coarser than or equal to the target -> downsample from it
    finer = [i for i in range(len(downs)) if level_mpp[i] <= target * (1 + MPP_TOL)]
    lvl = max(finer) if finer else 0
    return Resolution(lvl, (target / smpp[0], target / smpp[1]), True, (target, target))


class SlideSource:
    """Reads working-resolution boxes of a slide (optionally a sub-region)."""

    def __init__(self, slide: SlideLike, res: Resolution, origin0: tuple[float, float] = (0.0, 0.0),
                 shape: tuple[int, int] | None = None) -> None:
        self.slide = slide
        self.res = res
        self.origin0 = origin0
        if shape is None:
            h0, w0 = slide.shape
            shape = (max(1, math.ceil((h0 - origin0[0]) / res.factor[0])),
                     max(1, math.ceil((w0 - origin0[1]) / res.factor[1])))
        self.shape = shape
        self.level_ds = float(slide.metadata.level_downsamples[res.level])

    def to_level0(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A working-pixel box in level-0 pixels."""
        fy, fx = self.res.factor
        oy, ox = self.origin0
        return (oy + box[0] * fy, ox + box[1] * fx, oy + box[2] * fy, ox + box[3] * fx)

    def read(self, box: Box) -> npt.NDArray[np.uint8]:
        """Pixels of ``box`` at the working resolution, mirrored beyond the slide's edges.

        Mirroring (as :class:`ArraySource` and the U-Net's training crops do) rather than
        white: at a whole slide's edge it only repeats glass, but a plain image (a GlaS or
        Kather tile) is tissue up to its border, and a white frame there made the model
        miss glands along the edges (GlaS val Dice 0.881 -> 0.912, docs/benchmarks.md).
        """
        y0, x0, y1, x1 = box
        fy, fx = self.res.factor
        h0, w0 = self.slide.shape
        # the working pixels that lie wholly on the slide
        sy0 = max(y0, math.ceil(-self.origin0[0] / fy - 1e-9))
        sx0 = max(x0, math.ceil(-self.origin0[1] / fx - 1e-9))
        sy1 = min(y1, math.floor((h0 - self.origin0[0]) / fy + 1e-9))
        sx1 = min(x1, math.floor((w0 - self.origin0[1]) / fx + 1e-9))
        if sy1 <= sy0 or sx1 <= sx0:  # wholly off the slide
            return np.full((y1 - y0, x1 - x0, 3), 255, np.uint8)
        core = self._read_on_slide((sy0, sx0, sy1, sx1))
        pads = ((sy0 - y0, y1 - sy1), (sx0 - x0, x1 - sx1), (0, 0))
        if any(p for pair in pads for p in pair):
            core = np.pad(core, pads, mode="reflect" if min(core.shape[:2]) > 1 else "edge")
        return np.ascontiguousarray(core)

    def _read_on_slide(self, box: Box) -> npt.NDArray[np.uint8]:
        """Pixels of ``box`` (on the slide) at the working resolution."""
        y0, x0, y1, x1 = box
        h, w = y1 - y0, x1 - x0
        ly0, lx0, ly1, lx1 = self.to_level0(box)
        loc = (int(math.floor(ly0)), int(math.floor(lx0)))
        if not self.res.resample:
            size = (h, w)
        else:
            size = (max(1, round((ly1 - ly0) / self.level_ds)), max(1, round((lx1 - lx0) / self.level_ds)))
        try:
            arr = self.slide.read_region(loc, self.res.level, size)
        except Exception as err:  # a corrupt tile: report, let the caller skip the block
            raise CorruptDataError(
                f"{getattr(self.slide, 'name', 'slide')}: cannot read level-0 region at "
                f"(y={loc[0]}, x={loc[1]}): {err}") from err
        arr = np.asarray(arr)[..., :3]
        if arr.shape[:2] != (h, w):
            from PIL import Image

            # PIL's bilinear filter widens when shrinking (antialiased). A box filter, as the
            # training pipeline's resize_image uses, was measured worse here: GlaS val Dice
            # 0.898 vs 0.912 (docs/benchmarks.md)
            arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(
                (w, h), Image.Resampling.BILINEAR))
        return np.ascontiguousarray(arr, dtype=np.uint8)
