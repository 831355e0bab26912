"""Screenshots of each dock widget in action (a real window; run under Xvfb with xcb).

Usage::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" \\
        .venv/bin/python tests/plugin/widgets/screenshots.py OUT_DIR [--model CKPT] [--quick]

``--model`` is a segmentation checkpoint for the sample slide (default: the demo model,
trained offline on first use); ``--quick`` uses tiny budgets (tests). Writes
``widget_segment.png``, ``widget_train.png``, ``widget_correct.png``, ``widget_evaluate.png``
and ``widget_stain.png``; prints each path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _wait(cond: Callable[[], bool], timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while not cond():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("screenshot step timed out")
    for _ in range(20):  # let the canvas redraw
        QApplication.processEvents()
        time.sleep(0.02)


def _viewer() -> Any:
    import napari

    v = napari.Viewer(show=True, title="napari-histo")
    v.window._qt_window.resize(1500, 950)
    return v


def _shot(viewer: Any, path: Path) -> Path:
    _wait(lambda: True)
    viewer.window.screenshot(str(path), canvas_only=False)
    _shrink_png(path)
    print(path, flush=True)
    return path


def _shrink_png(path: Path) -> None:
    """Re-save as a 256-colour PNG: a third of the size, no visible change in a screenshot."""
    from PIL import Image

    with Image.open(path) as im:
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.NONE)
    q.save(path, optimize=True)


def _sample(viewer: Any) -> tuple[Any, Any]:
    from napari_histo.plugin._sample_data import sample_slide_path

    viewer.open(str(sample_slide_path()), plugin="napari-histo")
    image = next(lyr for lyr in viewer.layers if type(lyr).__name__ == "Image")
    truth = next(lyr for lyr in viewer.layers if type(lyr).__name__ == "Labels")
    return image, truth


def segment_and_correct(out: Path, model: str, quick: bool) -> None:
    """Segment the view of the sample slide, evaluate it, correct it and fine-tune."""
    from napari_histo.plugin._correct_widget import CorrectWidget
    from napari_histo.plugin._evaluate_widget import EvaluateWidget
    from napari_histo.plugin._segment_widget import SegmentWidget
    from napari_histo.plugin.demo import DemoSession, _zoom_on_tumour

    viewer = _viewer()
    image, truth = _sample(viewer)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    seg._image_combo.value = image
    seg.set_checkpoint(model)
    s = DemoSession()
    s.image_layer, s.truth_layer = image, truth
    _zoom_on_tumour(viewer, s)
    truth.contour = 3
    h = seg.run("current view")
    _wait(lambda: h.done and seg._run_button.enabled)
    _shot(viewer, out / "widget_segment.png")

    ev = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(ev, name="Evaluate", area="right", tabify=True)
    ev.reset_choices()
    ev._pred_combo.value = seg.result.heatmap
    ev._truth_combo.value = truth
    ev.evaluate()
    _wait(lambda: ev.result is not None)
    _shot(viewer, out / "widget_evaluate.png")

    corr = CorrectWidget(viewer)
    viewer.window.add_dock_widget(corr, name="Correct and fine-tune", area="right",
                                  tabify=True)
    corr.reset_choices()
    corr._prediction_combo.value = seg.result.labels
    corr._image_combo.value = image
    corr.set_checkpoint(model)
    sess = corr.edit_visible_region()
    lab = sess.layer
    # the user erases false positives: predicted tumour where the ground truth has none
    from napari_histo.engine.corrections import resample_nearest

    tdata = truth.data[0] if truth.multiscale else truth.data
    t_win = resample_nearest(tdata, truth.scale[-2:], truth.translate[-2:], lab.data.shape,
                             lab.scale[-2:], lab.translate[-2:])
    fp = np.argwhere((np.asarray(lab.data) == 1) & (t_win == 0))
    rng = np.random.default_rng(0)
    lab.brush_size = 15
    for y, x in fp[rng.choice(len(fp), size=min(60, len(fp)), replace=False)]:
        lab.paint((int(y), int(x)), 0)
    lab.selected_label = 0
    corr._epochs_spin.value = 2 if quick else 4
    corr._steps_spin.value = 2 if quick else 8
    before = ev.result["metrics"]["dice"]
    ft = corr.fine_tune()
    _wait(lambda: ft.done and corr._finetune_button.enabled
          and corr.rerun_task is not None and corr.rerun_task.done and seg._run_button.enabled)
    ev.reset_choices()
    ev._pred_combo.value = seg.result.heatmap
    ev.result = None
    ev.evaluate()
    _wait(lambda: ev.result is not None)
    after = ev.result["metrics"]["dice"]
    print(f"Dice in view before corrections {before:.3f}, after fine-tuning {after:.3f}")
    corr._status_label.value = f"Dice in view: {before:.3f} before, {after:.3f} after fine-tuning"
    seg.result.heatmap.visible = False
    # the first prediction's layers were replaced by the fine-tuned run's (same widget)
    corr.native.parent().raise_() if corr.native.parent() is not None else None
    _shot(viewer, out / "widget_correct.png")
    viewer.close()


def train_glas(out: Path, quick: bool) -> None:
    """Train on a GlaS image + its labels from the viewer; curves and preview."""
    from napari_histo.plugin._train_widget import TrainWidget

    viewer = _viewer()
    root = SHARED / "glas_gland_segmentation"
    layers = viewer.open(str(root / "images" / "train_1.png"), plugin="napari-histo")
    image = layers[0]
    labels = [lyr for lyr in viewer.layers if type(lyr).__name__ == "Labels"]
    if not labels:
        from skimage.io import imread

        labels = [viewer.add_labels(imread(root / "labels" / "train_1.png"), name="truth")]
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train", area="right")
    w._image_combo.value = image
    w._labels_combo.value = labels[0]
    w._model_combo.value = "unet-tiny"
    w._epochs_spin.value = 3 if quick else 8
    w._batch_spin.value = 4
    w._patch_spin.value = 128
    w._steps_spin.value = 3 if quick else 10
    w._device_combo.value = "cpu"
    w._out_edit.value = str(out / "_runs")
    h = w.start()
    _wait(lambda: h.done and w._start_button.enabled
          and (w._preview_handle is None or w._preview_handle.done))
    labels[0].contour = 2
    viewer.reset_view()
    _shot(viewer, out / "widget_train.png")
    viewer.close()


def stain_glas(out: Path) -> None:
    """Fit Macenko on a drawn rectangle of a GlaS image; lazy normalised layer beside it."""
    from napari_histo.plugin._stain_widget import StainWidget

    viewer = _viewer()
    root = SHARED / "stain_tiles" / "torchstain"
    # plain PNG tiles (no slide metadata, no mask beside them): napari's own reader opens
    # them, napari-histo's declines plain pictures
    target = viewer.open(str(root / "target.png"), plugin="napari")[0]
    image = viewer.open(str(root / "source.png"), plugin="napari")[0]
    for lyr in list(viewer.layers):
        if lyr is not image and lyr is not target:
            viewer.layers.remove(lyr)
    h, w_ = image.data.shape[:2]
    s = float(image.scale[-1])
    image.translate = (0, w_ * s * 1.05)
    th, tw = target.data.shape[:2]
    shapes = viewer.add_shapes([np.array([[th * 0.15, tw * 0.15], [th * 0.85, tw * 0.85]])],
                               shape_type="rectangle", edge_color="yellow", face_color=[0] * 4,
                               edge_width=4, name="reference region", scale=target.scale)
    w = StainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Stain normalization", area="right")
    w.reset_choices()
    w._image_combo.value = image
    w._ref_combo.value = target
    w._shapes_combo.value = shapes
    w._method_combo.value = "macenko"
    w.fit()
    _wait(lambda: w.layer is not None)
    # reference | original | normalised, side by side
    w.layer.translate = (0, w_ * s * 2.1)
    viewer.reset_view()
    _shot(viewer, out / "widget_stain.png")
    viewer.close()


def main(argv: list[str] | None = None) -> int:
    """Write all screenshots into the output folder."""
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--model", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None, help="segment, train or stain")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None and args.only in (None, "segment"):
        from napari_histo.core.progress import run_task
        from napari_histo.engine.demo import ensure_demo_model
        from napari_histo.plugin._sample_data import sample_slide_path
        from napari_histo.plugin._segment_widget import user_dir

        slide = sample_slide_path()
        model = str(run_task(ensure_demo_model(slide, slide.with_name(f"{slide.stem}_mask.tif"),
                                               user_dir() / "demo-model")))
    if args.only in (None, "segment"):
        segment_and_correct(args.out, model, args.quick)
    if args.only in (None, "train"):
        train_glas(args.out, args.quick)
    if args.only in (None, "stain"):
        stain_glas(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
