"""Review queue widget: a real viewer over a real slide and a real prediction store.

The store holds known probabilities (one 50/50 tile, confident elsewhere) written by the
engine's ZarrSink, placed off the slide's corner (origin 100, 200 px; 2 slide px per store
px) so every coordinate conversion is exercised; its ``source`` is a real tiled TIFF slide.
Keys are real Qt key clicks on the canvas, dispatched by napari (active layer, then viewer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._review_widget import ReviewWidget

ORIGIN_PX = (100.0, 200.0)
DOWNSAMPLE = (2.0, 2.0)
SLIDE_MPP = 0.25
STORE_MPP = (SLIDE_MPP * DOWNSAMPLE[0], SLIDE_MPP * DOWNSAMPLE[1])
FIFTY_FIFTY = (256, 256, 512, 512)  # store px of the tile the model is unsure about


def _probabilities() -> np.ndarray:
    p = np.full((512, 768), 0.03, np.float32)
    p[:, 512:] = 0.97
    p[256:512, 256:512] = 0.5
    p[256:384, 512:640] = 0.3  # a second, less unsure tile
    return p


@pytest.fixture
def known(tmp_path: Path) -> dict[str, Path]:
    """A synthetic slide and a prediction store of it with known probabilities."""
    from napari_histo.engine.inference.writer import ZarrSink
    from napari_histo.io.synthetic import write_synthetic_slide

    slide, _ = write_synthetic_slide(tmp_path / "slide.tif", shape=(1280, 1792), tile=256,
                                     levels=3, mpp=SLIDE_MPP, seed=1)
    p = _probabilities()
    h, w = p.shape
    origin_um = [o * SLIDE_MPP for o in ORIGIN_PX]
    meta = {"task": "segment", "class_names": ["normal", "tumor"], "mpp": list(STORE_MPP),
            "origin_um": origin_um, "origin_px": list(ORIGIN_PX),
            "downsample": list(DOWNSAMPLE), "threshold": 0.5, "prob_dtype": "float16",
            "source": str(slide), "slide_name": "slide", "checkpoint": None}
    trans = tuple((o + (d - 1) / 2) * SLIDE_MPP for o, d in zip(ORIGIN_PX, DOWNSAMPLE,
                                                                 strict=True))
    store = tmp_path / "pred.ome.zarr"
    sink = ZarrSink.create(store, shape=(h, w), chunk=256, num_classes=2, prob_dtype="float16",
                           threshold=0.5, meta=meta, mpp=STORE_MPP, origin_um=trans)
    for y in range(0, h, 256):
        for x in range(0, w, 256):
            box = (y, x, y + 256, x + 256)
            blk = p[y:y + 256, x:x + 256]
            sink.write((y // 256, x // 256), box, np.stack([1 - blk, blk]))
    sink.finish(total_tiles=6)
    return {"slide": Path(slide), "store": store}


def _ranked(viewer, qtbot, store: Path) -> ReviewWidget:
    w = ReviewWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_store(store)
    h = w.rank()
    assert h is not None
    qtbot.waitUntil(lambda: h.done and w._rank_button.enabled, timeout=30000)
    assert h.error is None, h.error
    return w


def _press(viewer, key: str) -> None:
    """A real Qt key click on the canvas (``"n"``, ``"Shift-N"``), as a user would."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    shift = key.startswith("Shift-")
    mods = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    QTest.keyClick(viewer.window._qt_viewer.canvas.native,
                   getattr(Qt.Key, f"Key_{key.split('-')[-1].upper()}"), mods)
    QApplication.processEvents()


def _center_in(viewer, box) -> bool:
    from napari_histo.plugin._result_layers import camera_of

    cy, cx = np.asarray(camera_of(viewer).center, dtype=float)[-2:]
    return box[0] <= cy <= box[2] and box[1] <= cx <= box[3]


