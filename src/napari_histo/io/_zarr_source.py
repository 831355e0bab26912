"""Array-backed levels (zarr arrays, tifffile zarr stores) and OME-Zarr images as slides.

:class:`ArrayLevel` adapts any sliceable array with named axes (``"TCZYX"``, ``"YXS"``...) to
the (Y, X, 3) uint8 level interface: T/Z take index 0, up to 4 channels become RGB(A) and the
RGB policy of :mod:`napari_histo.io._image` applies, one zarr chunk at a time.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError, SlideOpenError, reading
from napari_histo.core.limits import check_decode, check_image_size, one_line
from napari_histo.io._cache import TileCache
from napari_histo.io._image import to_rgb8
from napari_histo.io._pyramid import LevelArray, filler
from napari_histo.io.ome_zarr import OmeZarrStore, open_ome_zarr
from napari_histo.io.ome_zarr._store import physical_mpp
from napari_histo.io.slide_parts import SlideParts

__all__ = ["ArrayLevel", "ngff_slide_parts"]


class ArrayLevel(LevelArray):
    """A level read from a sliceable array with named ``axes`` (must contain Y and X).

    Parameters
    ----------
    array
        zarr array (or anything with ``shape``, ``dtype``, ``__getitem__``; ``chunks`` used
        when present).
    axes
        One letter per dimension; C or S is the channel axis, other letters take index 0.
    """

    unit = "chunk"

    def __init__(
        self,
        array: Any,
        axes: str,
        *,
        cache: TileCache | None,
        key: Any,
        name: str,
        labels: bool = False,
    ) -> None:
        axes = axes.upper()
        if len(axes) != len(array.shape) or "Y" not in axes or "X" not in axes:
            raise SlideOpenError(f"{name}: unsupported axes {axes!r} for shape {array.shape}")
        self.array = array
        self.axes = axes
        self.name = name
        yi, xi = axes.index("Y"), axes.index("X")
        check_image_size(array.shape[yi], array.shape[xi], name, error=SlideOpenError)
        chunks = getattr(array, "chunks", None) or array.shape
        if not isinstance(chunks[0], int):  # dask-style chunks
            chunks = tuple(c[0] for c in chunks)
        # a chunk is decoded whole, with every plane (T, Z, C) it holds: budget all of it
        others = 1
        for i, c in enumerate(chunks[: len(axes)]):
            if i not in (yi, xi):
                others *= max(1, min(int(c), int(array.shape[i])))
                if others > 1024:
                    raise SlideOpenError(f"{name}: a chunk holds {others}+ planes besides Y/X; "
                                         "the array is not an image napari-histo reads")
        check_decode(min(int(chunks[yi]), int(array.shape[yi])),
                     min(int(chunks[xi]), int(array.shape[xi])), f"{name} (chunk)",
                     channels=others, itemsize=np.dtype(array.dtype).itemsize,
                     error=SlideOpenError, hint="the store is corrupt, or re-chunk it")
        self.labels = labels
        extra: dict[str, Any] = {}
        if labels:
            dt = np.dtype(array.dtype)
            if dt.kind not in "ub":
                raise SlideOpenError(f"{name}: a label mask must hold unsigned integers, not {dt}")
            extra = {"channels": None, "dtype": np.uint8 if dt.kind == "b" else dt, "fill": 0}
        super().__init__(
            array.shape[yi], array.shape[xi], (chunks[yi], chunks[xi]), cache=cache, key=key,
            name=name, **extra,
        )
        self._cax = next((i for i, a in enumerate(axes) if a in "CS"), None)
        nchan = array.shape[self._cax] if self._cax is not None else 1
        self._nchan = min(int(nchan), 4)

    def _decode_segment(self, sy: int, sx: int) -> npt.NDArray[np.uint8]:
        sh, sw = self.seg_shape
        y0, x0 = sy * sh, sx * sw
        y1, x1 = min(self.shape[0], y0 + sh), min(self.shape[1], x0 + sw)
        index: list[Any] = []
        order: list[str] = []
        for a in self.axes:
            if a == "Y":
                index.append(slice(y0, y1))
                order.append("Y")
            elif a == "X":
                index.append(slice(x0, x1))
                order.append("X")
            elif a in "CS":
                index.append(slice(0, self._nchan))
                order.append("C")
            else:
                index.append(0)
        try:
            raw = np.asarray(self.array[tuple(index)])
            if "C" in order:
                raw = np.moveaxis(raw, order.index("C"), -1)
                if order.index("Y") > order.index("X"):
                    raw = raw.swapaxes(0, 1)
            elif order.index("Y") > order.index("X"):
                raw = raw.T
            if self.labels:
                lab = raw[..., 0] if raw.ndim == 3 else raw
                return np.ascontiguousarray(lab, dtype=self.dtype)
            if self._nchan == 2 and raw.ndim == 3:  # 2 channels are not gray+alpha here
                raw = raw[..., :1]
            return to_rgb8(raw)
        except Exception as err:  # a corrupt chunk must not take the slide down
            if self.cache is not None:  # counted even once served from the cache
                self.cache.record_failure((self.key, sy, sx), str(err))
            warnings.warn(
                f"{self.name}: chunk (row {sy}, column {sx}) could not be read ({err}); "
                "shown as white",
                stacklevel=2,
            )
            return filler(self, y1 - y0, x1 - x0)


def ngff_slide_parts(
    path: Path, *, cache: TileCache | None, key: Any, labels: bool = False
) -> SlideParts:
    """An OME-Zarr image as slide parts (levels, per-level downsample (y, x), metadata).

    Opened and parsed by :func:`napari_histo.io.ome_zarr.open_ome_zarr` (the one opener);
    this only adapts its arrays to slide levels.

    Raises
    ------
    SlideOpenError
        Not an NGFF image, malformed metadata, or array sizes beyond
        :mod:`napari_histo.core.limits` (refused from the metadata, nothing is read).
    """
    with reading(f"{path.name}: OME-Zarr metadata", SlideOpenError):
        try:
            store = open_ome_zarr(path)
        except DataError as err:
            raise SlideOpenError(one_line(err, 300)) from None
        return _parts(path, store, cache=cache, key=key, labels=labels)


def _parts(
    path: Path, store: OmeZarrStore, *, cache: TileCache | None, key: Any, labels: bool
) -> SlideParts:
    axes = store.axes
    levels = [
        ArrayLevel(arr, axes, cache=cache, key=(key, i), name=f"{path.name} level {i}",
                   labels=labels)
        for i, arr in enumerate(store.levels)
    ]
    scales = store.scales
    yi, xi = axes.index("Y"), axes.index("X")
    downs: list[tuple[float, float]] = []
    for lvl, sc in zip(levels, scales, strict=False):
        by_shape = (levels[0].shape[0] / lvl.shape[0], levels[0].shape[1] / lvl.shape[1])
        if sc is not None and scales[0] is not None:
            d = (sc[yi] / scales[0][yi], sc[xi] / scales[0][xi])
            # a scale contradicting the array sizes by more than 2x is not trusted
            ok = all(math.isfinite(v) and 0.5 <= v / s <= 2.0 for v, s in zip(d, by_shape,
                                                                              strict=True))
            downs.append(d if ok else by_shape)
        else:
            downs.append(by_shape)
    mpp = physical_mpp(axes, store.units, scales[0], assume_um=True)
    props: dict[str, Any] = {"ngff.version": store.version, "ngff.axes": axes,
                             "ngff.name": store.multiscales.get("name")}
    arr0 = store.levels[0]
    props["zarr.dtype"] = str(arr0.dtype)
    return SlideParts(format="ome-zarr", levels=levels, downsamples=downs, mpp=mpp,
                      properties=props, source_dtype=str(arr0.dtype))
