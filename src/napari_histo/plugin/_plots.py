"""Matplotlib plots embedded in dock widgets: live training curves, ROC and confusion matrix.

Each plot is a ``FigureCanvasQTAgg`` wrapped in a magicgui-compatible container widget so a
``Container`` can hold it. Curves redraw with ``draw_idle`` (coalesced by Qt), so an epoch
end costs a few milliseconds of GUI time. Entry points: :class:`CurvePlot`,
:class:`RocPlot`, :class:`ConfusionPlot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtWidgets import QSizePolicy

__all__ = ["ConfusionPlot", "CurvePlot", "RocPlot", "plot_widget"]


class _Canvas(FigureCanvasQTAgg):
    """A canvas whose coalesced redraw is quiet once its Qt widget went with the window."""

    def draw(self) -> None:
        try:
            super().draw()
        except RuntimeError:  # "wrapped C/C++ object ... has been deleted": nothing to draw
            pass


def _canvas(height_in: float = 2.6) -> tuple[Figure, FigureCanvasQTAgg]:
    fig = Figure(figsize=(4.0, height_in), dpi=90, layout="constrained")
    canvas = _Canvas(fig)
    canvas.setMinimumHeight(int(height_in * 80))
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    return fig, canvas


def plot_widget(canvas: FigureCanvasQTAgg) -> Any:
    """Wrap a Qt canvas so it can be appended to a magicgui ``Container``."""
    from magicgui.widgets import Container

    box: Container[Any] = Container(labels=False)
    box.native.layout().addWidget(canvas)
    return box


class CurvePlot:
    """Loss (left) and metric (right) curves per epoch, train and validation.

    ``history`` keeps every epoch's metrics dict (the same dicts ``EpochEnd`` carries) so
    tests can watch the curve data grow.
    """

    LOSS_KEYS = ("train_loss", "val_loss")
    METRIC_PREFERENCE = ("dice", "auc", "accuracy", "iou")

    def __init__(self) -> None:
        self.figure, self.canvas = _canvas(2.6)
        self.ax_loss, self.ax_metric = self.figure.subplots(1, 2)
        self.history: list[dict[str, float]] = []
        self.widget = plot_widget(self.canvas)
        self._draw()

    def clear(self) -> None:
        """Forget all epochs (a new run)."""
        self.history.clear()
        self._draw()

    def add_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Append one epoch's metrics and redraw."""
        row = {"epoch": float(epoch)}
        for k, v in metrics.items():
            try:
                row[str(k)] = float(v)
            except (TypeError, ValueError):
                continue
        self.history.append(row)
        self._draw()

    def series(self, key: str) -> list[float]:
        """Values of ``key`` over the epochs that have it (NaN where missing)."""
        return [r.get(key, float("nan")) for r in self.history]

    def _metric_name(self) -> str | None:
        keys = {k for r in self.history for k in r}
        for name in self.METRIC_PREFERENCE:
            if f"val_{name}" in keys or f"train_{name}" in keys:
                return name
        return None

    def _draw(self) -> None:
        epochs = [r["epoch"] for r in self.history]
        for ax in (self.ax_loss, self.ax_metric):
            ax.clear()
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("epoch")
        self.ax_loss.set_title("loss", fontsize=9)
        for key, style in zip(self.LOSS_KEYS, ("-o", "--s"), strict=False):
            ys = self.series(key)
            if any(np.isfinite(ys)):
                self.ax_loss.plot(epochs, ys, style, ms=3, label=key.split("_")[0])
        metric = self._metric_name()
        self.ax_metric.set_title(metric or "metric", fontsize=9)
        if metric:
            for split, style in (("train", "-o"), ("val", "--s")):
                ys = self.series(f"{split}_{metric}")
                if any(np.isfinite(ys)):
                    self.ax_metric.plot(epochs, ys, style, ms=3, label=split)
            self.ax_metric.set_ylim(-0.02, 1.02)
        for ax in (self.ax_loss, self.ax_metric):
            # whole epochs only, also for one or two epochs (matplotlib's own margin would
            # span less than one integer: ticks 0.945, 0.960, ...)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            if epochs and max(epochs) - min(epochs) < 2:
                ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
            ax.tick_params(labelsize=7)
        self.canvas.draw_idle()


class RocPlot:
    """ROC curve with its AUC in the title."""

    def __init__(self) -> None:
        self.figure, self.canvas = _canvas(2.4)
        self.ax = self.figure.subplots()
        self.widget = plot_widget(self.canvas)
        self.show(None, None, None)

    def show(self, fpr: Sequence[float] | None, tpr: Sequence[float] | None,
             auc: float | None) -> None:
        """Draw the curve (or an empty frame)."""
        ax = self.ax
        ax.clear()
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        if fpr is not None and tpr is not None and len(fpr):
            ax.plot(fpr, tpr, "-", color="tab:orange", lw=1.5)
        title = "ROC" if auc is None or not np.isfinite(auc) else f"ROC (AUC {auc:.3f})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()


class ConfusionPlot:
    """Confusion matrix (rows = truth, columns = prediction) with counts in the cells."""

    def __init__(self) -> None:
        self.figure, self.canvas = _canvas(2.4)
        self.ax = self.figure.subplots()
        self.widget = plot_widget(self.canvas)
        self.show(None)

    def show(self, matrix: Any, class_names: Sequence[str] | None = None) -> None:
        """Draw ``matrix`` (K x K counts) or an empty frame."""
        ax = self.ax
        ax.clear()
        ax.set_title("confusion matrix", fontsize=9)
        if matrix is None:
            ax.set_xticks([])
            ax.set_yticks([])
            self.canvas.draw_idle()
            return
        m = np.asarray(matrix, dtype=float)
        k = m.shape[0]
        names = list(class_names or [str(i) for i in range(k)])[:k]
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(m[i, j]):,}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), names, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("truth", fontsize=8)
        self.canvas.draw_idle()