def test_rank_lists_best_first_and_keys_jump(make_napari_viewer, qtbot, known,
                                            no_threads_left):
    viewer = make_napari_viewer()
    w = _ranked(viewer, qtbot, known["store"])
    # the slide opened with the store (its "source"); the uncertainty map is a layer
    assert any(getattr(lyr, "rgb", False) for lyr in viewer.layers)
    unc = [lyr for lyr in viewer.layers
           if (lyr.metadata.get("napari_histo") or {}).get("kind") == "review_uncertainty"]
    assert len(unc) == 1
    # ... which is not offered as a prediction to review: the heatmap stays picked
    assert all(v is not unc[0] for _, v in w._prediction_choices())
    assert w._pred_combo.value is not None and w._pred_combo.value.name.endswith("heatmap")
    # best first: the 50/50 tile, then the 0.3 one; the list shows them in that order
    assert len(w.regions) >= 2 and w.table.rowCount() == len(w.regions)
    # listed in rank order (the diversified order: a tile next to one taken above it counts
    # half, so a tile's own score need not fall monotonically down the list)
    assert [r.rank for r in w.regions] == list(range(1, len(w.regions) + 1))
    assert w.regions[0].score == max(r.score for r in w.regions)
    assert w.regions[0].bbox_store == FIFTY_FIFTY
    assert [w.table.item(i, 1).text() for i in range(2)] == ["1", "2"]
    assert w.current_row == 0
    # the camera is on region 1, zoomed so that it fills about 70 % of the canvas
    box0 = w.region_world_box(w.regions[0])
    assert _center_in(viewer, box0)
    # the world box is the region's micrometre box (within one slide pixel)
    assert np.allclose(box0, w.regions[0].bbox_um, atol=SLIDE_MPP)
    from napari_histo.plugin._result_layers import camera_of

    zoom = float(camera_of(viewer).zoom)
    h, wd = viewer.canvas.size
    fill = max((box0[2] - box0[0]) * zoom / h, (box0[3] - box0[1]) * zoom / wd)
    assert fill == pytest.approx(0.7, abs=0.02)
    # one outline rectangle, not editable, and not made the active layer
    outline = [lyr for lyr in viewer.layers if lyr.name == "review region"]
    assert len(outline) == 1 and len(outline[0].data) == 1 and not outline[0].editable
    assert viewer.layers.selection.active is not outline[0]
    # n / Shift-N move the camera region by region
    _press(viewer, "n")
    assert w.current_row == 1 and _center_in(viewer, w.region_world_box(w.regions[1]))
    assert w.store is not None and w.store.cursor == 1
    _press(viewer, "Shift-N")
    assert w.current_row == 0 and _center_in(viewer, box0)
    # a accepts and goes on; Shift-F flags and goes on; the list shows both
    _press(viewer, "a")
    assert w.store.status(w.regions[0].id) == "accepted" and w.current_row == 1
    _press(viewer, "Shift-F")
    assert w.store.status(w.regions[1].id) == "flagged"
    assert [w.row_status(0), w.row_status(1)] == ["accepted", "flagged"]
    assert len(outline[0].data) == 1  # still the one rectangle, now round the next region
    # thumbnails of the slide under the first rows
    qtbot.waitUntil(lambda: not w.table.item(0, 0).icon().isNull(), timeout=10000)


def test_marks_persist_across_closing_and_keys_are_released(make_napari_viewer, qtbot, known,
                                                            no_threads_left):
    viewer = make_napari_viewer()
    w = _ranked(viewer, qtbot, known["store"])
    ids = [r.id for r in w.regions]
    w.accept()
    w.flag()
    w.go_to(2)
    # closing the dock gives the keys back (no binding left on the viewer)
    viewer.window.remove_dock_widget(w.native)
    assert not w.keys.active
    assert not any(str(k) in ("N", "Shift+N", "A", "Shift+F", "Shift+E") for k in viewer.keymap)
    viewer.close()

    # "napari closed": a new viewer and widget on the same store resume where it stopped
    viewer2 = make_napari_viewer()
    w2 = ReviewWidget(viewer2)
    viewer2.window.add_dock_widget(w2)
    assert w2.open_store(known["store"])
    assert [r.id for r in w2.regions] == ids
    assert [w2.row_status(i) for i in range(3)] == ["accepted", "flagged", "—"]
    assert w2.current_row == 2
    assert _center_in(viewer2, w2.region_world_box(w2.regions[2]))


def test_edit_saves_a_correction(make_napari_viewer, qtbot, known, no_threads_left):
    viewer = make_napari_viewer()
    w = _ranked(viewer, qtbot, known["store"])
    region = w.regions[0]
    _press(viewer, "Shift-E")
    layer = w.edit_session.layer if w.edit_session else None
    assert layer is not None and viewer.layers.selection.active is layer
    assert layer.mode == "paint"
    y0, x0, y1, x1 = region.bbox_store
    assert layer.data.shape == (y1 - y0, x1 - x0)
    # the brush starts from the prediction's labels (p = 0.5 >= threshold: tumour)
    np.testing.assert_array_equal(layer.data, np.asarray(w.store.labels()[y0:y1, x0:x1]))
    # labels keys still reach the labels layer (e = eraser), ours pass through to the viewer
    _press(viewer, "e")
    assert layer.mode == "erase"
    layer.mode = "paint"
    layer.selected_label = 0
    layer.brush_size = 30
    layer.paint((64, 64), 0)
    painted = np.asarray(layer.data).copy()
    assert (painted == 0).any()
    _press(viewer, "n")  # moving on saves the correction
    assert layer not in viewer.layers and w.current_row == 1
    assert w.store.status(region.id) == "corrected"
    np.testing.assert_array_equal(w.store.correction(region.id), painted)
    assert w.row_status(0) == "corrected"
    # editing the region again starts from the saved correction; accepting keeps "corrected"
    w.go_to(0)
    again = w.edit()
    np.testing.assert_array_equal(again.data, painted)
    w.accept()
    assert w.store.status(region.id) == "corrected"


