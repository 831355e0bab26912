"""Synthetic slides for samples, tests and benchmarks (written with tifffile, no network).

- :func:`write_synthetic_slide`: an H&E-looking pyramidal tiled TIFF (white background, pink
  stroma, purple nuclei, a denser "tumour" region) with mpp resolution tags, plus a sibling
  ``<name>_mask.tif`` whose label 1 is the tumour region. 4096 x 4096 takes about a second.
- :func:`write_slide_from_tiles`: a big pyramidal JPEG TIFF assembled from a small library of
  real tiles, streamed tile by tile (level 0 is never in memory; the library's JPEG bytes are
  written as they are, and lower levels are built per tile from downsampled library tiles).

Files are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.io._pyramid import block_mean2

__all__ = ["write_synthetic_slide", "write_slide_from_tiles", "synthetic_he"]

_STROMA = np.array([236, 178, 212], dtype=np.float32)
_NUCLEUS = np.array([92, 52, 150], dtype=np.float32)
_BACKGROUND = np.array([246, 244, 247], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Value noise in [0, 1]: random grid of ``cell`` px upsampled bilinearly."""
    from scipy.ndimage import zoom

    gh, gw = max(2, math.ceil(shape[0] / cell) + 1), max(2, math.ceil(shape[1] / cell) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    up = zoom(grid, (shape[0] / (gh - 1), shape[1] / (gw - 1)), order=1, prefilter=False)
    return up[: shape[0], : shape[1]]


def synthetic_he(
    shape: tuple[int, int], *, seed: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Return an H&E-like RGB image (H, W, 3) and its tumour mask (H, W) with labels 0/1.

    Everything is drawn at 1/4 resolution and upsampled (bilinear for the image, nearest for
    the mask) so that 4096 x 4096 takes well under a second.
    """
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(seed)
    s = 4  # nuclei field at 1/4 resolution: ~10-14 px nuclei after upsampling
    lh, lw = max(4, math.ceil(h / s)), max(4, math.ceil(w / s))
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    r = np.hypot((yy - lh / 2) / (0.42 * lh), (xx - lw / 2) / (0.45 * lw))
    tissue = r + _smooth_noise(rng, (lh, lw), max(8, lh // 6)) * 0.35 < 1.0
    tr = np.hypot((yy - 0.42 * lh) / (0.16 * lh), (xx - 0.58 * lw) / (0.14 * lw))
    tumor = (tr + _smooth_noise(rng, (lh, lw), max(8, lh // 12)) * 0.5 < 1.0) & tissue
    # nuclei: sparse seeds blurred into soft round blobs; denser and larger in the tumour
    seeds = rng.random((lh, lw), dtype=np.float32) < np.where(tumor, 0.035, 0.008)
    sigma = 1.1
    blob = gaussian_filter(seeds.astype(np.float32), sigma) * (2 * np.pi * sigma**2 * 1.6)
    nuclei = np.clip(blob, 0, 1) * tissue
    shade = 0.9 + 0.1 * _smooth_noise(rng, (lh, lw), max(8, lh // 20))
    shade = np.where(tumor, shade * 0.93, shade)  # tumour cytoplasm a little darker
    tis = tissue.astype(np.float32)[..., None]
    cell = _STROMA * shade[..., None] * (1 - nuclei[..., None]) + _NUCLEUS * nuclei[..., None]
    low = _BACKGROUND * (1 - tis) + cell * tis
    low += rng.normal(0, 5, size=(lh, lw, 1)).astype(np.float32)  # grain, before upsampling
    low8 = np.clip(low, 0, 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(low8).resize((w, h), Image.Resampling.BILINEAR))
    mask = np.repeat(np.repeat(tumor.astype(np.uint8), s, axis=0), s, axis=1)[:h, :w]
    return rgb, np.ascontiguousarray(mask)


def _downsample2(a: np.ndarray) -> np.ndarray:
    """Half size: labels by striding (never average class indices), RGB by 2x2 means."""
    h, w = a.shape[0] // 2, a.shape[1] // 2
    if a.ndim == 2:
        return a[: 2 * h : 2, : 2 * w : 2].copy()
    return block_mean2(a[: 2 * h, : 2 * w], h, w)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _compression_args(compression: str | None, quality: int) -> dict[str, Any]:
    c = (compression or "none").lower()
    if c in ("none", "raw"):
        return {"compression": None}
    if c == "jpeg":
        return {"compression": "jpeg", "compressionargs": {"level": quality}}
    if c in ("jpeg2000", "j2k"):
        return {"compression": "jpeg2000", "compressionargs": {"level": quality}}
    if c in ("deflate", "zlib"):
        return {"compression": "zlib"}
    if c == "webp":
        return {"compression": "webp", "compressionargs": {"level": quality}}
    raise ValueError(f"unknown compression {compression!r}")


def _write_pyramid(
    path: Path,
    levels: list[np.ndarray],
    *,
    tile: int,
    mpp: float | None,
    compression: str | None,
    quality: int = 90,
    layout: str = "subifds",
    description: str | None = None,
) -> None:
    import tifffile

    comp = _compression_args(compression, quality)
    tmp = _tmp(path)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=levels[0].nbytes > 2**31) as tw:
            for i, arr in enumerate(levels):
                dsx = levels[0].shape[1] / arr.shape[1]
                dsy = levels[0].shape[0] / arr.shape[0]
                kw: dict[str, Any] = {}
                if mpp:
                    kw = {"resolution": (1e4 / (mpp * dsx), 1e4 / (mpp * dsy)),
                          "resolutionunit": "CENTIMETER"}
                rgb = arr.ndim == 3
                t = tile if min(arr.shape[:2]) >= 16 else None
                extra: dict[str, Any] = {}
                if i == 0:
                    if layout == "subifds" and len(levels) > 1:
                        extra["subifds"] = len(levels) - 1
                    if description:
                        extra["description"] = description
                else:
                    extra["subfiletype"] = 1
                tw.write(
                    arr,
                    photometric="rgb" if rgb else "minisblack",
                    tile=(t, t) if t else None,
                    metadata=None,
                    maxworkers=os.cpu_count() or 1,
                    **(comp if rgb else {"compression": "zlib"}),
                    **kw,
                    **extra,
                )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_synthetic_slide(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int] = (4096, 4096),
    tile: int = 256,
    levels: int = 3,
    mpp: float | None = 0.5,
    compression: str | None = "jpeg",
    seed: int = 0,
    with_mask: bool = True,
    layout: str = "subifds",
    quality: int = 90,
    mask_downsample: int = 1,
) -> tuple[Path, Path | None]:
    """Write an H&E-like pyramidal tiled TIFF and (optionally) its ``<name>_mask.tif``.

    Parameters
    ----------
    path
        Output ``.tif`` path.
    shape
        Level-0 (height, width).
    tile
        Tile side in pixels.
    levels
        Number of pyramid levels (each half the size of the previous).
    mpp
        Level-0 microns per pixel written as resolution tags (None: no tags).
    compression
        ``"jpeg"``, ``"jpeg2000"``, ``"deflate"``, ``"webp"`` or None.
    layout
        ``"subifds"`` (levels as SubIFDs, OME/modern style) or ``"pages"`` (levels as
        successive pages, CAMELYON16/Aperio style).
    mask_downsample
        Write the mask at 1/``mask_downsample`` of the slide's resolution (CAMELYON masks are
        often stored at a lower level; the reader aligns them by physical extent).

    Returns
    -------
    (slide path, mask path or None)
    """
    path = Path(path)
    rgb, mask = synthetic_he(shape, seed=seed)
    pyr = [rgb]
    for _ in range(max(1, levels) - 1):
        pyr.append(_downsample2(pyr[-1]))
    _write_pyramid(path, pyr, tile=tile, mpp=mpp, compression=compression, quality=quality,
                   layout=layout, description="napari-histo synthetic H&E slide")
    if not with_mask:
        return path, None
    mask_path = path.with_name(f"{path.stem}_mask.tif")
    m = mask[::mask_downsample, ::mask_downsample] if mask_downsample > 1 else mask
    mpyr = [m]
    for _ in range(max(1, levels) - 1):
        if min(mpyr[-1].shape) < 2 * tile:
            break
        mpyr.append(_downsample2(mpyr[-1]))
    _write_pyramid(mask_path, mpyr, tile=tile, mpp=(mpp * mask_downsample) if mpp else None,
                   compression=None, layout=layout)
    return path, mask_path


def write_slide_from_tiles(
    path: str | os.PathLike[str],
    tiles: Sequence[npt.NDArray[np.uint8]],
    shape: tuple[int, int],
    *,
    layout: Callable[[int, int], int] | npt.NDArray[np.integer[Any]] | None = None,
    tile: int | None = None,
    mpp: float | None = 0.25,
    quality: int = 90,
    min_side: int = 1024,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a big JPEG-tiled pyramidal TIFF made of ``tiles``, streaming tile by tile.

    Level 0 places library tile ``layout[ty, tx]`` at tile position (ty, tx); each library
    tile is JPEG-encoded once and its bytes are reused wherever it appears, so writing is
    I/O bound. Lower levels (halving until the longer side is <= ``min_side``) are built per
    tile from 2^k block-averaged library tiles (the exact block mean of level 0).

    Parameters
    ----------
    tiles
        Library of (tile, tile, 3) uint8 RGB tiles.
    shape
        Level-0 (height, width); need not be a multiple of the tile size.
    layout
        (rows, cols) int array or ``f(ty, tx) -> index``; default: random (``seed``).
    progress
        Called as ``progress(tiles_written, tiles_total)``.
    """
    import imagecodecs
    import tifffile

    path = Path(path)
    lib = [np.ascontiguousarray(t[..., :3], dtype=np.uint8) for t in tiles]
    if not lib:
        raise ValueError("tiles is empty")
    ts = tile or lib[0].shape[0]
    if any(t.shape[:2] != (ts, ts) for t in lib):
        raise ValueError(f"all library tiles must be {ts}x{ts}")
    h, w = int(shape[0]), int(shape[1])
    gy, gx = math.ceil(h / ts), math.ceil(w / ts)
    if layout is None:
        grid = np.random.default_rng(seed).integers(0, len(lib), size=(gy, gx), dtype=np.int32)
    elif callable(layout):
        grid = np.array([[layout(y, x) for x in range(gx)] for y in range(gy)], dtype=np.int32)
    else:
        grid = np.asarray(layout, dtype=np.int32)[:gy, :gx]
    shapes = [(h, w)]
    while max(shapes[-1]) > min_side:
        ph, pw = shapes[-1]
        shapes.append((max(1, ph // 2), max(1, pw // 2)))
    nlev = len(shapes)
    encoded = [imagecodecs.jpeg_encode(t, level=quality) for t in lib]
    total = sum(math.ceil(sh / ts) * math.ceil(sw / ts) for sh, sw in shapes)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None and done[0] % 1024 == 0:
            progress(done[0], total)

    def level0() -> Iterator[bytes]:
        for ty in range(gy):
            for tx in range(gx):
                tick()
                yield bytes(encoded[int(grid[ty, tx])])

    halved: dict[int, list[np.ndarray]] = {0: [t.astype(np.float32) for t in lib]}

    def small_tiles(k: int) -> list[np.ndarray] | None:
        # library tiles block-averaged by 2**k (float32, exact means), built level by level
        if ts % (2**k):
            return None
        if k not in halved:
            prev = small_tiles(k - 1)
            assert prev is not None
            halved[k] = [(a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * 0.25
                         for a in prev]
            halved.pop(k - 2, None)
        return halved[k]

    def level_k(k: int) -> Iterator[bytes]:
        f = 2**k
        small = small_tiles(k)
        lh, lw = shapes[k]
        for ty in range(math.ceil(lh / ts)):
            for tx in range(math.ceil(lw / ts)):
                out = np.full((ts, ts, 3), 255.0, dtype=np.float32)
                for i in range(f):
                    sy = ty * f + i
                    if sy >= gy:
                        break
                    for j in range(f):
                        sx = tx * f + j
                        if sx >= gx:
                            break
                        idx = int(grid[sy, sx])
                        part = small[idx] if small is not None else _resize(lib[idx], ts // f)
                        out[i * (ts // f) : (i + 1) * (ts // f), j * (ts // f) : (j + 1) * (ts // f)] = part
                tick()
                yield bytes(imagecodecs.jpeg_encode(np.clip(out + 0.5, 0, 255).astype(np.uint8), level=quality))

    tmp = _tmp(path)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            for k, (lh, lw) in enumerate(shapes):
                ds = 2**k
                kw: dict[str, Any] = {}
                if mpp:
                    kw = {"resolution": (1e4 / (mpp * ds), 1e4 / (mpp * ds)),
                          "resolutionunit": "CENTIMETER"}
                tw.write(
                    level0() if k == 0 else level_k(k),
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    tile=(ts, ts),
                    photometric="rgb",
                    compression="jpeg",
                    subfiletype=0 if k == 0 else 1,
                    subifds=nlev - 1 if k == 0 and nlev > 1 else None,
                    metadata=None,
                    description="napari-histo tiled slide" if k == 0 else None,
                    **kw,
                )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _resize(t: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(t).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
