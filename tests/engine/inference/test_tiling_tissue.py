"""Tile geometry, blending weights, nearest-first order, and tissue detection."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histo.core.errors import ConfigError
from napari_histo.engine.tiling import BlockLayout, order_blocks, ramp_1d
from napari_histo.engine.tissue import tissue_map, tissue_mask


def test_ramp_is_a_partition_of_unity_on_the_stride_grid() -> None:
    tile, overlap = 96, 32
    w = ramp_1d(tile, overlap)
    s = tile - overlap
    np.testing.assert_allclose(w[s:] + w[:overlap], 1.0, atol=2e-3)  # 1e-3 floor
    assert w[overlap:s].min() == 1.0


def test_blocks_cover_the_image_exactly_once() -> None:
    lay = BlockLayout((500, 333), tile=64, overlap=16, block_tiles=3)
    cover = np.zeros(lay.shape, int)
    for b in lay.blocks():
        y0, x0, y1, x1 = lay.block_box(*b)
        cover[y0:y1, x0:x1] += 1
        ry0, rx0, ry1, rx1 = lay.read_box(*b)
        assert (ry0, rx0) == (y0 - 8, x0 - 8)
        for off in lay.tile_offsets(*b):  # every tile lies inside the read box
            assert off[0] + 64 <= ry1 - ry0 and off[1] + 64 <= rx1 - rx0
    assert (cover == 1).all()


def test_bad_layouts_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        BlockLayout((10, 10), tile=64, overlap=64)
    with pytest.raises(ConfigError):
        BlockLayout((10, 10), tile=64, overlap=7)


def test_nearest_first_order() -> None:
    lay = BlockLayout((1000, 1000), tile=128, overlap=0, block_tiles=1)
    blocks = lay.blocks()
    boxes = [lay.block_box(*b) for b in blocks]
    order = order_blocks(blocks, boxes, (700, 300))
    assert blocks[order[0]] == (5, 2)
    d = [abs(boxes[i][0] + 64 - 700) + abs(boxes[i][1] + 64 - 300) for i in order]
    assert d[0] <= d[5] <= d[-1]
    assert order_blocks(blocks, boxes, None) == list(range(len(blocks)))


def test_tissue_on_real_slide_and_blank(shared_data) -> None:
    from napari_histo.io.slide import open_slide

    with open_slide(shared_data / "wsi" / "CMU-1-Small-Region.svs") as slide:
        tm = tissue_map(slide, max_side=512)
    assert 0.2 < tm.fraction_total < 0.6
    h0, w0 = 2967, 2220
    assert tm.fraction((0, 0, h0, w0)) == pytest.approx(tm.fraction_total, abs=0.02)
    assert tm.fraction((0, 0, 200, 200)) < 0.05  # top-left corner is glass
    blank = np.full((256, 256, 3), 245, np.uint8)
    assert not tissue_mask(blank).any()


def test_all_tissue_image_is_not_split_in_two(glas_image) -> None:
    assert tissue_mask(glas_image).mean() > 0.9
