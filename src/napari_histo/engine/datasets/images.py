"""Reading images and masks from disk with clear errors, and resampling to a target mpp."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError, one_line
from napari_histo.core.limits import check_decode, check_image_size, check_regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
G = TypeVar("G", bound=np.generic)


def read_image(path: str | Path, *, mask: bool = False) -> npt.NDArray[np.uint8]:
    """Read an RGB image (H, W, 3) uint8, or a mask (H, W), dropping alpha.

    Raises
    ------
    DataError
        The file cannot be decoded, or has an unusable shape or dtype.
    """
    path = Path(path)
    what = f"{'mask' if mask else 'image'} {path}"
    check_regular_file(path, what=what, error=DataError)  # a named pipe would block a read
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                shape = tif.series[0].shape if tif.series else (0, 0)
                # sized from the header before anything is decoded (a bomb claims 1e6 x 1e6)
                check_image_size(shape[0], shape[1] if len(shape) > 1 else 1, what,
                                 error=DataError)
                check_decode(shape[0], shape[1] if len(shape) > 1 else 1, what,
                             channels=int(np.prod(shape[2:])) if len(shape) > 2 else 1,
                             error=DataError, hint="train from tiles or a pyramidal slide")
                arr = tif.asarray()
        else:
            from PIL import Image

            with Image.open(path) as im:
                check_decode(im.size[1], im.size[0], what, error=DataError,
                             hint="train from tiles or a pyramidal slide")
                if mask:
                    arr = np.asarray(im if im.mode in ("L", "P", "I", "I;16", "1") else im.convert("RGB"))
                else:
                    arr = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read {what}: {one_line(err, 200)}") from err
    arr = np.asarray(arr)
    if mask:
        if arr.ndim == 3:
            if arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                          and np.array_equal(arr[..., 0], arr[..., 2])):
                raise DataError(f"mask {path} is a colour image; save masks as grayscale class "
                                "indices (0 = background) or black/white")
            arr = arr[..., 0]
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if arr.ndim != 2:
            raise DataError(f"mask {path} has shape {arr.shape}; expected (H, W)")
        return np.ascontiguousarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DataError(f"image {path} has shape {arr.shape}; expected an RGB image")
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        else:
            raise DataError(f"image {path} has dtype {arr.dtype}; expected 8-bit RGB")
    return np.ascontiguousarray(arr[..., :3])


def resize_image(img: npt.NDArray[np.uint8], scale: float) -> npt.NDArray[np.uint8]:
    """Resample an RGB uint8 image by ``scale`` (< 1 shrinks) with area averaging."""
    if abs(scale - 1.0) < 1e-3:
        return img
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize(size, resample))


def resize_labels(lab: npt.NDArray[G], scale: float) -> npt.NDArray[G]:
    """Resample a label/weight map by ``scale`` with nearest neighbour (keeps class values)."""
    if abs(scale - 1.0) < 1e-3:
        return lab
    h, w = lab.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    yy = np.minimum(((np.arange(nh) + 0.5) / scale).astype(np.int64), h - 1)
    xx = np.minimum(((np.arange(nw) + 0.5) / scale).astype(np.int64), w - 1)
    return lab[yy[:, None], xx[None, :]]


def mask_to_classes(mask: npt.NDArray[np.number], source: str, *, max_classes: int = 64,
                    ignore_index: int = 255, allow_ignore: bool = False) -> npt.NDArray[np.uint8]:
    """Map a mask's values to class indices: 0/255 (or 0/1) -> 0/1; small integers kept.

    Raises
    ------
    DataError
        Values that are neither binary nor class indices (e.g. a JPEG-compressed mask).
    """
    values = np.unique(mask)
    if values.size and (values.min() < 0):
        raise DataError(f"mask {source} has negative values; expected 0 = background, >0 = class")
    vals = set(int(v) for v in values)
    if allow_ignore:
        vals.discard(ignore_index)
        if vals <= {0, 1} or not vals:
            return mask.astype(np.uint8)
    if vals <= {0, 255} or vals <= {0, 1}:
        return (mask > 0).astype(np.uint8)
    if max(vals) < max_classes:
        return mask.astype(np.uint8)
    shown = sorted(vals)[:8]
    raise DataError(
        f"mask {source} has unexpected values {shown}{'...' if len(vals) > 8 else ''}: expected "
        f"0/255 (black/white) or class indices 0..{max_classes - 1}; lossy (JPEG) masks are not "
        "supported")
