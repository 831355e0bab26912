"""Synthetic slide writers: the sample slide and the tile-streamed big slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.io.slide import open_slide
from napari_histo.io.synthetic import write_slide_from_tiles, write_synthetic_slide


def test_synthetic_slide_looks_like_he(synthetic_slide: tuple[Path, Path]) -> None:
    slide, _ = synthetic_slide
    with open_slide(slide) as s:
        thumb = np.asarray(s.levels[-1]).astype(int)
    background = (thumb.min(axis=2) > 225).mean()
    pinkish = ((thumb[..., 0] > thumb[..., 1] + 30) & (thumb.min(axis=2) <= 225)).mean()
    assert 0.2 < background < 0.8 and pinkish > 0.1
    assert not any(p.name.endswith(".partial") for p in slide.parent.iterdir())


@pytest.mark.parametrize("compression", ["deflate", "jpeg2000"])
def test_other_compressions_round_trip(tmp_path: Path, compression: str) -> None:
    p, _ = write_synthetic_slide(tmp_path / f"{compression}.tif", shape=(512, 512), levels=2,
                                 compression=compression, with_mask=False, mpp=0.25)
    with open_slide(p) as s:
        assert s.metadata.level_shapes == ((512, 512), (256, 256))
        assert s.mpp == pytest.approx((0.25, 0.25))
        assert np.asarray(s.levels[0]).std() > 5


def test_write_slide_from_tiles_streams_a_pyramid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lib = [np.full((64, 64, 3), v, np.uint8) + rng.integers(0, 3, (64, 64, 3), dtype=np.uint8)
           for v in (40, 120, 200)]
    layout = np.arange(20 * 30).reshape(20, 30) % 3
    p = write_slide_from_tiles(tmp_path / "big.tif", lib, (1250, 1900), layout=layout,
                               mpp=0.25, min_side=300)
    with open_slide(p) as s:
        m = s.metadata
        assert m.level_shapes == ((1250, 1900), (625, 950), (312, 475), (156, 237))
        assert all(m.level_native)
        assert s.levels[0].chunksize[:2] == (64, 64)
        assert m.level_mpps[2] == pytest.approx((1.0, 1.0), rel=0.01)
        tile = s.read_region((64 * 3, 64 * 5), 0, (64, 64)).astype(int)
        assert abs(tile.mean() - lib[layout[3, 5]].mean()) < 3
        lvl2 = np.asarray(s.levels[2]).astype(int)
        # level 2 pixel (y, x) covers level-0 tile (y // 16, x // 16)
        assert abs(lvl2[40, 90].mean() - lib[layout[40 // 16, 90 // 16]].mean()) < 4
