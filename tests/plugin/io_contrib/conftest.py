"""Fixtures of the reader/writer/sample-data tests: real files written with tifffile.

``synthetic_slide`` is a small H&E-like pyramidal TIFF (3 levels in SubIFDs, JPEG tiles, mpp in
the resolution tags) with a CAMELYON-style sibling mask
``<name>_mask.tif`` at a quarter of its resolution, so alignment by physical extent is tested.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

MPP = 0.5
SLIDE_SHAPE = (768, 1024)  # level 0 (h, w): 3 levels of 256 px tiles
MASK_DOWNSAMPLE = 4
# tumor block in level-0 pixels (y0, y1, x0, x1): multiple of MASK_DOWNSAMPLE
TUMOR_BOX = (256, 512, 512, 768)


def he_like(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A pink/purple H&E-looking RGB image (stroma background with nuclei blobs)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.empty((h, w, 3), dtype=np.float32)
    img[...] = (236, 190, 214)
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2 < 1
    img[tissue] = (214, 140, 180)
    for _ in range(h * w // 2500):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(3, 8)
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r, h), max(cx - r, 0), min(cx + r, w)
        if tissue[cy, cx]:
            img[y0:y1, x0:x1] = (110, 60, 150)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f * f, img.shape[1] // f * f
    v = img[:h, :w].reshape(h // f, f, w // f, f, -1).mean(axis=(1, 3))
    return v.astype(np.uint8).reshape(h // f, w // f, *img.shape[2:])


def write_pyramid(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float | None,
    levels: int = 3,
    tile: int = 256,
    compression: str = "jpeg",
) -> Path:
    """Write a tiled pyramidal TIFF (SubIFDs) with mpp in the resolution tags."""
    import tifffile

    kw: dict = {
        "tile": (tile, tile),
        "photometric": "rgb" if image.ndim == 3 else "minisblack",
        "compression": compression,
    }
    extra: dict = {}
    if mpp is not None:
        extra = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        tw.write(image, subifds=levels - 1, metadata=None, **kw, **extra)
        cur = image
        for i in range(1, levels):
            cur = _downsample(cur, 2)
            ex = {}
            if mpp is not None:
                m = mpp * 2**i
                ex = {"resolution": (1e4 / m, 1e4 / m), "resolutionunit": "CENTIMETER"}
            tw.write(cur, subfiletype=1, metadata=None, **kw, **ex)
    return path


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``slide_a.tif`` (3 levels, 0.5 um/px) with ``slide_a_mask.tif`` at 1/4 resolution."""
    root = tmp_path_factory.mktemp("slides")
    path = write_pyramid(root / "slide_a.tif", he_like(SLIDE_SHAPE), mpp=MPP)
    mask = np.zeros(
        (SLIDE_SHAPE[0] // MASK_DOWNSAMPLE, SLIDE_SHAPE[1] // MASK_DOWNSAMPLE), dtype=np.uint8
    )
    y0, y1, x0, x1 = (v // MASK_DOWNSAMPLE for v in TUMOR_BOX)
    mask[y0:y1, x0:x1] = 1
    import tifffile

    tifffile.imwrite(
        root / "slide_a_mask.tif", mask, tile=(64, 64), compression="zlib", photometric="minisblack"
    )
    return path


@pytest.fixture(scope="session")
def plain_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-level pyramid with no mpp and no mask."""
    root = tmp_path_factory.mktemp("plain")
    return write_pyramid(root / "nompp.tif", he_like((512, 512), seed=3), mpp=None)


@pytest.fixture(scope="session")
def slide_spec() -> SimpleNamespace:
    """Constants of ``synthetic_slide`` (test modules cannot import conftest under importlib)."""
    return SimpleNamespace(
        mpp=MPP, shape=SLIDE_SHAPE, mask_downsample=MASK_DOWNSAMPLE, tumor_box=TUMOR_BOX
    )


@pytest.fixture(scope="session")
def pyramid_writer() -> Any:
    """:func:`write_pyramid`, for tests that need their own file."""
    return write_pyramid


@pytest.fixture(scope="session")
def he_image() -> Any:
    """:func:`he_like`, for tests that need their own H&E-like array."""
    return he_like
