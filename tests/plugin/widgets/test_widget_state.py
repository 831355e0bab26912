"""What the dock widgets say and show at the end of a run, and how they follow the viewer.

Issue 11: every run ends in exactly one of done / cancelled / failed (bar full on done, the
counts really finished on cancel), late events are dropped, closing the viewer mid-run or
right after a run leaves no traceback; layer pickers pre-select the obvious layer and keep
the user's choice; "Use this model" reuses one Segment dock (tabified); integer epoch
ticks; a checkpoint of the other task is refused with a notification naming the right widget.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.progress import Progress
from napari_histo.plugin._heatmap_widget import HeatmapWidget
from napari_histo.plugin._plots import CurvePlot
from napari_histo.plugin._segment_widget import SegmentWidget
from napari_histo.plugin._train_widget import TrainWidget
from napari_histo.plugin._widget_base import FAILED_STATUS


def _open(viewer, path):
    return viewer.open(str(path), plugin="napari-histo")[0]


def _bar(w):
    return int(w._progress_bar.value), int(w._progress_bar.max)


def _ended(w, h):
    return h.done and not w.running


def _svs_widget(make_napari_viewer, cmu_svs, checkpoint):
    viewer = make_napari_viewer()
    image = _open(viewer, cmu_svs)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(checkpoint)
    return viewer, w


def _glas_train(make_napari_viewer, glas_pair, tmp_path, epochs):
    from skimage.io import imread

    viewer = make_napari_viewer()
    image = viewer.add_image(imread(glas_pair[0]), name="glas")
    labels = viewer.add_labels((imread(glas_pair[1]) > 0).astype(np.uint8), name="truth")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w._image_combo.value is image and w._labels_combo.value is labels  # pre-selected
    w._model_combo.value = "unet-tiny"
    w._epochs_spin.value = epochs
    w._batch_spin.value = 2
    w._patch_spin.value = 64
    w._steps_spin.value = 3
    w._device_combo.value = "cpu"
    w._preview_check.value = False
    w._out_edit.value = str(tmp_path / "runs")
    return viewer, w


# ---------------------------------------------------------------------- end states: Segment


def test_segment_done_fills_the_bar_and_drops_late_events(make_napari_viewer, qtbot,
                                                          glas_pair, tiny_checkpoint,
                                                          no_threads_left):
    viewer = make_napari_viewer()
    _open(viewer, glas_pair[0])
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_checkpoint(tiny_checkpoint)  # the image picker needs no help: one image is open
    viewer.reset_view()
    h = w.run("current view")
    assert h is not None
    qtbot.waitUntil(lambda: _ended(w, h), timeout=60000)
    assert h.error is None, h.error
    assert w._status_label.value.startswith("done")
    value, top = _bar(w)
    assert value == top > 0
    # an event arriving after the end changes nothing
    h.worker.yielded.emit(Progress(done=1, total=4, desc="tiles"))
    qtbot.wait(50)
    assert w._status_label.value.startswith("done") and _bar(w) == (value, top)


def test_segment_cancel_shows_what_was_finished(make_napari_viewer, qtbot, cmu_svs,
                                               tiny_checkpoint, no_threads_left):
    viewer, w = _svs_widget(make_napari_viewer, cmu_svs, tiny_checkpoint)
    h = w.run("whole slide")
    qtbot.waitUntil(lambda: w._progress_bar.value > 0 or h.done, timeout=60000)
    w.cancel()
    assert w._status_label.value == "cancelling..."
    qtbot.waitUntil(lambda: _ended(w, h), timeout=60000)
    assert h.cancelled
    m = re.fullmatch(r"cancelled after (\d+)/(\d+) tiles", w._status_label.value)
    assert m, w._status_label.value
    done, total = int(m.group(1)), int(m.group(2))
    assert 0 < done < total
    assert _bar(w) == (done, total)
    assert w._run_button.enabled and not w._cancel_button.enabled
    h.worker.yielded.emit(Progress(done=total, total=total, desc="tiles"))  # late: dropped
    qtbot.wait(50)
    assert _bar(w) == (done, total) and w._status_label.value == m.group(0)


def test_segment_close_viewer_mid_run(make_napari_viewer, qtbot, cmu_svs, tiny_checkpoint,
                                      capfd):
    from napari_histo.plugin._workers import active_handles

    viewer, w = _svs_widget(make_napari_viewer, cmu_svs, tiny_checkpoint)
    h = w.run("whole slide")
    qtbot.waitUntil(lambda: w._progress_bar.value > 0 or h.done, timeout=60000)
    viewer.close()
    assert h.done and h.detached
    qtbot.wait(200)  # queued events of the run reach nothing
    assert not active_handles()
    assert "RuntimeError" not in capfd.readouterr().err


def test_close_viewer_right_after_a_run(make_napari_viewer, qtbot, glas_pair, tiny_checkpoint,
                                        capfd):
    """The run ended in its thread, its last events still queued: closing is quiet."""
    viewer = make_napari_viewer()
    _open(viewer, glas_pair[0])
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_checkpoint(tiny_checkpoint)
    viewer.reset_view()
    h = w.run("current view")
    assert h.wait(60)  # blocks the GUI thread: nothing of the run has been delivered yet
    viewer.close()
    qtbot.wait(200)
    assert "wrapped C/C++ object" not in capfd.readouterr().err


def test_failed_run_says_failed(make_napari_viewer, qtbot, glas_pair, tmp_path):
    viewer = make_napari_viewer()
    _open(viewer, glas_pair[0])
    w = SegmentWidget(viewer)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    w.set_checkpoint(bad)
    viewer.reset_view()
    h = w.run("current view")
    assert h is not None
    qtbot.waitUntil(lambda: _ended(w, h), timeout=30000)
    assert h.error is not None
    assert w._status_label.value == FAILED_STATUS


# ---------------------------------------------------------------------- end states: Train


def test_train_done_then_late_event(make_napari_viewer, qtbot, glas_pair, tmp_path,
                                    no_threads_left):
    _, w = _glas_train(make_napari_viewer, glas_pair, tmp_path, epochs=1)
    h = w.start()
    assert h is not None
    qtbot.waitUntil(lambda: _ended(w, h), timeout=180000)
    assert h.error is None, h.error
    text = w._status_label.value
    assert text.startswith("done: "), text
    value, top = _bar(w)
    assert value == top > 0
    h.worker.yielded.emit(Progress(done=1, total=99, desc="train"))
    qtbot.wait(50)
    assert w._status_label.value == text and _bar(w) == (value, top)


def test_train_stop_and_close_mid_run(make_napari_viewer, qtbot, glas_pair, tmp_path, capfd):
    from napari_histo.plugin._workers import active_handles

    viewer, w = _glas_train(make_napari_viewer, glas_pair, tmp_path, epochs=50)
    h = w.start()
    qtbot.waitUntil(lambda: w._progress_bar.value > 0, timeout=180000)
    w.stop()
    qtbot.waitUntil(lambda: _ended(w, h), timeout=120000)
    assert h.cancelled
    m = re.fullmatch(r"stopped after (\d+)/(\d+) batches; Resume continues from the last "
                     r"checkpoint", w._status_label.value)
    assert m, w._status_label.value
    assert _bar(w) == (int(m.group(1)), int(m.group(2)))
    assert w._start_button.enabled and w._resume_button.enabled
    # a second run, closed mid-run: stops cleanly, no traceback
    h2 = w.start()
    qtbot.waitUntil(lambda: w._progress_bar.value > 0 or h2.done, timeout=180000)
    viewer.close()
    assert h2.done
    qtbot.wait(200)
    assert not active_handles()
    assert "RuntimeError" not in capfd.readouterr().err


# ---------------------------------------------------------------------- layer pickers


def _rgb(viewer, name, **kw):
    return viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name=name, **kw)


def test_pickers_preselect_and_follow_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    a = _rgb(viewer, "a")
    w = SegmentWidget(viewer)
    t = TrainWidget(viewer)
    assert w._image_combo.value is a  # the only fitting layer
    assert t._image_combo.value is a and t._labels_combo.value is None
    b = _rgb(viewer, "b")
    assert w._image_combo.value is b  # the most recently added, while the user chose none
    _rgb(viewer, "b prediction", metadata={"napari_histo": {"kind": "prediction"}})
    assert w._image_combo.value is b  # our own outputs are not "the obvious layer"
    truth = viewer.add_labels(np.zeros((32, 32), np.uint8), name="truth")
    assert t._labels_combo.value is truth
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="pred labels",
                      metadata={"napari_histo": {"kind": "prediction"}})
    assert t._labels_combo.value is truth
    shapes = viewer.add_shapes(name="regions")
    assert w._shapes_combo.value is shapes
    assert t._shapes_combo.value is None  # Train's regions restrict training: opt-in only
    # the user's choice is kept through insertions and renames
    w._image_combo.value = a
    _rgb(viewer, "c")
    assert w._image_combo.value is a
    a.name = "renamed"
    assert w._image_combo.value is a
    assert "renamed" in [w._image_combo.native.itemText(i)
                         for i in range(w._image_combo.native.count())]
    # ... until its layer is removed: back to the obvious one
    viewer.layers.remove(a)
    assert w._image_combo.value is viewer.layers["c"]


def test_segment_with_one_slide_needs_no_picking(make_napari_viewer, cmu_svs):
    viewer = make_napari_viewer()
    image = _open(viewer, cmu_svs)
    w = SegmentWidget(viewer)
    assert w._image_combo.value is image


# ---------------------------------------------------------------------- Use this model


def _dock_of(widget):
    from qtpy.QtWidgets import QDockWidget

    node = widget.native
    while node is not None and not isinstance(node, QDockWidget):
        node = node.parent()
    return node


def test_use_this_model_reuses_one_segment_dock(make_napari_viewer, tiny_checkpoint,
                                                classifier_checkpoint):
    viewer = make_napari_viewer()
    t = TrainWidget(viewer)
    viewer.window.add_dock_widget(t, name="Train", area="right")
    heat = HeatmapWidget(viewer)  # a Patch heatmap is not the Segment widget
    viewer.window.add_dock_widget(heat, name="Patch heatmap", area="right", tabify=True)
    t.last_checkpoint = str(tiny_checkpoint)
    seg = t.use_model()
    assert type(seg) is SegmentWidget
    assert seg is t.use_model()  # the second time: the same widget
    segs = [w for w in viewer.window.dock_widgets.values() if type(w) is SegmentWidget]
    assert segs == [seg]
    assert Path(str(seg._ckpt_edit.value)) == Path(tiny_checkpoint)
    main = viewer.window._qt_window
    assert main.tabifiedDockWidgets(_dock_of(seg))  # a tab, not a dock below Train
    # a classifier goes to the Patch heatmap widget already docked
    t.last_checkpoint = str(classifier_checkpoint)
    assert t.use_model() is heat
    assert Path(str(heat._ckpt_edit.value)) == Path(classifier_checkpoint)


# ---------------------------------------------------------------------- curves


@pytest.mark.parametrize("n_epochs", [1, 2, 7])
def test_epoch_ticks_are_integers(qtbot, n_epochs):
    plot = CurvePlot()
    for e in range(1, n_epochs + 1):
        plot.add_epoch(e, {"train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_dice": 0.1 * e})
    for ax in (plot.ax_loss, plot.ax_metric):
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    qtbot.wait(20)  # the coalesced redraw runs while the canvas is alive


# ---------------------------------------------------------------------- checkpoint kind


def _errors(monkeypatch):
    import napari.utils.notifications as notifications

    seen: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: seen.append(str(msg)))
    return seen


def test_wrong_kind_checkpoint_is_refused(make_napari_viewer, monkeypatch, tiny_checkpoint,
                                          classifier_checkpoint):
    from napari_histo.engine.checkpoint_meta import checkpoint_task

    assert checkpoint_task(tiny_checkpoint) == "segment"
    assert checkpoint_task(classifier_checkpoint) == "classify"
    viewer = make_napari_viewer()
    _rgb(viewer, "img")
    seen = _errors(monkeypatch)
    seg = SegmentWidget(viewer)
    seg.set_checkpoint(classifier_checkpoint)
    assert seg.run("current view") is None and seg.handle is None
    assert len(seen) == 1 and "Patch heatmap" in seen[0] and "classifier" in seen[0]
    heat = HeatmapWidget(viewer)
    heat.set_checkpoint(tiny_checkpoint)
    assert heat.run("current view") is None and heat.handle is None
    assert len(seen) == 2 and "Segment widget" in seen[1] and "segmentation" in seen[1]
