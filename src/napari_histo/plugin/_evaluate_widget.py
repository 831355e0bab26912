"""Evaluate dock widget: a prediction layer against a ground-truth layer, or folders of slides.

Layer mode compares a heatmap Image layer (probabilities) or a Labels layer with a ground
truth Labels layer; the truth is resampled onto the prediction's pixel grid through both
layers' world placement (any resolution), chunk by chunk in a worker, into the engine's
:class:`~napari_histo.engine.evaluation.PixelAccumulator`: accuracy, Dice, IoU, ROC AUC and a
confusion matrix, with ROC and confusion plots in the dock. Folder mode runs
``engine.evaluation.evaluate_slides`` (per-slide metrics, slide-level AUC and the CAMELYON16
FROC) on prediction stores paired with masks/annotations by file name.
Entry point: :class:`EvaluateWidget`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, PushButton

from napari_histo.core.progress import Message, Progress
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._plots import ConfusionPlot, RocPlot
from napari_histo.plugin._workers import TaskHandle, start_task

if TYPE_CHECKING:
    import napari

__all__ = ["EvaluateWidget", "evaluate_layers_job", "evaluate_folders_job"]


def _placement(layer: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    return (tuple(float(v) for v in layer.scale[-2:]),  # type: ignore[return-value]
            tuple(float(v) for v in layer.translate[-2:]))


def evaluate_layers_job(prob: Any, prob_place: tuple[Any, Any], truth: Any,
                        truth_place: tuple[Any, Any], *, threshold: float = 0.5,
                        is_probability: bool = True, rows: int = 512) -> Any:
    """Pixel metrics of ``prob`` vs ``truth`` sampled on ``prob``'s grid, in row chunks."""
    from napari_histo.engine.corrections import resample_nearest
    from napari_histo.engine.evaluation import PixelAccumulator

    acc = PixelAccumulator(threshold=threshold)
    h, w = int(prob.shape[-2]), int(prob.shape[-1])
    (ps, pt), (ts, tt) = prob_place, truth_place
    n = -(-h // rows)
    for i, y0 in enumerate(range(0, h, rows)):
        y1 = min(h, y0 + rows)
        p = np.asarray(prob[y0:y1]).astype(np.float32)
        if p.ndim == 3:  # a channel axis: foreground = not background
            p = p[1] if p.shape[0] == 2 else 1.0 - p[0]
        if not is_probability:
            p = (p > 0).astype(np.float32)
        t = resample_nearest(truth, ts, tt, (y1 - y0, w), ps, (pt[0] + y0 * ps[0], pt[1]))
        acc.add(p, t)
        yield Progress(i + 1, n, "evaluate")
    metrics = acc.result()
    fpr, tpr = acc.curve()
    cm = np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])
    return {"metrics": metrics, "fpr": fpr, "tpr": tpr, "confusion": cm}


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".ome.zarr", ".zarr", "_mask.tif", "_mask.png", ".ome.tif", ".tif", ".png",
                ".xml", ".geojson", ".json"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return p.stem


def evaluate_folders_job(pred_dir: str, truth_dir: str, out_dir: str | None = None) -> Any:
    """Slide-level AUC and FROC over prediction stores paired with truths by name."""
    from napari_histo.core.errors import DataError
    from napari_histo.engine.evaluation import evaluate_slides

    preds = sorted(p for p in Path(pred_dir).iterdir() if not p.name.startswith("."))
    truths = {_stem(t): t for t in Path(truth_dir).iterdir() if not t.name.startswith(".")}
    pairs = [(p, truths[_stem(p)]) for p in preds if _stem(p) in truths]
    if not pairs:
        raise DataError(f"no prediction in {pred_dir} has a ground truth with the same name in "
                        f"{truth_dir} (e.g. tumor_001.ome.zarr + tumor_001_mask.tif)")
    yield Message(f"evaluating {len(pairs)} slide(s)")
    report = evaluate_slides([p for p, _ in pairs], [t for _, t in pairs], out_dir=out_dir)
    return report


