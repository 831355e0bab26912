"""Evaluate dock widget: a prediction layer against a ground-truth layer, or folders of slides.

Layer mode compares a heatmap Image layer (probabilities) or a Labels layer with a ground
truth Labels layer; the truth is resampled onto the prediction's pixel grid through both
layers' world placement (any resolution), chunk by chunk in a worker
(:func:`~napari_histo.engine.evaluation_jobs.evaluate_arrays_job`), into the engine's
:class:`~napari_histo.engine.metrics.PixelAccumulator`: accuracy, Dice, IoU, ROC AUC and a
confusion matrix, with ROC and confusion plots in the dock. Folder mode runs
``engine.evaluation.evaluate_slides`` (per-slide metrics, slide-level AUC and the CAMELYON16
FROC) on prediction stores paired with masks/annotations by file name.
Entry point: :class:`EvaluateWidget`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, FileEdit, FloatSlider, Label, PushButton

from napari_histo.engine.evaluation_jobs import evaluate_arrays_job, evaluate_folders_job
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._jobs import layer_level0, layer_placement
from napari_histo.plugin._plots import ConfusionPlot, RocPlot
from napari_histo.plugin._widget_base import DockWidget
from napari_histo.plugin._workers import TaskHandle

if TYPE_CHECKING:
    import napari

__all__ = ["EvaluateWidget"]

_BUSY = "an evaluation is already running"


class EvaluateWidget(DockWidget):
    """Dock widget: metrics, ROC and confusion matrix of a prediction vs ground truth."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
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
        self.result: dict[str, Any] | None = None
        self._evaluate_button.changed.connect(lambda *_: self.evaluate())
        self._folders_button.changed.connect(lambda *_: self.evaluate_folders())
        self._dock_ready()

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

    def evaluate(self) -> TaskHandle | None:
        """Compare the chosen prediction layer with the ground-truth layer."""
        pred, truth = self._pred_combo.value, self._truth_combo.value
        if pred is None or truth is None:
            self._show_error("choose a prediction layer (heatmap or labels) and a ground-truth "
                       "Labels layer")
            return None
        if self._busy(_BUSY):
            return None
        is_prob = type(pred).__name__ == "Image"
        self._metrics_label.value = "evaluating..."
        return self._run_task(
            evaluate_arrays_job, layer_level0(pred), layer_placement(pred), layer_level0(truth),
            layer_placement(truth),
            threshold=float(self._threshold_slider.value), is_probability=is_prob,
            on_returned=self._show, desc="evaluate")

    def evaluate_folders(self) -> TaskHandle | None:
        """Slide-level AUC and FROC for a folder of predictions and one of truths."""
        pd, td = self._pred_dir_edit.value, self._truth_dir_edit.value
        if not pd or not td or not Path(str(pd)).is_dir() or not Path(str(td)).is_dir():
            self._show_error("choose a folder of prediction stores and a folder of ground truths")
            return None
        if self._busy(_BUSY):
            return None
        self._metrics_label.value = "evaluating folders..."
        return self._run_task(evaluate_folders_job, str(pd), str(td),
                              str(Path(str(pd)) / "evaluation"), on_returned=self._show_report,
                              desc="evaluate folders")

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
