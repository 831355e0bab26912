"""Train widget with "processes" >= 2: a real 2-process gloo run as a followed subprocess
(issue 14). Curves fill from its events, the end state is the in-process one, Stop and
closing the viewer leave no process behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psutil

from napari_histo.plugin._train_widget import TrainWidget


def _glas_layers(viewer, glas_pair):
    from skimage.io import imread

    layers = viewer.open(str(glas_pair[0]), plugin="napari-histo")
    image = [lyr for lyr in layers if lyr.__class__.__name__ == "Image"][0]
    labels = [lyr for lyr in viewer.layers if lyr.__class__.__name__ == "Labels"]
    if not labels:
        labels = [viewer.add_labels(imread(glas_pair[1]).astype(np.uint8), name="truth",
                                    scale=image.scale, translate=image.translate)]
    return image, labels[0]


def _widget(viewer, glas_pair, tmp_path: Path, epochs: int) -> TrainWidget:
    image, labels = _glas_layers(viewer, glas_pair)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w._labels_combo.value = labels
    w._preview_check.value = False
    w._model_combo.value = "unet-tiny"
    w._epochs_spin.value = epochs
    w._batch_spin.value = 4  # the global batch: two patches per process
    w._patch_spin.value = 64
    w._steps_spin.value = 2
    w._device_combo.value = "cpu"
    w._out_edit.value = str(tmp_path / "runs")
    w._procs_spin.value = 2
    return w


def _tree(pid: int) -> list[psutil.Process]:
    """The launcher and its ranks."""
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def _gone(procs: list[psutil.Process]) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


def test_two_processes_curves_done_and_use_model(make_napari_viewer, qtbot, glas_pair,
                                                 tmp_path, no_threads_left):
    viewer = make_napari_viewer()
    w = _widget(viewer, glas_pair, tmp_path, epochs=2)
    h = w.start()
    assert h is not None
    qtbot.waitUntil(lambda: h.done and w._start_button.enabled, timeout=120000)
    assert h.error is None, h.error
    assert not h.cancelled
    assert len(w.curves.history) == 2  # one point per epoch, from the subprocess's events
    assert np.isfinite(w.curves.series("train_loss")).all()
    assert w._status_label.value.startswith("done"), w._status_label.value
    assert w._progress_bar.value == w._progress_bar.max
    assert w.process is not None and w.process.returncode == 0
    run = Path(w.result.run_dir)
    assert (run / "run_card.yaml").is_file() and (run / "data").is_dir()
    assert w.best_checkpoint and Path(w.best_checkpoint).is_file()
    assert (run / "last.pt").is_file()
    assert "val_dice" in w.result.best_metrics and w.result.nproc == 2
    seg = w.use_model()
    assert str(seg._ckpt_edit.value) == str(Path(w.best_checkpoint))


def test_stop_interrupts_every_process_then_close_leaves_none(make_napari_viewer, qtbot,
                                                             glas_pair, tmp_path,
                                                             no_threads_left):
    viewer = make_napari_viewer()
    w = _widget(viewer, glas_pair, tmp_path, epochs=500)
    h = w.start()
    assert h is not None
    qtbot.waitUntil(lambda: len(w.curves.history) >= 1, timeout=120000)
    procs = _tree(w.process.pid)
    assert len(procs) >= 3  # the launcher and two ranks
    w.stop()
    qtbot.waitUntil(lambda: h.done and w._start_button.enabled, timeout=90000)
    assert h.cancelled and h.error is None
    assert w._status_label.value.startswith("stopped"), w._status_label.value
    assert w.process.returncode == 130  # SIGINT reached the launcher: ranks saved last.pt
    qtbot.waitUntil(lambda: _gone(procs), timeout=10000)
    run = Path(w._cfg.out_dir)
    assert (run / "last.pt").is_file()
    assert w._resume_button.enabled

    # a second run, closed with the viewer while it trains: nothing outlives it
    w._epochs_spin.value = 500
    h2 = w.start(resume=True)
    assert h2 is not None
    qtbot.waitUntil(lambda: w.process is not None and len(_tree(w.process.pid)) >= 3,
                    timeout=60000)
    procs = _tree(w.process.pid)
    viewer.close()
    assert h2.done
    qtbot.waitUntil(lambda: _gone(procs), timeout=10000)
    assert os.getpid() not in [p.pid for p in procs]
