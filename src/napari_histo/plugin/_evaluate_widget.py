"""Evaluate dock widget: a prediction layer against a ground-truth layer, or folders of slides.

Layer mode compares a heatmap Image layer (probabilities) or a Labels layer with a ground
truth Labels layer; the truth is resampled onto the prediction's pixel grid through both
layers' world placement (any resolution), chunk by chunk in a worker
(:func:`~napari_histo.engine.evaluation_jobs.evaluate_arrays_job`), into the engine's
:class:`~napari_histo.engine.metrics.PixelAccumulator`: accuracy, Dice, IoU, ROC AUC and a
confusion matrix, with ROC and confusion plots in the dock. Folder mode runs
``engine.evaluation.evaluate_slides`` (per-slide metrics, slide-level AUC and the CAMELYON16
FROC) on prediction stores paired with masks/annotations by file name. "Export" writes the
numbers shown as JSON and CSV, with the region and resolution that were scored (also shown in
the widget). Entry point: :class:`EvaluateWidget`.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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
        self._scope_label = Label(label="", value="")
        self._export_edit = FileEdit(label="export to", mode=FileDialogMode.OPTIONAL_FILE,
                                     filter="*.json", nullable=True)
        self._export_button = PushButton(text="Export numbers (JSON + CSV)", enabled=False)
        self.roc = RocPlot()
        self.confusion = ConfusionPlot()
        self.extend([self._pred_combo, self._truth_combo, self._threshold_slider,
                     self._evaluate_button, self._metrics_label, self._scope_label,
                     self._export_edit, self._export_button, self.roc.widget,
                     self.confusion.widget, self._pred_dir_edit, self._truth_dir_edit,
                     self._folders_button])
        self.result: dict[str, Any] | None = None
        #: what the shown numbers are about: layers/folders, region and resolution scored
        self.scope: dict[str, Any] = {}
        self._export_button.changed.connect(lambda *_: self.export())
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
        self._pending_scope = _layer_scope(pred, truth, float(self._threshold_slider.value))
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
        self._pending_scope = {
            "mode": "folders", "prediction": str(pd), "truth": str(td),
            "region": "every slide, whole extent of each prediction store",
            "resolution": "each prediction store's own grid (see per-slide entries)"}
        self._metrics_label.value = "evaluating folders..."
        return self._run_task(evaluate_folders_job, str(pd), str(td),
                              str(Path(str(pd)) / "evaluation"), on_returned=self._show_report,
                              desc="evaluate folders")

    def _set_scope(self) -> None:
        self.scope = dict(getattr(self, "_pending_scope", {}) or {})
        self._scope_label.value = (f"scored: {self.scope.get('region', '?')}\n"
                                   f"at {self.scope.get('resolution', '?')}")
        self._export_button.enabled = True

    def _show(self, res: dict[str, Any]) -> None:
        self.result = res
        self._set_scope()
        m = res["metrics"]
        self._metrics_label.value = (
            f"accuracy {m['accuracy']:.3f}   Dice {m['dice']:.3f}   IoU {m['iou']:.3f}\n"
            f"AUC {m['auc']:.3f}   precision {m['precision']:.3f}   recall {m['recall']:.3f}")
        self.roc.show(res["fpr"], res["tpr"], m["auc"])
        self.confusion.show(res["confusion"], ["background", "positive"])

    def _show_report(self, report: dict[str, Any]) -> None:
        self.result = report
        self._set_scope()
        lines = [f"{len(report['slides'])} slide(s)"]
        if "slide_auc" in report:
            lines.append(f"slide-level AUC {report['slide_auc']:.3f}")
        if "froc" in report:
            lines.append(f"FROC score {report['froc']['score']:.3f}")
        pooled = report.get("pooled") or {k: report.get(k) for k in ("dice", "iou")}
        if pooled.get("dice") is not None:
            lines.append(f"pooled Dice {pooled['dice']:.3f}")
        self._metrics_label.value = "\n".join(lines)

    # ---------------------------------------------------------------- export
    def export(self, path: str | Path | None = None) -> tuple[Path, Path] | None:
        """Write the numbers shown to ``<path>.json`` and ``<path>.csv``; returns both paths.

        Default: the "export to" field, else a time-stamped file under the user folder's
        ``evaluations``. Both files state what was scored (layers or folders, region,
        resolution, threshold).
        """
        if self.result is None:
            self._show_error("evaluate something first; then Export writes its numbers")
            return None
        target = path or self._export_edit.value
        if not target or str(target) in ("", "."):
            from napari_histo.plugin._segment_widget import user_dir

            target = user_dir() / "evaluations" / time.strftime("evaluation-%Y%m%d-%H%M%S")
        base = Path(str(target))
        if base.suffix.lower() in (".json", ".csv"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = base.with_suffix(".json"), base.with_suffix(".csv")
        doc = {"scope": self.scope, **_plain(self.result)}
        json_path.write_text(json.dumps(_plain(doc), indent=2))
        with csv_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["item", "metric", "value"])
            for k, v in self.scope.items():
                writer.writerow(["scope", k, v])
            for item, key, val in _csv_rows(self.result):
                writer.writerow([item, key, val])
        self._scope_label.value = (f"{self._scope_label.value}\nexported to "
                                   f"{json_path.name} + {csv_path.name} in {json_path.parent}")
        return json_path, csv_path


def _unit(layer: Any) -> str:
    units = getattr(layer, "units", None)
    u = str(tuple(units)[-1]) if units is not None else "pixel"
    return {"micrometer": "um", "pixel": "px"}.get(u, u)


def _layer_scope(pred: Any, truth: Any, threshold: float) -> dict[str, Any]:
    """Layer mode: the prediction's grid is what is scored (truth resampled onto it)."""
    (sy, sx), (ty, tx) = layer_placement(pred)
    h, w = (int(v) for v in np.shape(layer_level0(pred))[-2:])
    u = _unit(pred)
    # pixel centres at t + i*s: the grid covers [t - s/2, t + (n - 1/2) s)
    y0, x0 = ty - sy / 2, tx - sx / 2
    return {
        "mode": "layers", "prediction": pred.name, "truth": truth.name,
        "threshold": threshold,
        "region": (f"extent of {pred.name!r}: y {y0:.6g}..{y0 + h * sy:.6g}, "
                   f"x {x0:.6g}..{x0 + w * sx:.6g} {u} ({h} x {w} px)"),
        "resolution": (f"{sy:.6g} x {sx:.6g} {u if u != 'px' else 'image px'} per px "
                       "(the prediction's grid)"),
        "region_box": [y0, x0, y0 + h * sy, x0 + w * sx], "units": u,
        "pixel_size": [sy, sx], "shape": [h, w],
    }


def _plain(value: Any) -> Any:
    """JSON-ready: NaN/inf -> None, numpy arrays/scalars -> lists/numbers, paths -> text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _csv_rows(result: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(item, metric, value) rows: scalar metrics (layer mode) or per-slide + summary rows."""
    rows: list[tuple[str, str, Any]] = []

    def scalars(item: str, d: Any) -> None:
        if not isinstance(d, dict):
            return
        for k, v in d.items():
            pv = _plain(v)
            if isinstance(pv, (int, float)) or pv is None:
                rows.append((item, str(k), pv))

    if "metrics" in result:
        scalars("all", result["metrics"])
        return rows
    for i, sl in enumerate(result.get("slides") or []):
        name = str(sl.get("name") or sl.get("slide") or sl.get("prediction") or i) \
            if isinstance(sl, dict) else str(i)
        scalars(name, sl.get("metrics") if isinstance(sl, dict) and "metrics" in sl else sl)
    scalars("all", {k: v for k, v in result.items() if k != "slides"})
    scalars("pooled", result.get("pooled"))
    if isinstance(result.get("froc"), dict):
        scalars("froc", result["froc"])
    return rows
