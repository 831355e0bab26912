"""Array-backed levels (zarr arrays, tifffile zarr stores) and the OME-Zarr (NGFF 0.4/0.5) source.

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

from napari_histo.core.errors import SlideOpenError, reading
from napari_histo.core.limits import MPP_RANGE, check_decode, check_image_size
from napari_histo.io._cache import TileCache
from napari_histo.io._image import to_rgb8
from napari_histo.io._pyramid import LevelArray, filler

__all__ = ["ArrayLevel", "open_ome_zarr", "ngff_multiscales"]

_UNIT_UM = {
    "micrometer": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0, "nanometer": 1e-3, "nm": 1e-3,
    "millimeter": 1e3, "mm": 1e3, "centimeter": 1e4, "cm": 1e4, "meter": 1e6, "m": 1e6,
    "angstrom": 1e-4,
}


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


def ngff_multiscales(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The ``multiscales`` list of NGFF 0.5 (``attrs['ome']``) or 0.4 (top level) metadata."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return list(ome["multiscales"]), str(ome.get("version", "0.5"))
    ms = attrs.get("multiscales")
    if ms:
        return list(ms), str(ms[0].get("version", "0.4"))
    return [], None


def _open_group(path: Path) -> Any:
    import zarr

    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as err:
        raise SlideOpenError(f"{path.name}: not a readable zarr group ({err})") from err


def open_ome_zarr(
    path: Path, *, cache: TileCache | None, key: Any, labels: bool = False
) -> tuple[list[ArrayLevel], list[tuple[float, float]], dict[str, Any]]:
    """Open an OME-Zarr image: (levels, per-level downsample (y, x), metadata dict).

    Raises
    ------
    SlideOpenError
        Not an NGFF image, malformed metadata, or array sizes beyond
        :mod:`napari_histo.core.limits` (refused from the metadata, nothing is read).
    """
    with reading(f"{path.name}: OME-Zarr metadata", SlideOpenError):
        return _open_ome_zarr(path, cache=cache, key=key, labels=labels)


def _positive(v: Any) -> float | None:
    """``v`` as a finite float > 0, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _open_ome_zarr(
    path: Path, *, cache: TileCache | None, key: Any, labels: bool = False
) -> tuple[list[ArrayLevel], list[tuple[float, float]], dict[str, Any]]:
    grp = _open_group(path)
    attrs = dict(grp.attrs)
    multiscales, version = ngff_multiscales(attrs)
    if not multiscales:
        raise SlideOpenError(
            f"{path.name}: zarr group without NGFF 'multiscales' metadata; "
            "expected an OME-Zarr image (NGFF 0.4 or 0.5)"
        )
    ms = multiscales[0]
    if not isinstance(ms, dict) or not isinstance(ms.get("datasets"), list) or not ms["datasets"]:
        raise SlideOpenError(f"{path.name}: NGFF 'multiscales' has no 'datasets' list")
    if len(ms["datasets"]) > 64:
        raise SlideOpenError(f"{path.name}: NGFF metadata lists {len(ms['datasets'])} "
                             "resolution levels (at most 64 are read)")
    raw_axes = ms.get("axes") or ["t", "c", "z", "y", "x"][-len(grp[ms["datasets"][0]["path"]].shape):]
    names, units = [], []
    for ax in raw_axes:
        if isinstance(ax, dict):
            names.append(str(ax.get("name", "?"))[:1].upper())
            units.append(ax.get("unit"))
        else:
            names.append(str(ax)[:1].upper())
            units.append(None)
    axes = "".join(names)
    levels: list[ArrayLevel] = []
    scales: list[list[float] | None] = []
    for i, ds in enumerate(ms["datasets"]):
        try:
            arr = grp[ds["path"]]
        except KeyError as err:
            raise SlideOpenError(f"{path.name}: dataset {ds['path']!r} is missing") from err
        levels.append(
            ArrayLevel(arr, axes, cache=cache, key=(key, i), name=f"{path.name} level {i}",
                       labels=labels)
        )
        scale: list[float] | None = None
        for tr in ds.get("coordinateTransformations", []) or []:
            if isinstance(tr, dict) and tr.get("type") == "scale":
                # a scale that is not a positive finite number is treated as unknown
                vals = [_positive(v) for v in tr.get("scale") or []]
                good = [v for v in vals if v is not None]
                scale = good if len(vals) == len(good) == len(axes) else None
        scales.append(scale)
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
    mpp = None
    if scales[0] is not None:
        uy, ux = units[yi], units[xi]
        fy = _UNIT_UM.get(str(uy).lower()) if uy else 1.0  # NGFF unit is optional: assume um
        fx = _UNIT_UM.get(str(ux).lower()) if ux else 1.0
        if fy and fx and (uy or ux or scales[0][yi] != 1.0):
            mpp = (scales[0][yi] * fy, scales[0][xi] * fx)
            if not all(MPP_RANGE[0] <= v <= MPP_RANGE[1] for v in mpp):
                mpp = None  # not a microscope's resolution: unknown rather than absurd
    props = {"ngff.version": version, "ngff.axes": axes, "ngff.name": ms.get("name")}
    arr0 = grp[ms["datasets"][0]["path"]]
    props["zarr.dtype"] = str(arr0.dtype)
    meta = {"format": "ome-zarr", "vendor": None, "mpp": mpp, "objective_power": None,
            "properties": props, "source_dtype": str(arr0.dtype)}
    return levels, downs, meta
