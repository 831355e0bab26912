"""Conversion of any decoded pixels to RGB uint8, and the plain-image (PNG/JPEG/BMP) source.

RGB policy (applied tile by tile, so it stays lazy; documented in docs and ``open_slide``):

- **dtype**: uint8 is kept. Other unsigned/signed integers are scaled linearly from
  ``[0, maxvalue]`` to ``[0, 255]`` where ``maxvalue`` is ``2**bitspersample - 1`` (so 12-bit
  data in uint16 uses its full range) and negatives clip to 0. Floats are taken as ``[0, 1]``
  and clipped. Booleans map to 0/255. No per-image contrast stretching: that would need
  statistics over the whole level, which a lazy reader must never compute.
- **samples**: 1 sample (grayscale) is replicated to 3 channels (MINISWHITE is inverted first;
  a palette is applied through its colour map). 2 samples are gray + alpha, 4 are RGBA: alpha
  is composited over white (the slide background), so transparent pixels read white. More
  than 4 samples: the first 3 are used.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import HistoError, SlideOpenError
from napari_histo.core.limits import check_decode, check_image_size, one_line
from napari_histo.io._pyramid import LevelArray
from napari_histo.io.formats import plain_image_suffixes

__all__ = ["to_rgb8", "PlainImage", "PlainLevel"]


def _scale_to_uint8(arr: np.ndarray, maxvalue: float | None) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind == "f":
        out = np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255.0 + 0.5
        return out.astype(np.uint8)
    if arr.dtype.kind in "ui":
        if maxvalue is None or maxvalue <= 0:
            maxvalue = float(np.iinfo(arr.dtype).max)
        if arr.dtype.kind == "i":
            arr = np.clip(arr, 0, None)
        if maxvalue == 65535 and arr.dtype == np.uint16:
            # exact and fast: round(v * 255 / 65535) == (v + 128) // 257 for uint16
            return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
        out = np.clip(arr.astype(np.float32) * (255.0 / maxvalue) + 0.5, 0, 255)
        return out.astype(np.uint8)
    raise SlideOpenError(f"pixel type {arr.dtype} cannot be shown as RGB")


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a[..., None] + 255 * (255 - a[..., None]) + 127) // 255
    return out.astype(np.uint8)


def to_rgb8(
    arr: np.ndarray,
    *,
    maxvalue: float | None = None,
    miniswhite: bool = False,
    colormap: np.ndarray | None = None,
) -> npt.NDArray[np.uint8]:
    """Convert a decoded (H, W) or (H, W, S) tile to (H, W, 3) uint8 following the policy.

    Parameters
    ----------
    arr
        Decoded pixels.
    maxvalue
        Value that maps to 255 (default: the dtype's maximum; 1.0 for floats).
    miniswhite
        Grayscale where 0 is white (TIFF photometric MINISWHITE).
    colormap
        TIFF palette, shape (3, N) uint16, for palette-colour images.
    """
    if arr.ndim == 2:
        arr = arr[..., None]
    s = arr.shape[2]
    if s == 3 and arr.dtype == np.uint8:
        return arr
    if colormap is not None and s == 1:
        cmap = np.asarray(colormap)
        if cmap.dtype != np.uint8:
            cmap = (cmap.astype(np.uint32) >> 8).astype(np.uint8) if cmap.max() > 255 else cmap.astype(np.uint8)
        idx = np.clip(arr[..., 0].astype(np.intp), 0, cmap.shape[1] - 1)
        return np.ascontiguousarray(cmap.T[idx])
    alpha = None
    if s == 1:
        color = arr
    elif s == 2:
        color, alpha = arr[..., :1], arr[..., 1]
    elif s == 3:
        color = arr
    elif s == 4:
        color, alpha = arr[..., :3], arr[..., 3]
    else:
        color = arr[..., :3]
    color = _scale_to_uint8(color, maxvalue)
    if miniswhite and color.shape[2] == 1:
        color = 255 - color
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if alpha is not None:
        alpha8 = _scale_to_uint8(alpha, maxvalue)
        if not np.all(alpha8 == 255):
            color = _composite_on_white(color, alpha8)
    return np.ascontiguousarray(color)


#: suffixes of the formats this module reads (from the format registry's ``plain`` opener)
PLAIN_SUFFIXES = frozenset(plain_image_suffixes())

_HINT = ("PNG/JPEG/BMP have no tiles and must be decoded whole: convert a real image this "
         "large to a tiled pyramidal TIFF (e.g. vips tiffsave --tile --pyramid)")


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Any]:
    """``PIL.Image.open`` without Pillow's size warning: the size is checked by our budget."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            yield im


@contextlib.contextmanager
def _pil_errors(path: Path, doing: str) -> Iterator[None]:
    """Turn Pillow's exceptions (bombs, corrupt headers, truncated data) into one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except HistoError:
        raise
    except Image.DecompressionBombError as err:
        raise SlideOpenError(f"{path.name}: refused, {one_line(err, 160).rstrip('.')}; "
                             f"{_HINT}") from None
    except UnidentifiedImageError as err:
        raise SlideOpenError(f"{path.name}: not a readable image ({one_line(err, 160)})") from None
    except MemoryError:
        raise SlideOpenError(f"{path.name}: {doing}: not enough memory to decode it; "
                             f"{_HINT}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
            KeyError, TypeError, ZeroDivisionError) as err:
        raise SlideOpenError(f"{path.name}: {doing} ({one_line(err, 200)})") from err


class PlainImage:
    """A PNG/JPEG/BMP image decoded once, on first pixel access (these formats have no tiles).

    Opening reads only the header, so ``open_slide`` stays cheap; the first read decodes the
    whole image (there is no random access in PNG/JPEG) and keeps it for later reads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with _pil_errors(path, "cannot read image header"):
            with _open_image(path) as im:
                self.format = (im.format or "image").lower()
                self.mode = im.mode
                w, h = im.size
                info = dict(im.info)
        if w <= 0 or h <= 0:
            raise SlideOpenError(f"{path.name}: image has no pixels ({w}x{h})")
        self.height, self.width = check_image_size(h, w, path.name, error=SlideOpenError)
        # these formats have no tiles: the first read decodes the whole image, so a header
        # claiming more than one in-memory array may hold is refused now, not at that read
        check_decode(self.height, self.width, path.name, channels=1, error=SlideOpenError,
                     hint=_HINT)
        self.info: dict[str, Any] = {
            k: v for k, v in info.items() if isinstance(v, (int, float, str, tuple))
        }
        self._pixels: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel from the PNG pHYs / JPEG DPI chunk when it looks physical."""
        dpi = self.info.get("dpi")
        if isinstance(dpi, tuple) and len(dpi) == 2 and dpi[0] and dpi[1]:
            mx, my = 25400.0 / float(dpi[0]), 25400.0 / float(dpi[1])
            if mx < 20 and my < 20:  # display defaults (72/96/300 dpi) are not microscopy
                return (my, mx)
        return None

    def pixels(self) -> npt.NDArray[np.uint8]:
        """The whole image as (H, W, 3) uint8 (decoded on first call, then reused)."""
        if self._pixels is None:
            with self._lock:
                if self._pixels is None:
                    self._pixels = self._decode()
        return self._pixels

    def _check_memory(self, bytes_per_pixel: int) -> None:
        check_decode(self.height, self.width, self.path.name, channels=bytes_per_pixel,
                     error=SlideOpenError, hint=_HINT)

    def raw(self) -> np.ndarray:
        """The decoded image without RGB conversion (masks need the raw values)."""
        self._check_memory(2 * (len(self.mode) if self.mode.isalpha() else 4))
        with _pil_errors(self.path, "cannot decode image"):
            with _open_image(self.path) as im:
                return np.asarray(im)

    def _decode(self) -> npt.NDArray[np.uint8]:
        # decoded pixels, RGB(A) conversion and the final uint8 copy can coexist
        self._check_memory(12)
        with _pil_errors(self.path, "cannot decode image"):
            with _open_image(self.path) as im:
                if im.mode == "P":
                    im = im.convert("RGBA")
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im)
                    if arr.dtype.kind == "i":
                        arr = np.clip(arr, 0, 65535).astype(np.uint16)
                    return to_rgb8(arr)
                if im.mode == "F":
                    return to_rgb8(np.asarray(im))
                if im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
        out = to_rgb8(arr)
        out.flags.writeable = False
        return out


class PlainLevel(LevelArray):
    """The single level of a :class:`PlainImage`, sliced from the decoded image."""

    unit = "image"

    def __init__(self, image: PlainImage, *, key: Any, labels: bool = False) -> None:
        self.image = image
        self.labels = labels
        self._labels: np.ndarray | None = None
        extra: dict[str, Any] = {}
        if labels:
            raw = self._label_pixels()
            extra = {"channels": None, "dtype": raw.dtype, "fill": 0}
        super().__init__(image.height, image.width, (1024, 1024), cache=None, key=key,
                         name=image.path.name, **extra)

    def _label_pixels(self) -> np.ndarray:
        if self._labels is None:
            raw = self.image.raw()
            if raw.ndim == 3:
                raw = raw[..., 0]
            if raw.dtype == np.bool_:
                raw = raw.astype(np.uint8)
            if raw.dtype.kind not in "u":
                if raw.dtype.kind == "i" and raw.min() >= 0 and raw.max() <= 65535:
                    raw = raw.astype(np.uint16 if raw.max() > 255 else np.uint8)
                else:
                    raise SlideOpenError(
                        f"{self.image.path.name}: a label mask must hold unsigned integers, "
                        f"not {raw.dtype}"
                    )
            raw = np.ascontiguousarray(raw)
            raw.flags.writeable = False
            self._labels = raw
        return self._labels

    def _pixels(self) -> np.ndarray:
        return self._label_pixels() if self.labels else self.image.pixels()

    def _decode_segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        sh, sw = self.seg_shape
        return self._pixels()[sy * sh : (sy + 1) * sh, sx * sw : (sx + 1) * sw]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> npt.NDArray[np.uint8]:
        """Copy of the decoded pixels ``[y0:y1, x0:x1]`` (clipped)."""
        h, w = self.shape[:2]
        pix = self._pixels()
        if self.postprocess is not None:
            return self.postprocess(pix[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)].copy())
        return pix[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)].copy()
