"""Correct & fine-tune: paint on an editable window of a slide prediction, the edit reaches
the zarr label pyramid on disk, fine-tuning runs on patches around it and re-segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_histo.plugin._correct_widget import CorrectWidget
from napari_histo.plugin._result_layers import camera_of
from napari_histo.plugin._segment_widget import SegmentWidget


def test_paint_autosave_and_finetune(make_napari_viewer, qtbot, cmu_svs, tiny_checkpoint,
                                     no_threads_left):
    viewer = make_napari_viewer()
    image = viewer.open(str(cmu_svs), plugin="napari-histo")[0]
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg._image_combo.value = image
    seg.set_checkpoint(tiny_checkpoint)
    camera_of(viewer).center = (700.0, 550.0)
    camera_of(viewer).zoom = max(viewer.canvas.size) / 200.0
    h = seg.run("current view")
    qtbot.waitUntil(lambda: h.done and seg._run_button.enabled, timeout=60000)
    pred = seg.result.labels
    store = Path(pred.metadata["napari_histo"]["store"])

    w = CorrectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    w._prediction_combo.value = pred
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    s = w.edit_visible_region()
    assert s is not None
    layer = s.layer
    assert np.allclose(layer.scale, pred.scale)
    # paint a 20 x 20 square of tumour with napari's own label tool
    h0, w0 = layer.data.shape
    cy, cx = h0 // 2, w0 // 2
    layer.brush_size = 20
    new = 1 - int(layer.data[cy, cx])  # repaint the opposite of what the model said
    layer.paint((cy, cx), new)
    qtbot.waitUntil(lambda: s.saves > 0, timeout=5000)
    assert s.edited.sum() > 0
    # the edit is on disk in the prediction's label pyramid (level 0)
    from napari_histo.io.ome_zarr import open_ome_zarr

    on_disk = open_ome_zarr(store / "labels" / "prediction").read(0)
    y0, x0, _, _ = s.box
    assert on_disk[y0 + cy, x0 + cx] == new

    w._epochs_spin.value = 1
    w._steps_spin.value = 2
    ft = w.fine_tune()
    assert ft is not None
    qtbot.waitUntil(lambda: ft.done and w._finetune_button.enabled, timeout=120000)
    assert ft.error is None, ft.error
    assert w.finetuned_checkpoint and Path(w.finetuned_checkpoint).is_file()
    assert len(w.curves.history) == 1
    # the view is segmented again with the fine-tuned model
    qtbot.waitUntil(lambda: w.rerun_task is not None and w.rerun_task.done, timeout=60000)
    qtbot.waitUntil(lambda: seg._run_button.enabled, timeout=5000)
    assert seg.result.labels.metadata["napari_histo"]["checkpoint"] == w.finetuned_checkpoint
