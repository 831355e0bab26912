"""Run-folder reports: metrics.csv/json and PNG plots (curves, ROC, confusion, previews).

Plots use matplotlib's object API with the Agg canvas, never pyplot, so the global backend
of a napari process is left alone and nothing needs a display.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers only, with each ``*_ci`` [low, high] as ``*_ci_lo`` / ``*_ci_hi`` (EpochEnd, CSV)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
        elif k.endswith("_ci") and isinstance(v, (list, tuple)) and len(v) == 2:
            out[f"{k}_lo"] = float("nan") if v[0] is None else float(v[0])
            out[f"{k}_hi"] = float("nan") if v[1] is None else float(v[1])
    return out


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """``summary.json``: best epoch with its 95 % intervals, selection rule and warnings."""
    path = run_dir / "summary.json"
    _atomic_text(path, json.dumps(_clean(summary), indent=1))
    return path


def write_val_predictions(run_dir: Path, acc: Any, groups: Sequence[str]) -> Path | None:
    """``val_predictions.npz``: per-item statistics of the best epoch's validation (scores,
    truth, confusion counts, groups): what cross-validation pools out of fold."""
    items = acc.per_item()
    if items is None:
        return None
    path = run_dir / "val_predictions.npz"
    tmp = run_dir / ".val_predictions.tmp.npz"
    np.savez_compressed(tmp, groups=np.asarray(list(groups), dtype=str), **items)
    os.replace(tmp, path)
    return path


def write_metrics(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """``metrics.json`` (list of per-epoch dicts) and ``metrics.csv`` (one row per epoch)."""
    rows = [{k: _clean(v) for k, v in h.items()} for h in history]
    _atomic_text(run_dir / "metrics.json", json.dumps(rows, indent=1))
    rows = [{**{k: v for k, v in h.items() if not isinstance(v, list)},
             **{k: (None if v != v else v) for k, v in flat_metrics(h).items() if "_ci_" in k}}
            for h in rows]
    keys: list[str] = []
    for h in rows:
        keys += [k for k in h if k not in keys]
    tmp = run_dir / ".metrics.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for h in rows:
            w.writerow({k: ("" if h.get(k) is None else h.get(k)) for k in keys})
    os.replace(tmp, run_dir / "metrics.csv")


def _figure(w: float, h: float):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, path)


def plot_curves(run_dir: Path, history: Sequence[dict[str, Any]], task: str) -> Path:
    """Loss and accuracy/Dice (or AUC) per epoch for train and validation."""
    fig = _figure(11, 4)
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
    _save(fig, path)
    return path


def plot_roc(path: Path, fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = "ROC",
             ci: Sequence[float | None] | None = None) -> Path:
    """ROC curve with its AUC (and its 95 % interval when given)."""
    fig = _figure(4.5, 4.5)
    ax = fig.subplots()
    label = f"AUC = {auc:.3f}"
    if ci is not None and len(ci) == 2 and all(c is not None and c == c for c in ci):
        label += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    _save(fig, path)
    return path


def plot_confusion(path: Path, cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion") -> Path:
    """Confusion matrix, counts and row-normalised fractions."""
    fig = _figure(4.8, 4.2)
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
    _save(fig, path)
    return path


def plot_seg_preview(path: Path, image: np.ndarray, truth: np.ndarray, prob: np.ndarray,
                     epoch: int, dice: float | None = None) -> Path:
    """Image | ground truth | predicted foreground probability for one validation image."""
    fig = _figure(12, 4)
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
    _save(fig, path)
    return path


def plot_cls_preview(path: Path, images: Sequence[np.ndarray], labels: Sequence[int],
                     probs: Sequence[float], class_names: Sequence[str], epoch: int) -> Path:
    """A row of fixed validation patches with truth and predicted positive probability."""
    n = len(images)
    fig = _figure(2.2 * n, 2.6)
    axes = np.atleast_1d(fig.subplots(1, n))
    for a, im, y, p in zip(axes, images, labels, probs, strict=False):
        a.imshow(im)
        a.set_title(f"{class_names[int(y)]}\np={p:.2f}", fontsize=8,
                    color="green" if (p >= 0.5) == (int(y) > 0) else "red")
        a.axis("off")
    fig.suptitle(f"epoch {epoch}: p({class_names[-1]})")
    _save(fig, path)
    return path
