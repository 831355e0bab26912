"""Patch heatmap (classifier), stain normalisation (lazy layer) and the demo on a viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_histo.plugin._heatmap_widget import HeatmapWidget
from napari_histo.plugin._result_layers import camera_of
from napari_histo.plugin._stain_widget import StainWidget
from napari_histo.plugin._train_widget import TrainWidget


def test_patch_heatmap_of_svs_view(make_napari_viewer, qtbot, cmu_svs, classifier_checkpoint,
                                   no_threads_left):
    viewer = make_napari_viewer()
    image = viewer.open(str(cmu_svs), plugin="napari-histo")[0]
    w = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(classifier_checkpoint)
    w._stride_spin.value = 32
    w._tissue_check.value = False
    camera_of(viewer).center = (700.0, 550.0)
    camera_of(viewer).zoom = max(viewer.canvas.size) / 300.0
    h = w.run("current view")
    qtbot.waitUntil(lambda: h.done and w._run_button.enabled, timeout=60000)
    assert h.error is None, h.error
    res = w.result
    y0, x0, y1, x1 = res.heatmap.metadata["napari_histo"]["region"]
    prob = np.asarray(res.heatmap.data)
    # one output pixel per 32 px cell
    assert abs(prob.shape[0] - (y1 - y0) / 32) <= 1 and abs(prob.shape[1] - (x1 - x0) / 32) <= 1
    assert np.allclose(res.heatmap.scale, np.asarray(image.scale) * 32, rtol=0.05)
    # the cells' labels are thin outlines on a finer grid that stops at the slide's edge
    lab = res.labels
    assert res.cells is not None and res.cells.up > 1 and lab.contour == 1
    h0, w0 = image.data[0].shape[:2] if image.multiscale else image.data.shape[:2]
    for ax, n0 in ((0, h0), (1, w0)):
        end = lab.translate[ax] + (lab.data.shape[ax] - 0.5) * lab.scale[ax]
        assert end <= image.translate[ax] + (n0 - 0.5) * image.scale[ax] + lab.scale[ax] / 2
    # and the heatmap's low probabilities are transparent
    assert res.heatmap.colormap.map(np.array([0.0]))[0, 3] == 0.0


def test_stain_fit_lazy_layer_and_training(make_napari_viewer, qtbot, glas_pair,
                                           no_threads_left):
    viewer = make_napari_viewer()
    image = viewer.open(str(glas_pair[0]), plugin="napari-histo")[0]
    shapes = viewer.add_shapes([np.array([[50, 50], [250, 350]])], shape_type="rectangle",
                               scale=image.scale, name="reference")
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    w = StainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    w._image_combo.value = image
    w._shapes_combo.value = shapes
    h = w.fit()
    qtbot.waitUntil(lambda: w.layer is not None, timeout=30000)
    import dask.array as da

    assert isinstance(w.layer.data, da.Array)  # computed lazily
    part = np.asarray(w.layer.data[:64, :64])
    assert part.shape == (64, 64, 3) and part.dtype == np.uint8
    assert w.params["method"] == "macenko"
    ref = w.use_for_training()
    assert ref and Path(ref).is_file()
    assert train._stain_combo.value == "macenko"
    assert str(train._stain_ref_edit.value) == ref
    qtbot.waitUntil(lambda: h.done, timeout=5000)


def test_demo_segments_the_view(make_napari_viewer, qtbot, sample_cache, tmp_path,
                                no_threads_left):
    from napari_histo.plugin.demo import run_demo

    viewer = make_napari_viewer()
    s = run_demo(viewer, epochs=1, steps_per_epoch=2, model_dir=tmp_path / "model")
    assert s.image_layer is not None and s.truth_layer is not None
    qtbot.waitUntil(lambda: s.checkpoint is not None, timeout=180000)
    assert Path(s.checkpoint).is_file()
    qtbot.waitUntil(lambda: s.segment_task is not None and s.segment_task.done, timeout=60000)
    seg = s.widgets["segment"]
    qtbot.waitUntil(lambda: seg._run_button.enabled, timeout=5000)
    assert seg.result is not None and seg.result.heatmap in viewer.layers
    # a second start reuses the cached model (no training)
    s2 = run_demo(viewer, epochs=1, steps_per_epoch=2, model_dir=tmp_path / "model",
                  segment=False)
    qtbot.waitUntil(lambda: s2.checkpoint is not None, timeout=10000)
    assert s2.checkpoint == s.checkpoint
