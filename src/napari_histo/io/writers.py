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

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError
from napari_histo.io._atomic import atomic_path, remove_path
from napari_histo.io.geojson import write_geojson
from napari_histo.io.ome_zarr import (
    create_ome_zarr,
    downsample2,
    n_levels_for,
    write_ome_zarr,
)
from napari_histo.io.ome_zarr._store import _norm_mpp

__all__ = ["write_geojson", "write_ome_tiff", "write_ome_zarr"]

#: Bytes of source computed per dask call: bounded memory, chunks computed in parallel.
_STRIP_BYTES = 64 * 2**20


def _to_dask(a: Any, tile: int) -> da.Array:
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    chunks = (tile * 4, tile * 4) + arr.shape[2:]
    return da.from_array(arr, chunks=chunks)


def _pad(t: np.ndarray, tile: int) -> np.ndarray:
    if t.shape[0] != tile or t.shape[1] != tile:
        pad = [(0, tile - t.shape[0]), (0, tile - t.shape[1])] + [(0, 0)] * (t.ndim - 2)
        t = np.pad(t, pad)
    return np.ascontiguousarray(t)


def _strip_plan(arr: da.Array, tile: int) -> tuple[int, int]:
    """(rows, cols) of the strips to compute: full-width strips of whole source chunks when
    they fit the budget (every source chunk computed once), else one tile row in batches."""
    h, w = arr.shape[:2]
    px = arr.dtype.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    ch = arr.chunks[0][0]
    rows = tile * max(2, -(-ch // tile))
    rows += rows % (2 * tile)  # an even number of tiles: level-1 rows stay chunk-aligned
    if rows * w * px <= _STRIP_BYTES:
        return rows, w
    return tile, max(tile, tile * (_STRIP_BYTES // (tile * tile * px)))


def _tiles(
    arr: da.Array, tile: int, sink: Callable[[int, int, np.ndarray], None] | None = None
) -> Iterator[np.ndarray]:
    """Yield full-size tiles of ``arr`` in row-major order (edge tiles zero-padded).

    ``sink(y, x, strip)`` receives every computed strip (even offsets and sizes), which is how
    the next pyramid level is built from data already in memory.
    """
    h, w = arr.shape[:2]
    rows, cols = _strip_plan(arr, tile)
    for y in range(0, h, rows):
        if cols >= w:
            strip = np.asarray(arr[y : y + rows].compute())
            if sink is not None:
                sink(y, 0, strip)
            for ty in range(0, strip.shape[0], tile):
                for x in range(0, w, tile):
                    yield _pad(strip[ty : ty + tile, x : x + tile], tile)
            continue
        for x0 in range(0, w, cols):
            strip = np.asarray(arr[y : y + rows, x0 : x0 + cols].compute())
            if sink is not None:
                sink(y, x0, strip)
            for x in range(0, strip.shape[1], tile):
                yield _pad(strip[:, x : x + tile], tile)


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
    given = [base] + [_to_dask(a, tile).astype(dt) for a in lv[1:]]
    nl = len(lv) if len(lv) > 1 else levels or n_levels_for(base.shape[:2], tile, min_size=tile)
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
        # lower levels of a single dask array are built from the level-0 strips as they are
        # computed and spilled to a hidden zarr pyramid: the source is computed only once
        spill = tmp.parent / f"{tmp.name}.levels"
        try:
            big = base.size * dt.itemsize > 3 * 2**29  # 1.5 GB raw: keep clear of 4 GB offsets
            with tifffile.TiffWriter(tmp, bigtiff=big, ome=True) as tif:
                lower, sink = _lower_levels(given, nl, kind, tile, spill)
                for k in range(nl):
                    arr = given[0] if k == 0 else lower[k - 1]()
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
                        opts["subifds"] = nl - 1
                        opts["metadata"] = metadata
                    else:
                        opts["subfiletype"] = 1
                        opts["metadata"] = None
                    tif.write(_tiles(arr, tile, sink if k == 0 else None), **opts)
        finally:
            remove_path(spill)
    return Path(path)


def _lower_levels(
    given: list[da.Array], nl: int, kind: Literal["labels", "image"], tile: int, spill: Path
) -> tuple[list[Callable[[], da.Array]], Callable[[int, int, np.ndarray], None] | None]:
    """Sources of levels 1..nl-1 (as thunks, valid once level 0 is written) and the sink."""
    if len(given) > 1:
        return [functools.partial(_identity, a) for a in given[1:]], None
    if nl <= 1:
        return [], None
    base = given[0]
    h, w = base.shape[:2]
    shape1 = ((h + 1) // 2, (w + 1) // 2) + tuple(base.shape[2:])
    store = create_ome_zarr(
        spill,
        shape1,
        base.dtype,
        chunks=tile,
        kind=kind,
        n_levels=nl - 1,
        clevel=1,  # scratch data: speed over size
    )
    built = {"done": False}

    def sink(y: int, x: int, strip: np.ndarray) -> None:
        half = downsample2(np.moveaxis(strip, -1, 0), kind) if strip.ndim == 3 else None
        down = np.moveaxis(half, 0, -1) if half is not None else downsample2(strip, kind)
        store.write_block(y // 2, x // 2, down)

    def level(k: int) -> da.Array:
        if not built["done"]:
            store.build_pyramid()
            built["done"] = True
        return store.as_dask()[k]

    return [functools.partial(level, k) for k in range(nl - 1)], sink


def _identity(a: da.Array) -> da.Array:
    return a
