"""Segment widget end to end: GlaS image + labels, the real CMU-1 SVS, cancel, live threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._result_layers import camera_of
from napari_histo.plugin._segment_widget import SegmentWidget


def _open(viewer, path):
    layers = viewer.open(str(path), plugin="napari-histo")
    return layers[0]


def _segment(qtbot, w, target="current view", timeout=60000):
    h = w.run(target)
    assert h is not None
    qtbot.waitUntil(lambda: h.done and not w.running, timeout=timeout)  # end delivered too
    qtbot.waitUntil(lambda: w.result is not None or h.error is not None, timeout=5000)
    assert h.error is None, h.error
    return h


def test_segment_view_of_glas(make_napari_viewer, qtbot, glas_pair, tiny_checkpoint,
                              no_threads_left):
    viewer = make_napari_viewer()
    img, lab = glas_pair
    image = _open(viewer, img)
    truth = viewer.add_labels(np.zeros((10, 10), np.uint8), name="my labels")  # a user layer
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    viewer.reset_view()
    _segment(qtbot, w)
    res = w.result
    assert res.heatmap in viewer.layers and res.labels in viewer.layers
    assert truth in viewer.layers and truth.data.shape == (10, 10)  # untouched
    prob = np.asarray(res.heatmap.data)
    assert prob.shape == image.data.shape[:2]
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    assert np.allclose(res.heatmap.scale, image.scale)
    # live threshold
    w._threshold_slider.value = 0.0
    assert np.asarray(res.labels.data).min() == 1
    w._threshold_slider.value = 1.0
    assert np.asarray(res.labels.data).sum() <= (prob >= 1.0).sum()
    # a second run replaces this widget's own layers (same names, no "[2]"); the user's stay
    _segment(qtbot, w)
    assert res.heatmap not in viewer.layers and res.labels not in viewer.layers
    assert w.result.heatmap.name == res.heatmap.name and truth in viewer.layers
    # a renamed result is the user's to keep
    w.result.labels.name = "keep these"
    kept = w.result.labels
    _segment(qtbot, w)
    assert kept in viewer.layers and w.result.labels is not kept


def _zoomed_svs(make_napari_viewer, cmu_svs, checkpoint):
    """A viewer on the CMU-1 SVS zoomed on a ~300 um window, with a Segment widget."""
    viewer = make_napari_viewer()
    image = _open(viewer, cmu_svs)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(checkpoint)
    camera_of(viewer).center = (700.0, 550.0)
    camera_of(viewer).zoom = max(viewer.canvas.size) / 300.0
    return viewer, image, w


def test_segment_zoomed_view_of_svs(make_napari_viewer, qtbot, cmu_svs, tiny_checkpoint,
                                    no_threads_left):
    viewer, image, w = _zoomed_svs(make_napari_viewer, cmu_svs, tiny_checkpoint)
    _segment(qtbot, w)
    res = w.result
    box = res.heatmap.metadata["napari_histo"]["region"]
    h0, w0 = image.data.shape[:2] if not image.multiscale else image.data[0].shape[:2]
    assert 0 < box[2] - box[0] < h0 and 0 < box[3] - box[1] < w0
    # the heatmap sits over the region it was predicted from (world coordinates, um)
    y0_world = res.heatmap.translate[0] - res.heatmap.scale[0] / 2
    assert y0_world == pytest.approx(box[0] * image.scale[0] - image.scale[0] / 2, abs=2.0)
    assert "first_tile" in w.timings


def test_second_run_lays_out_layers_before_the_model_loads(make_napari_viewer, qtbot, cmu_svs,
                                                           tiny_checkpoint, no_threads_left):
    """Once the model is known, the result layers are created while the worker starts."""
    viewer, _, w = _zoomed_svs(make_napari_viewer, cmu_svs, tiny_checkpoint)
    _segment(qtbot, w)
    first = w.result
    n_layers = len(viewer.layers)
    _segment(qtbot, w)
    t = w.timings
    assert t["layers_ready"] < t["model_loaded"] < t["first_tile"]
    # the first run's layers were replaced (no "[2]"), the early layers kept, not redone
    assert len(viewer.layers) == n_layers and first.heatmap not in viewer.layers
    np.testing.assert_allclose(np.asarray(w.result.heatmap.data), np.asarray(first.heatmap.data),
                               atol=1e-3)
    assert tuple(w.result.heatmap.translate) == tuple(first.heatmap.translate)


def test_cancel_mid_run(make_napari_viewer, qtbot, cmu_svs, tiny_checkpoint, no_threads_left):
    viewer = make_napari_viewer()
    image = _open(viewer, cmu_svs)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    h = w.run("whole slide")
    qtbot.waitUntil(lambda: w._progress_bar.value > 0 or h.done, timeout=30000)
    w.cancel()
    qtbot.waitUntil(lambda: h.done, timeout=30000)
    assert h.cancelled
    qtbot.waitUntil(lambda: w._run_button.enabled, timeout=5000)


def test_close_viewer_mid_run(make_napari_viewer, qtbot, cmu_svs, tiny_checkpoint):
    from napari_histo.plugin._workers import active_handles

    viewer = make_napari_viewer()
    image = _open(viewer, cmu_svs)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    h = w.run("whole slide")
    qtbot.waitUntil(lambda: w._progress_bar.value > 0 or h.done, timeout=30000)
    viewer.close()
    assert h.done
    assert not active_handles()


def test_bad_checkpoint_is_one_message(make_napari_viewer, qtbot, glas_pair, tmp_path):
    viewer = make_napari_viewer()
    image = _open(viewer, glas_pair[0])
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    w._ckpt_edit.value = str(bad)
    h = w.run()
    qtbot.waitUntil(lambda: h.error is not None, timeout=20000)
    from napari_histo.core.errors import CheckpointError

    assert isinstance(h.error, CheckpointError)
    qtbot.waitUntil(lambda: w._run_button.enabled, timeout=5000)


def test_hostile_checkpoint_is_one_message_and_widget_recovers(make_napari_viewer, qtbot,
                                                                glas_pair, tmp_path):
    """A checkpoint whose stored network would need 100+ GiB: refused before any allocation,
    one message, and the Segment button works again."""
    import torch

    from napari_histo.core.errors import CheckpointError
    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model

    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    good = save_checkpoint(tmp_path / "good.pt", build_model(spec), spec=spec, task="segment",
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=None, patch_size=64))
    payload = torch.load(good, weights_only=True)
    payload["spec"]["base"] = 100_000
    torch.save(payload, tmp_path / "huge.pt")
    viewer = make_napari_viewer()
    image = _open(viewer, glas_pair[0])
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w._ckpt_edit.value = str(tmp_path / "huge.pt")
    h = w.run()
    qtbot.waitUntil(lambda: h.error is not None, timeout=20000)
    assert isinstance(h.error, CheckpointError)
    assert "\n" not in str(h.error)
    qtbot.waitUntil(lambda: w._run_button.enabled, timeout=5000)


def test_remove_widget_mid_run_stops_task(make_napari_viewer, qtbot, cmu_svs, tiny_checkpoint):
    from napari_histo.plugin._workers import active_handles

    viewer = make_napari_viewer()
    image = _open(viewer, cmu_svs)
    w = SegmentWidget(viewer)
    dock = viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    h = w.run("whole slide")
    qtbot.waitUntil(lambda: w._progress_bar.value > 0 or h.done, timeout=30000)
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: h.done, timeout=30000)
    assert h.cancelled or h.result is not None
    assert not active_handles()


def test_recent_checkpoints_named_best_pt_stay_distinct(make_napari_viewer, tiny_checkpoint,
                                                        tmp_path):
    """Every run folder holds a best.pt: the recent list must offer each, newest selected."""
    import shutil

    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    paths = []
    for run in ("run-a", "run-b"):
        (tmp_path / run).mkdir()
        paths.append(shutil.copy(tiny_checkpoint, tmp_path / run / "best.pt"))
        w.set_checkpoint(paths[-1])
    offered = [v for _, v in w._recent_choices()]
    assert all(str(Path(p).resolve()) in offered for p in paths)
    assert w._recent_combo.value == str(Path(paths[-1]).resolve())