def test_docks_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-histo", "Review queue")
    assert isinstance(widget, ReviewWidget) and "Review queue" in dock.name
    assert widget.keys.active


@pytest.fixture
def predicted(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """A real prediction store: the tiny U-Net run over a synthetic slide by predict_slide."""
    from napari_histo.core.progress import run_task
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.io.synthetic import write_synthetic_slide

    slide, _ = write_synthetic_slide(tmp_path / "syn.tif", shape=(512, 768), tile=256,
                                     levels=2, mpp=0.5, seed=3)
    store = tmp_path / "pred.ome.zarr"
    cfg = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=1, device="cpu")
    run_task(predict_slide(slide, tiny_checkpoint, cfg, out_path=store))
    return store


def test_finetune_on_reviewed(make_napari_viewer, qtbot, predicted, tiny_checkpoint,
                              no_threads_left):
    viewer = make_napari_viewer()
    w = _ranked(viewer, qtbot, predicted)
    assert len(w.regions) >= 3
    w.set_checkpoint(tiny_checkpoint)
    w._epochs_spin.value = 1
    w._steps_spin.value = 2
    assert w.fine_tune() is None  # nothing reviewed yet: refused, nothing started
    first, second = w.regions[0].id, w.regions[1].id
    w.accept()
    layer = w.edit()
    layer.paint((32, 32), 1 - int(layer.data[32, 32]))  # the opposite of the prediction
    w.next()  # saves the correction
    assert w.store.status(second) == "corrected"
    ft = w.fine_tune()
    assert ft is not None and not w._finetune_button.enabled and w._stop_button.enabled
    qtbot.waitUntil(lambda: ft.done and w._finetune_button.enabled, timeout=120000)
    assert ft.error is None, ft.error
    out = w.outcome
    assert out is not None and Path(out.checkpoint).is_file()
    assert Path(str(w._ckpt_edit.value)) == Path(out.checkpoint)  # the next round continues
    assert "Dice on 2 reviewed regions" in w._scores_label.value and "->" in w._scores_label.value
    assert w._status_label.value.startswith("done")
    # re-ranked: the marks are kept, the camera is on the first region left to review
    statuses = {r.id: w.row_status(i) for i, r in enumerate(w.regions)}
    assert statuses.get(first, "accepted") == "accepted"
    assert statuses.get(second, "corrected") == "corrected"
    assert w.current is not None and w.store.status(w.current.id) is None
    assert _center_in(viewer, w.region_world_box(w.current))


def test_stop_ranking_ends_cancelled(make_napari_viewer, qtbot, known, no_threads_left):
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_store(known["store"])
    h = w.rank()
    assert h is not None and w._stop_button.enabled and not w._rank_button.enabled
    assert w.rank() is None  # one task at a time
    w._stop_button.changed.emit(True)
    qtbot.waitUntil(lambda: h.done and w._rank_button.enabled, timeout=30000)
    assert h.cancelled and w._status_label.value.startswith("cancelled")
    assert not w._stop_button.enabled and w._finetune_button.enabled


def test_component_regions_with_tta(make_napari_viewer, qtbot, predicted, tiny_checkpoint,
                                    no_threads_left):
    """Connected uncertain areas instead of tiles, re-scored by test-time augmentation."""
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.open_store(predicted)
    w.set_checkpoint(tiny_checkpoint)
    w._unit_combo.value = "component"
    w._tta_check.value = True
    h = w.rank()
    qtbot.waitUntil(lambda: h.done and w._rank_button.enabled, timeout=60000)
    assert h.error is None, h.error
    assert w.regions and all(r.kind == "component" for r in w.regions)
    assert w.store is not None and w.store.settings.get("tta") is True
    _press(viewer, "n")
    assert _center_in(viewer, w.region_world_box(w.current))
