"""Run-folder reports: metrics.csv/json, summary, validation predictions and PNG plots.

The plots (curves, ROC, confusion, previews) are drawn by :mod:`napari_histo.engine.plots`,
the engine's one place for figures, and re-exported here for the run-folder writers.
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

from napari_histo.engine.plots import (
    plot_cls_preview,
    plot_confusion,
    plot_curves,
    plot_roc,
    plot_seg_preview,
)

__all__ = ["flat_metrics", "plot_cls_preview", "plot_confusion", "plot_curves", "plot_roc",
           "plot_seg_preview", "write_metrics", "write_summary", "write_val_predictions"]


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
