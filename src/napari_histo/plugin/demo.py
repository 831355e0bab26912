"""The GUI demo (``napari-histo demo`` / ``python -m napari_histo.plugin.demo``).

Opens napari with the synthetic sample slide and its tumour mask, docks the Segment, Train,
Correct and Evaluate widgets, gets a working model (cached, or trained offline in a worker on
first use while the window stays responsive), zooms on a region with tumour and segments the
visible region. Entry points: :func:`run_demo` (on an existing viewer; tests use it) and
:func:`main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DemoSession", "main", "run_demo"]


class DemoSession:
    """The widgets and the model task of one demo (kept so tests can watch them)."""

    def __init__(self) -> None:
        self.widgets: dict[str, Any] = {}
        self.model_task: Any = None
        self.checkpoint: str | None = None
        self.segment_task: Any = None
        self.image_layer: Any = None
        self.truth_layer: Any = None
        self.segment_dock: Any = None


def run_demo(viewer: Any, *, epochs: int = 6, steps_per_epoch: int = 24,
             model_dir: str | Path | None = None, segment: bool = True) -> DemoSession:
    """Populate ``viewer`` with the demo: sample slide + mask, widgets, model, segmentation."""
    from napari_histo.engine.demo import demo_model_path, ensure_demo_model
    from napari_histo.plugin._correct_widget import CorrectWidget
    from napari_histo.plugin._evaluate_widget import EvaluateWidget
    from napari_histo.plugin._sample_data import sample_slide_path
    from napari_histo.plugin._segment_widget import SegmentWidget
    from napari_histo.plugin._train_widget import TrainWidget
    from napari_histo.plugin._workers import preload_torch_training, start_task

    session = DemoSession()
    slide = sample_slide_path()
    mask = slide.with_name(f"{slide.stem}_mask.tif")
    layers = viewer.open(str(slide), plugin="napari-histo")
    session.image_layer = next(lyr for lyr in layers if type(lyr).__name__ == "Image")
    truths = [lyr for lyr in viewer.layers if type(lyr).__name__ == "Labels"]
    session.truth_layer = truths[0] if truths else None
    seg = SegmentWidget(viewer)
    train = TrainWidget(viewer)
    corr = CorrectWidget(viewer)
    ev = EvaluateWidget(viewer)
    session.widgets = {"segment": seg, "train": train, "correct": corr, "evaluate": ev}
    first = viewer.window.add_dock_widget(seg, name="Segment", area="right")
    for name, w in (("Train", train), ("Correct and fine-tune", corr), ("Evaluate", ev)):
        dock = viewer.window.add_dock_widget(w, name=name, area="right", tabify=True)
        del dock
    first.raise_()
    session.segment_dock = first
    seg._image_combo.value = session.image_layer
    if session.truth_layer is not None:  # Correct scores its Dice against the slide's mask
        corr.reset_choices()
        corr._truth_combo.value = session.truth_layer
    _zoom_on_tumour(viewer, session)
    seg._status_label.value = "getting the demo model (trained offline on first use)..."

    def _model_ready(ckpt: Path) -> None:
        session.checkpoint = str(ckpt)
        seg.set_checkpoint(ckpt)
        corr_ckpt = getattr(corr, "set_checkpoint", None)
        if corr_ckpt is not None:
            corr_ckpt(ckpt)
        if segment:
            session.segment_task = seg.run("current view")

    def _progress(e: Any) -> None:
        text = getattr(e, "text", None)
        if text:
            seg._status_label.value = text
        elif hasattr(e, "epoch"):
            train.curves.add_epoch(e.epoch, e.metrics)
            seg._status_label.value = f"training the demo model: epoch {e.epoch}/{epochs}"

    # one demo model for the GUI and ``napari-histo demo --headless`` (core.settings)
    target = demo_model_path(model_dir)
    folder = target.parent
    if not target.is_file():
        preload_torch_training()  # training imports must not happen first in the worker
    session.model_task = start_task(ensure_demo_model, slide, mask, folder, epochs=epochs,
                                    steps_per_epoch=steps_per_epoch, on_event=_progress,
                                    on_returned=_model_ready, desc="demo model", watch=seg)
    return session


def _zoom_on_tumour(viewer: Any, session: DemoSession) -> None:
    """Centre the camera on the largest tumour area of the mask (in world units)."""
    import numpy as np

    from napari_histo.plugin._result_layers import camera_of

    image = session.image_layer
    truth = session.truth_layer
    if truth is None:
        viewer.reset_view()
        return
    data = truth.data[-1] if truth.multiscale else truth.data
    lab = np.asarray(data)
    if not lab.any():
        viewer.reset_view()
        return
    ys, xs = np.nonzero(lab)
    level_scale = np.asarray(truth.scale[-2:], dtype=float)
    if truth.multiscale:
        level_scale = level_scale * np.asarray(truth.downsample_factors[-1][-2:], dtype=float)
    cy, cx = np.median(ys), np.median(xs)
    center = np.asarray(truth.translate[-2:], dtype=float) + np.array([cy, cx]) * level_scale
    camera_of(viewer).center = tuple(center)
    span = 600.0 * float(image.scale[-1]) * 4  # about 1200 um across at 0.5 um/px
    camera_of(viewer).zoom = max(viewer.canvas.size) / span


def main(argv: Sequence[str] | None = None) -> int:
    """Open napari with the demo and run its event loop."""
    parser = argparse.ArgumentParser(prog="napari-histo demo")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    import napari

    viewer = napari.Viewer(title="napari-histo demo")
    _fit_window(viewer)
    session = run_demo(viewer, epochs=args.epochs)
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, session.segment_dock.raise_)  # once the tabs exist: show Segment
    napari.run()
    return 0


def _fit_window(viewer: Any) -> None:
    """Make the window 90 % of the screen: napari's default leaves the canvas a narrow strip
    beside four docked widgets."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if screen is None:
        return
    geo = screen.availableGeometry()
    viewer.window.resize(int(geo.width() * 0.9), int(geo.height() * 0.9))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
