"""Correct & fine-tune: paint on an editable window of a slide prediction, the edit reaches
the zarr label pyramid on disk, fine-tuning runs on patches around it and re-segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._correct_widget import CorrectWidget


def test_paint_autosave_and_finetune(svs_segment, qtbot, tiny_checkpoint, no_threads_left):
    viewer, image, seg = svs_segment()
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

    w._epochs_spin.value = 2
    w._steps_spin.value = 2
    seen = _watch_curves(w)
    ft = w.fine_tune()
    assert ft is not None
    # before fine-tuning: the window's Dice against the corrections, shown at once
    assert "Dice before" in w._scores_label.value
    assert "against the corrections" in w._scores_label.value
    qtbot.waitUntil(lambda: ft.done and w._finetune_button.enabled, timeout=120000)
    assert ft.error is None, ft.error
    assert w.finetuned_checkpoint and Path(w.finetuned_checkpoint).is_file()
    _check_curves_and_scores(w, seen, "corrections")
    # the prediction before the edits differs from the corrections only where painted
    from napari_histo.engine.metrics import dice

    assert w.outcome.before["dice"] == pytest.approx(dice(s.original > 0, layer.data > 0))
    # the view is segmented again with the fine-tuned model
    qtbot.waitUntil(lambda: w.rerun_task is not None and w.rerun_task.done, timeout=60000)
    qtbot.waitUntil(lambda: seg._run_button.enabled, timeout=5000)
    assert seg.result.labels.metadata["napari_histo"]["checkpoint"] == w.finetuned_checkpoint


def _watch_curves(w):
    """Record, for each epoch the curves get, whether fine-tuning was still running."""
    seen = []
    add = w.curves.add_epoch

    def spy(epoch, metrics):
        add(epoch, metrics)
        seen.append({"epoch": epoch, "running": not w._finetune_button.enabled
                     and w.outcome is None, "dice": metrics.get("val_dice")})

    w.curves.add_epoch = spy
    return seen


def _check_curves_and_scores(w, seen, reference):
    # the curves grew epoch by epoch while training ran, with the window's Dice
    assert [e["epoch"] for e in seen] == [1, 2]
    assert all(e["running"] for e in seen)
    assert all(e["dice"] is not None and 0.0 <= e["dice"] <= 1.0 for e in seen)
    assert len(w.curves.history) == 2 and len(w.curves.series("val_dice")) == 2
    assert w.curves.ax_metric.lines  # drawn, not only stored
    out = w.outcome
    assert reference in out.reference
    for key in ("dice", "iou"):
        assert 0.0 <= out.before[key] <= 1.0 and 0.0 <= out.after[key] <= 1.0
    text = w._scores_label.value
    assert f"Dice before {out.before['dice']:.3f} -> after {out.after['dice']:.3f}" in text
    assert f"against the {reference}" in text and "um/px" in text


def test_finetune_scored_against_ground_truth(svs_segment, qtbot, tiny_checkpoint,
                                              no_threads_left):
    viewer, image, seg = svs_segment()
    h = seg.run("current view")
    qtbot.waitUntil(lambda: h.done and seg._run_button.enabled, timeout=60000)
    pred = seg.result.labels
    # a ground truth at the slide's full resolution: a disc of "tumour" round the view centre
    h0, w0 = image.data[0].shape[:2] if image.multiscale else image.data.shape[:2]
    yy, xx = np.mgrid[:h0, :w0]
    cy, cx = (np.asarray((700.0, 550.0)) - np.asarray(image.translate[-2:])) / np.asarray(
        image.scale[-2:])
    disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < 120 ** 2).astype(np.uint8)
    truth = viewer.add_labels(disc, name="truth", scale=image.scale[-2:],
                              translate=image.translate[-2:])

    w = CorrectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    w._prediction_combo.value = pred
    w._image_combo.value = image
    w._truth_combo.value = truth
    w.set_checkpoint(tiny_checkpoint)
    s = w.edit_visible_region()
    layer = s.layer
    layer.brush_size = 20
    ly, lx = layer.data.shape[0] // 2, layer.data.shape[1] // 2
    layer.paint((ly, lx), 1 - int(layer.data[ly, lx]))
    w._epochs_spin.value = 2
    w._steps_spin.value = 2
    seen = _watch_curves(w)
    ft = w.fine_tune()
    assert ft is not None
    assert "against the ground truth 'truth'" in w._scores_label.value
    qtbot.waitUntil(lambda: ft.done and w._finetune_button.enabled, timeout=120000)
    assert ft.error is None, ft.error
    _check_curves_and_scores(w, seen, "ground truth 'truth'")
    # before = the model's own window against the truth resampled onto the window's grid
    from napari_histo.engine.corrections import resample_nearest
    from napari_histo.engine.metrics import dice

    ref = resample_nearest(disc, truth.scale, truth.translate, layer.data.shape,
                           layer.scale, layer.translate)
    assert ref.any()
    assert w.outcome.before["dice"] == pytest.approx(dice(s.original > 0, ref > 0))
    qtbot.waitUntil(lambda: w.rerun_task is not None and w.rerun_task.done, timeout=60000)
    qtbot.waitUntil(lambda: seg._run_button.enabled, timeout=5000)
    # the rerun replaced the segment widget's own result; the corrections window stays
    assert pred not in viewer.layers and layer in viewer.layers and truth in viewer.layers
    assert not any("[" in ly.name for ly in viewer.layers)
