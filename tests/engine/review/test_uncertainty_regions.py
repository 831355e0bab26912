"""Uncertainty maps and region scoring on known inputs: values, ranking, placement."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histo.core.errors import ConfigError
from napari_histo.engine.review import Placement, Region, entropy_map, margin_map, score_regions


def test_entropy_and_margin_known_values() -> None:
    p = np.array([[0.5, 0.0, 1.0, 0.1]], np.float32)
    e = entropy_map(p)
    h01 = -(0.1 * np.log(0.1) + 0.9 * np.log(0.9)) / np.log(2)
    assert e.dtype == np.float32
    assert e[0] == pytest.approx([1.0, 0.0, 0.0, h01], abs=1e-6)
    assert margin_map(p)[0] == pytest.approx([1.0, 0.0, 0.0, 0.2], abs=1e-6)
    # uint8 = round(255 p): 128 is ~0.5
    assert entropy_map(np.array([[128, 0]], np.uint8))[0] == pytest.approx([1.0, 0.0], abs=1e-4)
    # three classes: a uniform pixel is maximally uncertain, a two-way tie has margin 1
    c = np.zeros((3, 1, 3), np.float32)
    c[:, 0, 0] = 1 / 3
    c[:, 0, 1] = (0.5, 0.5, 0.0)
    c[:, 0, 2] = (0.0, 0.0, 1.0)
    assert entropy_map(c)[0] == pytest.approx([1.0, np.log(2) / np.log(3), 0.0], abs=1e-6)
    assert margin_map(c)[0] == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)
    assert np.all(entropy_map(np.random.default_rng(0).random((8, 8))) >= 0)


def _map() -> np.ndarray:
    p = np.full((512, 768), 0.03, np.float32)
    p[:, 512:] = 0.97
    p[256:512, 256:512] = 0.5  # the model is 50/50 here
    p[:256, :256] = 0.0  # skipped background
    return p


def test_fifty_fifty_tile_ranks_first_and_background_is_left_out() -> None:
    regs = score_regions(_map(), size=256)
    assert [r.rank for r in regs] == list(range(1, len(regs) + 1))
    first = regs[0]
    assert first.id == "t-1-1" and first.bbox_store == (256, 256, 512, 512)
    assert first.uncertainty == pytest.approx(1.0) and first.mean_prob == pytest.approx(0.5)
    assert "t-0-0" not in {r.id for r in regs}  # no tissue: not a region
    assert all(a.score >= b.score for a, b in zip(regs, regs[1:], strict=False))
    # equal scores keep position order: the two confident tumour tiles, top one first
    ties = [r.id for r in regs if r.mean_prob > 0.9]
    assert ties == ["t-0-2", "t-1-2"]
    assert score_regions(_map(), size=256) == regs  # deterministic
    assert len(score_regions(_map(), size=256, top=2)) == 2


def test_components_of_the_uncertain_band() -> None:
    regs = score_regions(_map(), unit="component", size=256)
    assert len(regs) == 1
    r = regs[0]
    assert r.kind == "component" and r.bbox_store == (256, 256, 512, 512)
    assert r.area_px == 256 * 256 and r.id == "c-256-256"


def test_component_boxes_scale_back_from_a_coarse_map() -> None:
    p = np.full((5000, 300), 0.02, np.float32)  # taller than 2048: scored on a 4x smaller map
    p[1000:1200, 100:180] = 0.5
    (r,) = score_regions(p, unit="component", size=64)
    y0, x0, y1, x1 = r.bbox_store
    assert 996 <= y0 <= 1000 and 1200 <= y1 <= 1204 and 96 <= x0 <= 100 and 180 <= x1 <= 184


def test_boxes_follow_the_store_placement() -> None:
    place = Placement(origin_px=(100.0, 200.0), downsample=(4.0, 4.0), origin_um=(25.0, 50.0),
                      mpp=(1.0, 1.0))
    r = score_regions(_map(), size=256, placement=place)[0]
    assert r.bbox_px == (100 + 256 * 4, 200 + 256 * 4, 100 + 512 * 4, 200 + 512 * 4)
    assert r.bbox_um == (25.0 + 256, 50.0 + 256, 25.0 + 512, 50.0 + 512)
    # um = slide mpp (0.25) x level-0 px: the two boxes describe the same place
    assert r.bbox_um[0] == pytest.approx(r.bbox_px[0] * 0.25)
    assert score_regions(_map(), size=256)[0].bbox_um is None  # no pixel size, no microns
    d = r.to_dict()
    assert {"score", "bbox_um", "bbox_px"} <= set(d) and isinstance(d["bbox_px"], list)
    assert Region.from_dict(d) == r


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unit"):
        score_regions(_map(), unit="blob")
    with pytest.raises(ConfigError, match="method"):
        score_regions(_map(), method="variance")
