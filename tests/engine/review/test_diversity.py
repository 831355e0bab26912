"""The default tile order spreads over distinct uncertain places (soft non-maximum
suppression of neighbours), in score_regions and in ReviewStore.rank; diversity=0 keeps the
plain score order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import run_task
from napari_histo.engine.review import ReviewStore, score_regions
from napari_histo.engine.review.regions import diversify


def _structure_map() -> np.ndarray:
    """128-px tiles: one 50/50 structure over the 2 x 2 tiles at rows 1-2, cols 1-2, and two
    separate, a little less uncertain tiles (p = 0.3) far from it and from each other."""
    p = np.full((512, 768), 0.03, np.float32)
    p[128:384, 128:384] = 0.5
    p[0:128, 640:768] = 0.3  # t-0-5
    p[384:512, 640:768] = 0.3  # t-3-5
    return p


BLOCK = {"t-1-1", "t-1-2", "t-2-1", "t-2-2"}


def test_neighbours_of_one_structure_do_not_fill_the_top() -> None:
    plain = score_regions(_structure_map(), size=128, diversity=0.0)
    assert {r.id for r in plain[:4]} == BLOCK  # plain score order: the whole structure first
    regs = score_regions(_structure_map(), size=128)
    top = [r.id for r in regs[:3]]
    assert top[0] in BLOCK and set(top[1:]) == {"t-0-5", "t-3-5"}, top
    # the same tiles with the same scores, only the order differs; ranks renumbered
    assert sorted((r.id, r.score) for r in regs) == sorted((r.id, r.score) for r in plain)
    assert [r.rank for r in regs] == list(range(1, len(regs) + 1))
    # soft, not hard: the structure's next tiles (halved once) still come before confident
    # tissue; each further pick next to a tile halves it again
    assert {r.id for r in regs[3:5]} < BLOCK - {top[0]}
    assert score_regions(_structure_map(), size=128) == regs  # deterministic


def test_diversify_leaves_components_alone_and_checks_its_factor() -> None:
    comps = score_regions(_structure_map(), unit="component", size=128)
    assert diversify(comps) == comps
    with pytest.raises(ConfigError, match="diversity"):
        score_regions(_structure_map(), size=128, diversity=1.5)


def test_store_rank_uses_the_diversified_order(tmp_path: Path,
                                               known_store_writer: object) -> None:
    path = known_store_writer(tmp_path / "s.ome.zarr", _structure_map())  # type: ignore[operator]
    store = ReviewStore.open(path)
    regs = run_task(store.rank(size_um=64.0))  # 128 store px at 0.5 um/px
    assert store.settings["diversity"] == 0.5
    assert regs[0].id in BLOCK and {r.id for r in regs[1:3]} == {"t-0-5", "t-3-5"}
    plain = run_task(store.rank(size_um=64.0, diversity=0.0))
    assert {r.id for r in plain[:4]} == BLOCK and store.settings["diversity"] == 0.0
    with pytest.raises(ConfigError, match="diversity"):
        run_task(store.rank(size_um=64.0, diversity=-0.1))