class EvaluateWidget(Container):
    """Dock widget: metrics, ROC and confusion matrix of a prediction vs ground truth."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._pred_combo = ComboBox(label="prediction", choices=self._pred_choices,
                                    nullable=True)
        self._truth_combo = ComboBox(label="ground truth", choices=self._truth_choices,
                                     nullable=True)
        self._threshold_slider = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01,
                                             value=0.5)
        self._evaluate_button = PushButton(text="Evaluate layers")
        self._pred_dir_edit = FileEdit(label="prediction folder", mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True)
        self._truth_dir_edit = FileEdit(label="truth folder", mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True)
        self._folders_button = PushButton(text="Evaluate folders (slide AUC, FROC)")
        self._metrics_label = Label(label="", value="")
        self.roc = RocPlot()
        self.confusion = ConfusionPlot()
        self.extend([self._pred_combo, self._truth_combo, self._threshold_slider,
                     self._evaluate_button, self._metrics_label, self.roc.widget,
                     self.confusion.widget, self._pred_dir_edit, self._truth_dir_edit,
                     self._folders_button])
        self.native.setMaximumWidth(rl.DOCK_MAX_WIDTH)
        self.handle: TaskHandle | None = None
        self.result: dict[str, Any] | None = None
        self._evaluate_button.changed.connect(lambda *_: self.evaluate())
        self._folders_button.changed.connect(lambda *_: self.evaluate_folders())
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._reset)
        self._reset()

    def _pred_choices(self, *_: Any) -> list[tuple[str, Any]]:
        out = []
        for name, layer in rl.layers_of(self._viewer, "image") + rl.layers_of(self._viewer,
                                                                             "labels"):
            meta = layer.metadata.get("napari_histo") or {}
            if meta.get("kind") in ("prediction", "corrections"):
                out.append((name, layer))
        return out

    def _truth_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(n, lyr) for n, lyr in rl.layers_of(self._viewer, "labels")
                if (lyr.metadata.get("napari_histo") or {}).get("kind") != "prediction"]

    def _reset(self, *_: Any) -> None:
        try:
            self.reset_choices()
        except RuntimeError:
            pass

    def _busy(self) -> bool:
        if self.handle is not None and not self.handle.done:
            from napari.utils.notifications import show_info

            show_info("an evaluation is already running")
            return True
        return False

    def evaluate(self) -> TaskHandle | None:
        """Compare the chosen prediction layer with the ground-truth layer."""
        from napari.utils.notifications import show_error

        pred, truth = self._pred_combo.value, self._truth_combo.value
        if pred is None or truth is None:
            show_error("choose a prediction layer (heatmap or labels) and a ground-truth "
                       "Labels layer")
            return None
        if self._busy():
            return None
        data = pred.data[0] if pred.multiscale else pred.data
        tdata = truth.data[0] if truth.multiscale else truth.data
        is_prob = type(pred).__name__ == "Image"
        self._metrics_label.value = "evaluating..."
        self.handle = start_task(
            evaluate_layers_job, data, _placement(pred), tdata, _placement(truth),
            threshold=float(self._threshold_slider.value), is_probability=is_prob,
            on_returned=self._show, desc="evaluate", watch=self)
        return self.handle

    def evaluate_folders(self) -> TaskHandle | None:
        """Slide-level AUC and FROC for a folder of predictions and one of truths."""
        from napari.utils.notifications import show_error

        pd, td = self._pred_dir_edit.value, self._truth_dir_edit.value
        if not pd or not td or not Path(str(pd)).is_dir() or not Path(str(td)).is_dir():
            show_error("choose a folder of prediction stores and a folder of ground truths")
            return None
        if self._busy():
            return None
        self._metrics_label.value = "evaluating folders..."
        self.handle = start_task(evaluate_folders_job, str(pd), str(td),
                                 str(Path(str(pd)) / "evaluation"), on_returned=self._show_report,
                                 desc="evaluate folders", watch=self)
        return self.handle

    def _show(self, res: dict[str, Any]) -> None:
        self.result = res
        m = res["metrics"]
        self._metrics_label.value = (
            f"accuracy {m['accuracy']:.3f}   Dice {m['dice']:.3f}   IoU {m['iou']:.3f}\n"
            f"AUC {m['auc']:.3f}   precision {m['precision']:.3f}   recall {m['recall']:.3f}")
        self.roc.show(res["fpr"], res["tpr"], m["auc"])
        self.confusion.show(res["confusion"], ["background", "positive"])

    def _show_report(self, report: dict[str, Any]) -> None:
        self.result = report
        lines = [f"{len(report['slides'])} slide(s)"]
        if "slide_auc" in report:
            lines.append(f"slide-level AUC {report['slide_auc']:.3f}")
        if "froc" in report:
            lines.append(f"FROC score {report['froc']['score']:.3f}")
        pooled = report.get("pooled") or {k: report.get(k) for k in ("dice", "iou")}
        if pooled.get("dice") is not None:
            lines.append(f"pooled Dice {pooled['dice']:.3f}")
        self._metrics_label.value = "\n".join(lines)
