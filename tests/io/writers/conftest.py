"""Fixtures for writer tests: small label masks, RGB tissue and float heatmaps (numpy and dask)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest


@pytest.fixture(scope="session")
def labels() -> np.ndarray:
    """(600, 700) uint8 labels with 3 classes in blobs (odd-free, non-square shape)."""
    from skimage.data import binary_blobs

    a = binary_blobs(700, blob_size_fraction=0.08, volume_fraction=0.4, rng=1)[:600]
    b = binary_blobs(700, blob_size_fraction=0.05, volume_fraction=0.2, rng=2)[:600]
    return (a.astype(np.uint8) + 2 * (b & ~a)).astype(np.uint8)


@pytest.fixture(scope="session")
def rgb(shared_data: Path) -> np.ndarray:
    """Real H&E tissue, (1000, 1000, 3) uint8."""
    from PIL import Image

    img = Image.open(shared_data / "stain_tiles" / "tiatoolbox" / "target_image.png")
    return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="session")
def heatmap() -> np.ndarray:
    """(513, 389) float32 probabilities, odd sizes on purpose."""
    y, x = np.mgrid[0:513, 0:389]
    return (0.5 + 0.5 * np.sin(y / 40.0) * np.cos(x / 25.0)).astype(np.float32)


def failing_dask(shape: tuple[int, ...], chunks: tuple[int, ...], bad_block: int) -> da.Array:
    """A dask array whose ``bad_block``-th computed block raises, to simulate a crash mid-write."""
    counter = {"n": 0}

    def make(block_info=None):  # noqa: ANN001, ANN202
        counter["n"] += 1
        if counter["n"] == bad_block:
            raise RuntimeError("simulated crash while writing")
        return np.ones(block_info[None]["chunk-shape"], dtype=np.uint8)

    return da.map_blocks(make, chunks=da.core.normalize_chunks(chunks, shape), dtype=np.uint8)


@pytest.fixture
def make_failing_dask():  # noqa: ANN201
    """Factory of dask arrays that raise on one block (see :func:`failing_dask`)."""
    return failing_dask
