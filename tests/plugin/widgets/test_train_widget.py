"""Train widget: two epochs from a GlaS image + its Labels layer, curves grow, stop/resume,
"Use this model" hands the checkpoint to Segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_histo.plugin._jobs import layer_pair_samples
from napari_histo.plugin._train_widget import TrainWidget


def _glas_layers(viewer, glas_pair):
    layers = viewer.open(str(glas_pair[0]), plugin="napari-histo")
    image = [lyr for lyr in layers if lyr.__class__.__name__ == "Image"][0]
    labels = [lyr for lyr in viewer.layers if lyr.__class__.__name__ == "Labels"]
    if not labels:  # reader did not pair the mask: add it by hand
        from skimage.io import imread

        labels = [viewer.add_labels(imread(glas_pair[1]).astype(np.uint8), name="truth",
                                    scale=image.scale, translate=image.translate)]
    return image, labels[0]


def _small(w, tmp_path: Path, epochs=2):
    w._model_combo.value = "unet-tiny"
    w._epochs_spin.value = epochs
    w._batch_spin.value = 2
    w._patch_spin.value = 64
    w._steps_spin.value = 3
    w._device_combo.value = "cpu"
    w._out_edit.value = str(tmp_path / "runs")


def test_layer_pair_samples_align(make_napari_viewer, glas_pair):
    viewer = make_napari_viewer()
    image, labels = _glas_layers(viewer, glas_pair)
    samples = layer_pair_samples(image, labels)
    assert len(samples) == 2  # one region split in two groups for validation
    assert {s.group for s in samples} == {f"{image.name}-0", f"{image.name}-1"}
    s = samples[0]
    assert s.image.shape[:2] == s.labels.shape
    assert set(np.unique(s.labels)) <= {0, 1}
    # a labels layer at half resolution placed over the same extent gives the same classes
    lab = np.asarray(labels.data)
    half = viewer.add_labels(lab[::2, ::2], scale=np.asarray(image.scale) * 2,
                             translate=np.asarray(image.scale) / 2, name="half")
    s2 = layer_pair_samples(image, half, split_single=False)[0]
    agree = (s2.labels == (lab > 0)).mean()
    assert agree > 0.97


def test_train_two_epochs_curves_grow(make_napari_viewer, qtbot, glas_pair, tmp_path,
                                      no_threads_left):
    viewer = make_napari_viewer()
    image, labels = _glas_layers(viewer, glas_pair)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w._labels_combo.value = labels
    _small(w, tmp_path)
    lengths = []
    h = w.start()
    assert h is not None
    qtbot.waitUntil(lambda: (lengths.append(len(w.curves.history)) or h.done), timeout=120000)
    qtbot.waitUntil(lambda: w._start_button.enabled, timeout=5000)
    assert h.error is None, h.error
    assert len(w.curves.history) == 2
    assert lengths[0] == 0 and 1 in lengths or len(w.curves.history) == 2
    assert np.isfinite(w.curves.series("train_loss")).all()
    assert w.best_checkpoint and Path(w.best_checkpoint).is_file()
    qtbot.waitUntil(lambda: w.preview_layer is not None, timeout=30000)
    qtbot.waitUntil(lambda: w._preview_handle.done, timeout=30000)
    assert w.preview_layer in viewer.layers
    seg = w.use_model()
    assert str(seg._ckpt_edit.value) == str(Path(w.best_checkpoint))


def test_stop_and_resume(make_napari_viewer, qtbot, glas_pair, tmp_path, no_threads_left):
    viewer = make_napari_viewer()
    image, labels = _glas_layers(viewer, glas_pair)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w._labels_combo.value = labels
    w._preview_check.value = False
    _small(w, tmp_path, epochs=50)
    h = w.start()
    qtbot.waitUntil(lambda: len(w.curves.history) >= 1, timeout=120000)
    w.stop()
    qtbot.waitUntil(lambda: h.done and w._start_button.enabled, timeout=60000)
    assert h.cancelled
    n = len(w.curves.history)
    assert n < 50
    assert w._resume_button.enabled
    w._epochs_spin.value = n + 1
    h2 = w.start(resume=True)
    qtbot.waitUntil(lambda: h2.done and w._start_button.enabled, timeout=120000)
    assert h2.error is None, h2.error
    assert len(w.curves.history) > n


def test_cross_validation_shows_out_of_fold_metrics(make_napari_viewer, qtbot, glas_pair,
                                                   tmp_path, no_threads_left):
    """With folds set, the widget runs group K-fold and shows pooled out-of-fold metrics with
    their intervals; each fold gets its own curves; "Use this model" hands over fold 1's."""
    viewer = make_napari_viewer()
    image, labels = _glas_layers(viewer, glas_pair)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w._labels_combo.value = labels
    w._preview_check.value = False
    _small(w, tmp_path, epochs=1)
    w._folds_spin.value = 1
    assert w.start() is None  # one fold is not cross-validation: refused, nothing runs
    w._folds_spin.value = 2  # the single pair is split into two groups
    h = w.start()
    assert h is not None
    qtbot.waitUntil(lambda: h.done and w._start_button.enabled, timeout=180000)
    assert h.error is None, h.error
    assert len(w.result.folds) == 2
    assert len(w.curves.history) == 1  # the second fold's curves, not both folds mixed
    text = w._status_label.value
    assert "2-fold out-of-fold" in text and "val_dice=" in text and "[" in text, text
    run = Path(w.result.run_dir)
    assert (run / "crossval.json").is_file() and (run / "fold_2").is_dir()
    assert Path(w.best_checkpoint).parent.name == "fold_1"


def test_model_menu_comes_from_the_registry(make_napari_viewer):
    """The combo offers the registry's models per task, and the timm family as
    ``timm:<name>`` with a backbone field (as ``napari-histo train --model timm:NAME``)."""
    import pytest

    from napari_histo.core.model_registry import TIMM_ENTRY, default_model, model_choices

    w = TrainWidget(make_napari_viewer())
    assert tuple(w._model_combo.choices) == model_choices("segment")
    assert w._model_combo.value == default_model("segment")
    w._task_combo.value = "classify"
    assert tuple(w._model_combo.choices) == model_choices("classify")
    assert w._model_combo.value == default_model("classify")
    assert w._model_name() == "cnn-small"
    w._model_combo.value = TIMM_ENTRY
    assert not w._timm_edit.native.isHidden()  # (the dock itself is not shown)
    with pytest.raises(ValueError, match="timm backbone"):
        w._model_name()
    w._timm_edit.value = "efficientnet_b0"
    assert w._model_name() == "timm:efficientnet_b0"
    w._model_combo.value = "resnet18"
    assert w._timm_edit.native.isHidden()
