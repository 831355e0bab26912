"""PNG figures of the engine: training curves, ROC, FROC, confusion matrix, previews.

The one place that draws: matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never
pyplot and never ``matplotlib.use``, so a napari process keeps its Qt backend and global
figure state, figures are not leaked into pyplot's registry, and nothing needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from napari_histo.engine.metrics import FrocResult

__all__ = ["new_figure", "plot_cls_preview", "plot_confusion", "plot_curves", "plot_froc",
           "plot_roc", "plot_rocs", "plot_seg_preview", "save_figure"]


def new_figure(w: float, h: float) -> Figure:
    """A ``w`` x ``h`` inch figure on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_curves(run_dir: Path, history: Sequence[dict[str, Any]], task: str) -> Path:
    """Loss and accuracy/Dice (or AUC) per epoch for train and validation."""
    fig = new_figure(11, 4)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [float("nan") if h.get(key) is None else float(h[key]) for h in history]

    for split, style in (("train", "-o"), ("val", "-s")):
        ax1.plot(ep, series(f"{split}_loss"), style, ms=3, label=f"{split} loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_title("Loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    keys = ("accuracy", "dice") if task == "segment" else ("accuracy", "auc")
    for key in keys:
        for split, style in (("train", "-o"), ("val", "-s")):
            line = ax2.plot(ep, series(f"{split}_{key}"), style, ms=3, label=f"{split} {key}")
            ci = [h.get(f"{split}_{key}_ci") or [None, None] for h in history]
            lo = [float("nan") if c[0] is None else float(c[0]) for c in ci]
            hi = [float("nan") if c[1] is None else float(c[1]) for c in ci]
            if any(v == v for v in lo):  # the 95 % bootstrap interval as a band
                ax2.fill_between(ep, lo, hi, color=line[0].get_color(), alpha=0.15, lw=0)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("score")
    ax2.set_ylim(0, 1.02)
    ax2.set_title("Accuracy / " + ("Dice" if task == "segment" else "ROC AUC")
                  + " (bands: 95 % CI)")
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    path = run_dir / "plots" / "curves.png"
    save_figure(fig, path)
    return path


def plot_roc(path: Path, fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = "ROC",
             ci: Sequence[float | None] | None = None) -> Path:
    """ROC curve with its AUC (and its 95 % interval when given)."""
    label = f"AUC = {auc:.3f}"
    if ci is not None and len(ci) == 2 and all(c is not None and c == c for c in ci):
        label += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return plot_rocs(path, {label: (fpr, tpr)}, title)


def plot_rocs(path: str | Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
              title: str = "ROC") -> Path:
    """Several ROC curves ``{legend label: (fpr, tpr)}`` over the chance diagonal."""
    fig = new_figure(4.5, 4.5)
    ax = fig.subplots()
    for label, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, lw=2 if len(curves) == 1 else 1.5, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=None if len(curves) == 1 else 7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    return save_figure(fig, path)


def plot_froc(path: str | Path, res: FrocResult) -> Path:
    """FROC curve (lesion sensitivity vs mean FPs per slide, log x) with the scored rates."""
    fig = new_figure(5, 4)
    ax = fig.subplots()
    fr = np.maximum(np.asarray(res.fps_per_slide), 1e-2)
    ax.step(fr, res.sensitivity, where="post")
    ax.plot([float(r) for r in res.sensitivity_at], list(res.sensitivity_at.values()), "o")
    ax.set_xscale("log")
    ax.set_xlim(0.1, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false positives per slide")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(f"FROC (score {res.score:.3f}, {res.lesions} lesions, {res.slides} slides)")
    return save_figure(fig, path)


def plot_confusion(path: Path, cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion") -> Path:
    """Confusion matrix, counts and row-normalised fractions."""
    fig = new_figure(4.8, 4.2)
    ax = fig.subplots()
    cm = np.asarray(cm, dtype=np.float64)
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    n = cm.shape[0]
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{frac[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(n), list(class_names), rotation=30, ha="right")
    ax.set_yticks(range(n), list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(fig, path)
    return path


def plot_seg_preview(path: Path, image: np.ndarray, truth: np.ndarray, prob: np.ndarray,
                     epoch: int, dice: float | None = None) -> Path:
    """Image | ground truth | predicted foreground probability for one validation image."""
    fig = new_figure(12, 4)
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    axes[0].set_title("validation image")
    t = np.ma.masked_where(truth == 255, truth)
    axes[1].imshow(t, cmap="viridis", vmin=0, vmax=max(1, int(t.max() if t.count() else 1)))
    axes[1].set_title("ground truth")
    im = axes[2].imshow(prob, cmap="magma", vmin=0, vmax=1)
    axes[2].set_title(f"epoch {epoch}" + (f", val Dice {dice:.3f}" if dice is not None else ""), fontsize=10)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for a in axes:
        a.axis("off")
    save_figure(fig, path)
    return path


def plot_cls_preview(path: Path, images: Sequence[np.ndarray], labels: Sequence[int],
                     probs: Sequence[float], class_names: Sequence[str], epoch: int) -> Path:
    """A row of fixed validation patches with truth and predicted positive probability."""
    n = len(images)
    fig = new_figure(2.2 * n, 2.6)
    axes = np.atleast_1d(fig.subplots(1, n))
    for a, im, y, p in zip(axes, images, labels, probs, strict=False):
        a.imshow(im)
        a.set_title(f"{class_names[int(y)]}\np={p:.2f}", fontsize=8,
                    color="green" if (p >= 0.5) == (int(y) > 0) else "red")
        a.axis("off")
    fig.suptitle(f"epoch {epoch}: p({class_names[-1]})")
    save_figure(fig, path)
    return path
