"""ReviewStore on real prediction stores: ranking, uncertainty pyramid, persistence of marks,
corrections and cursor across reopening, re-ranking, refusals, and the store staying a
normal prediction for every other reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import ConfigError, DataError
from napari_histo.core.progress import Message, run_task
from napari_histo.engine.review import ReviewStore, review_regions

SLIDE_MPP = 0.25


def test_rank_puts_the_fifty_fifty_tile_first_with_placed_boxes(known_store: Path) -> None:
    regs = review_regions(known_store, top=3)
    assert len(regs) == 3 and regs[0].id == "t-1-1" and regs[0].rank == 1
    r = regs[0]
    # store px -> slide level-0 px: origin (100, 200) + 2 x store px
    assert r.bbox_px == (100 + 512, 200 + 512, 100 + 1024, 200 + 1024)
    assert r.bbox_um == pytest.approx(tuple(v * SLIDE_MPP for v in r.bbox_px))
    store = ReviewStore.open(known_store)
    assert store.regions()[:3] == regs and store.settings["unit"] == "tile"
    levels = store.uncertainty_levels()
    assert len(levels) >= 2 and levels[0].dtype == np.uint8 and levels[0].shape == (512, 768)
    assert int(levels[0][300, 300]) == 255 and int(levels[0][10, 10]) == 0  # 50/50; background
    from napari_histo.io.ome_zarr import open_ome_zarr

    u = open_ome_zarr(store.uncertainty_path)  # an NGFF image napari can show, placed alike
    assert u.mpp == pytest.approx((0.5, 0.5))


def test_marks_corrections_and_cursor_survive_reopening(known_store: Path) -> None:
    store = ReviewStore.open(known_store)
    regs = run_task(store.rank())
    a, b, c = regs[0], regs[1], regs[2]
    store.mark(a.id, "accepted")
    fix = np.zeros((256, 256), np.uint8)
    fix[:100] = 1
    store.save_correction(b.id, fix)
    store.mark(c.id, "flagged")
    store.cursor = 3
    del store
    again = ReviewStore.open(known_store)
    assert again.status(a.id) == "accepted" and again.status(b.id) == "corrected"
    assert again.status(c.id) == "flagged" and again.status(regs[3].id) is None
    assert again.cursor == 3
    assert np.array_equal(again.correction(b.id), fix)
    assert again.correction(a.id) is None
    assert [r.id for r in again.remaining()] == [r.id for r in regs[3:]]
    again.mark(c.id, None)
    assert ReviewStore.open(known_store).status(c.id) is None


def test_rerank_keeps_marks_of_regions_that_still_exist(known_store: Path) -> None:
    store = ReviewStore.open(known_store)
    regs = run_task(store.rank())
    store.mark(regs[0].id, "accepted")
    store.save_correction(regs[1].id, np.ones((256, 256), np.uint8))
    events: list[object] = []
    run_task(store.rank(), events.append)
    assert any(isinstance(e, Message) and "kept the marks of 2" in e.text for e in events)
    assert store.status(regs[0].id) == "accepted" and store.cursor == 2
    events.clear()
    run_task(store.rank(unit="component"), events.append)  # other ids: marks kept aside
    assert any(isinstance(e, Message) and "2 marked region(s) are no longer ranked" in e.text
               for e in events)
    assert {r.id for r in store.reviewed()} == {regs[0].id, regs[1].id}


def test_store_stays_a_normal_prediction(known_store: Path) -> None:
    from napari_histo.cli._info import prediction_info
    from napari_histo.engine.inference.writer import is_our_store, open_prediction, read_meta
    from napari_histo.io.ome_zarr import is_complete

    run_task(ReviewStore.open(known_store).rank())
    assert is_complete(known_store) and read_meta(known_store)["complete"]
    assert is_our_store(known_store)
    prob, lab, _ = open_prediction(known_store)
    assert prob.shape == (512, 768) and lab.shape == (512, 768)
    assert prediction_info(str(known_store))["complete"]


def test_refusals(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    write = request.getfixturevalue("known_store_writer")
    with pytest.raises(DataError, match="does not exist"):
        ReviewStore.open(tmp_path / "missing.ome.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a napari-histo prediction"):
        ReviewStore.open(tmp_path / "plain")
    with pytest.raises(DataError, match="unfinished"):
        ReviewStore.open(write(tmp_path / "partial.ome.zarr", complete=False))
    with pytest.raises(DataError, match="patch-classifier"):
        ReviewStore.open(write(tmp_path / "cls.ome.zarr", task="classify"))
    store = ReviewStore.open(write(tmp_path / "ok.ome.zarr"))
    with pytest.raises(DataError, match="no review region"):
        store.mark("t-9-9", "accepted")
    run_task(store.rank())
    with pytest.raises(ConfigError, match="status"):
        store.mark("t-1-1", "great")
    with pytest.raises(DataError, match="256 x 256"):
        store.save_correction("t-1-1", np.zeros((10, 10), np.uint8))
    with pytest.raises(ConfigError, match="unit"):
        run_task(store.rank(unit="blob"))
    with pytest.raises(ConfigError, match="size_um"):
        run_task(store.rank(size_um=-1.0))


def test_real_prediction_reread_lines_up_with_the_store(tiny_case: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """The slide re-read and re-predicted at a store box reproduces the stored probabilities
    (the store <-> slide mapping is exact), and TTA on a few regions is costed."""
    from napari_histo.engine.checkpoints import load_checkpoint
    from napari_histo.engine.review.slide_access import predict_box

    path = tmp_path / "pred.ome.zarr"
    shutil.copytree(tiny_case["store"], path)
    store = ReviewStore.open(path)
    regs = run_task(store.rank(size_um=64.0, tta=True, tta_top=2))
    assert store.settings["size"] == 64  # 64 um at 1 um/px
    cost = store.settings["tta_cost"]
    assert cost["regions"] == 2 and cost["store_px"] == 2 * 64 * 64 and cost["seconds"] >= 0
    assert sum(r.tta is not None for r in regs) == 2
    r = regs[-1]
    read = store.image_reader()
    try:
        p = predict_box(read, load_checkpoint(tiny_case["ckpt"], device="cpu"), r.bbox_store)
    finally:
        read.close()
    y0, x0, y1, x1 = r.bbox_store
    stored = np.asarray(store.probabilities()[y0:y1, x0:x1], np.float32)
    assert p.shape == (2, y1 - y0, x1 - x0)
    assert np.abs(p[1] - stored).mean() < 0.01


def test_components_of_a_tall_store_come_from_a_coarse_level(tmp_path: Path,
                                                              request: pytest.FixtureRequest
                                                              ) -> None:
    write = request.getfixturevalue("known_store_writer")
    p = np.full((4608, 512), 0.02, np.float32)
    p[3000:3200, 100:300] = 0.5
    store = ReviewStore.open(write(tmp_path / "tall.ome.zarr", p, chunk=512))
    (r,) = run_task(store.rank(unit="component"))
    y0, x0, y1, x1 = r.bbox_store  # found on level 1 (2304 px tall), scaled back
    assert 2996 <= y0 <= 3000 and 3200 <= y1 <= 3204 and 96 <= x0 <= 100 and 300 <= x1 <= 304
    assert r.id == f"c-{y0}-{x0}" and abs(r.area_px - 200 * 200) < 2000
    assert r.bbox_px == (100 + 2 * y0, 200 + 2 * x0, 100 + 2 * y1, 200 + 2 * x1)


def test_a_cancelled_rank_leaves_the_finished_map_and_ranking(known_store: Path) -> None:
    store = ReviewStore.open(known_store)
    regs = run_task(store.rank())
    gen = store.rank(method="margin")
    next(gen)  # the first block of the new map is written ...
    gen.close()  # ... then the user cancels
    again = ReviewStore.open(known_store)
    assert again.regions() == regs and again.settings["method"] == "entropy"
    levels = again.uncertainty_levels()
    assert int(levels[0][300, 300]) == 255 and len(levels) >= 2
    run_task(again.rank(method="margin"))  # the leftover is cleared by the next rank
    assert not (known_store / "review" / "uncertainty-partial").exists()
    assert again.settings["method"] == "margin"
