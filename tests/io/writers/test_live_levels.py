"""Pyramid levels kept up to date block by block equal a one-shot pyramid (issue 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_histo.io.ome_zarr import add_levels, grow_pyramid, pyramid_depth, update_levels


def _group(path: Path, data: np.ndarray, chunk: int) -> zarr.Group:
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = g.create_array("0", shape=data.shape, chunks=(chunk,) * data.ndim, dtype=data.dtype,
                         fill_value=0)
    g.attrs["multiscales"] = [{"version": "0.4", "name": "x",
                               "axes": [{"name": "y", "type": "space"},
                                        {"name": "x", "type": "space"}],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [1.0, 1.0]}]}]}]
    del arr
    return g


@pytest.mark.parametrize("kind,dtype", [("image", np.float16), ("labels", np.uint8)])
def test_block_by_block_levels_equal_grown_pyramid(tmp_path: Path, kind: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    shape, chunk = (300, 470), 32  # odd level sizes on the way down, many levels
    data = (rng.random(shape) * (3 if kind == "labels" else 1)).astype(dtype)
    ref = _group(tmp_path / "ref.zarr", data, chunk)
    ref["0"][...] = data
    n = grow_pyramid(ref, kind, min_side=32)
    live = _group(tmp_path / "live.zarr", data, chunk)
    assert add_levels(live, min_side=32) == n == pyramid_depth(shape, 32) == 5
    assert len(live.attrs["multiscales"][0]["datasets"]) == n
    levels = [live[str(k)] for k in range(n)]
    boxes = [(y, x, min(y + chunk, shape[0]), min(x + chunk, shape[1]))
             for y in range(0, shape[0], chunk) for x in range(0, shape[1], chunk)]
    for i in rng.permutation(len(boxes)):  # any order, as blocks finish
        y0, x0, y1, x1 = boxes[i]
        levels[0][y0:y1, x0:x1] = data[y0:y1, x0:x1]
        update_levels(levels, kind, boxes[i])
    for k in range(1, n):
        assert live[str(k)].shape == ref[str(k)].shape
        np.testing.assert_array_equal(live[str(k)][...], ref[str(k)][...])


def test_lower_levels_fill_as_blocks_land(tmp_path: Path) -> None:
    """After one block, the overview shows it (and nothing else)."""
    data = np.ones((512, 512), np.float16)
    g = _group(tmp_path / "g.zarr", data, 128)
    n = add_levels(g)
    levels = [g[str(k)] for k in range(n)]
    levels[0][0:128, 0:128] = data[:128, :128]
    update_levels(levels, "image", (0, 0, 128, 128))
    top = np.asarray(levels[-1][...])
    f = 2 ** (n - 1)
    assert top[: 128 // f, : 128 // f].min() == 1
    assert top[128 // f:, :].max() == 0 and top[:, 128 // f:].max() == 0
