"""Writers: label masks, heatmaps and RGB images to OME-Zarr and pyramidal OME-TIFF.

Entry points
------------
* :func:`write_ome_zarr` (from :mod:`napari_histo.io.ome_zarr`): NGFF multiscales pyramid.
* :func:`write_ome_tiff`: tiled, compressed, pyramidal OME-TIFF (SubIFDs), written tile by tile
  from a generator so a dask input is never materialized.
* :func:`write_geojson` (from :mod:`napari_histo.io.geojson`): label mask -> QuPath polygons.

Every writer goes through :func:`napari_histo.io._atomic.atomic_path`: the output appears
only when complete, an existing output raises ``OutputExistsError`` unless ``overwrite``.

Data conventions: 2D ``(Y, X)`` labels (integer) or heatmaps (float), or channel-last
``(Y, X, 3)`` RGB uint8; a list of arrays is a ready multiscale (largest first, each level
half the previous). Pyramids: labels by striding, images by 2x2 means
(:func:`~napari_histo.io.ome_zarr.downsample2`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError
from napari_histo.io._atomic import atomic_path
from napari_histo.io.geojson import write_geojson
from napari_histo.io.ome_zarr import (
    _norm_mpp,
    downsample2_dask,
    n_levels_for,
    write_ome_zarr,
)

__all__ = ["write_geojson", "write_ome_tiff", "write_ome_zarr"]

#: Columns of tiles computed per dask call: a bounded strip, computed in parallel.
_TILES_PER_BATCH = 16


def _to_dask(a: Any, tile: int) -> da.Array:
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    chunks = (tile * 4, tile * 4) + arr.shape[2:]
    return da.from_array(arr, chunks=chunks)


def _tiles(arr: da.Array, tile: int) -> Iterator[np.ndarray]:
    """Yield full-size tiles of ``arr`` in row-major order (edge tiles zero-padded)."""
    h, w = arr.shape[:2]
    step = tile * _TILES_PER_BATCH
    for y in range(0, h, tile):
        for x0 in range(0, w, step):
            strip = np.asarray(arr[y : y + tile, x0 : x0 + step].compute())
            for x in range(0, strip.shape[1], tile):
                t = strip[:, x : x + tile]
                if t.shape[0] != tile or t.shape[1] != tile:
                    pad = [(0, tile - t.shape[0]), (0, tile - t.shape[1])] + [(0, 0)] * (t.ndim - 2)
                    t = np.pad(t, pad)
                yield np.ascontiguousarray(t)


def write_ome_tiff(
    path: str | Path,
    data: npt.ArrayLike | da.Array | Sequence[npt.ArrayLike | da.Array],
    *,
    mpp: float | Sequence[float] | None = None,
    kind: Literal["labels", "image"] = "labels",
    levels: int | None = None,
    tile: int = 256,
    compression: str = "zlib",
    quality: int = 90,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a tiled, compressed, pyramidal OME-TIFF (lower levels in SubIFDs).

    Parameters
    ----------
    data : 2D labels/heatmap or ``(Y, X, 3)`` RGB, numpy or dask, or a multiscale list.
    mpp : level-0 um/px (scalar or (y, x)): written as OME PhysicalSizeX/Y and TIFF resolution.
    kind : "labels" (strided pyramid, lossless only) or "image" (mean pyramid).
    levels : pyramid depth for a single array (default: until the largest side fits a tile).
    tile : tile size in pixels (multiple of 16).
    compression : "zlib", "zstd", "lzw", "jpeg" (uint8 images only), "none"...
    quality : JPEG quality.
    overwrite : replace an existing file.

    Returns
    -------
    Path
        ``path``, which appears only once complete.
    """
    import tifffile

    if tile % 16:
        msg = f"tile must be a multiple of 16, got {tile}"
        raise ConfigError(msg)
    lv = list(data) if isinstance(data, (list, tuple)) else [data]
    base = _to_dask(lv[0], tile)
    if base.dtype == bool:
        base = base.astype(np.uint8)
    if base.dtype == np.float16:  # OME-XML has no half float
        base = base.astype(np.float32)
    dt = np.dtype(base.dtype)
    if base.ndim == 3 and base.shape[-1] not in (3, 4):
        msg = f"OME-TIFF writer takes (Y, X) or (Y, X, 3|4) arrays, got shape {base.shape}"
        raise ConfigError(msg)
    comp = None if compression in ("none", None) else compression.lower()
    if comp == "jpeg" and (kind == "labels" or dt != np.uint8):
        msg = "JPEG is lossy and only for uint8 images; use zlib or zstd for labels and heatmaps"
        raise ConfigError(msg)
    if len(lv) > 1:
        pyramid = [base] + [_to_dask(a, tile).astype(dt) for a in lv[1:]]
    else:
        nl = levels or n_levels_for(base.shape[:2], tile, min_size=tile)
        pyramid = [base]
        for _ in range(nl - 1):
            pyramid.append(_pyramid_step(pyramid[-1], kind))
    m = _norm_mpp(mpp)
    rgb = base.ndim == 3
    photometric = "rgb" if rgb else "minisblack"
    compressionargs = {"level": quality} if comp == "jpeg" else None
    metadata: dict[str, Any] = {"axes": "YXS" if rgb else "YX"}
    if name:
        metadata["Name"] = name
    if m is not None:
        metadata.update(
            PhysicalSizeY=m[0], PhysicalSizeYUnit="µm", PhysicalSizeX=m[1], PhysicalSizeXUnit="µm"
        )
    with atomic_path(path, overwrite=overwrite) as tmp:
        big = base.size * dt.itemsize > 2**31
        with tifffile.TiffWriter(tmp, bigtiff=big, ome=True) as tif:
            for k, arr in enumerate(pyramid):
                opts: dict[str, Any] = {
                    "shape": arr.shape,
                    "dtype": dt,
                    "tile": (tile, tile),
                    "photometric": photometric,
                    "compression": comp,
                    "compressionargs": compressionargs,
                    "predictor": comp in ("zlib", "zstd", "lzw") and dt.itemsize > 1 or None,
                }
                if m is not None:
                    f = 2**k
                    opts["resolution"] = (1e4 / (m[1] * f), 1e4 / (m[0] * f))
                    opts["resolutionunit"] = "CENTIMETER"
                if k == 0:
                    opts["subifds"] = len(pyramid) - 1
                    opts["metadata"] = metadata
                else:
                    opts["subfiletype"] = 1
                    opts["metadata"] = None
                tif.write(_tiles(arr, tile), **opts)
    return Path(path)


def _pyramid_step(arr: da.Array, kind: str) -> da.Array:
    """Next pyramid level of a channel-last dask array (downsample2 works on the last 2 axes)."""
    if arr.ndim == 3:
        return downsample2_dask(arr.transpose(2, 0, 1), kind).transpose(1, 2, 0)
    return downsample2_dask(arr, kind)
