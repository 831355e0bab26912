"""95 % confidence intervals for validation metrics: (cluster) bootstrap, vectorised.

A validation score from one slide with four tumour patches is not 1.000, it is "somewhere
between 0.4 and 1". Every reported metric therefore carries a percentile bootstrap interval:
items (images for segmentation, patches for classification) are resampled, or, when their
groups (slide, patient) are known, whole groups are resampled (cluster bootstrap), because
patches of one slide are not independent.

Each resample is a row of integer multiplicities ``w`` (n_resamples, n_items); a metric is a
function of those weights, so the work is a few matrix products: per-image confusion counts
are summed as ``w @ counts`` and AUC is a weighted Mann-Whitney U over the sorted scores.
The metrics themselves come from :mod:`napari_histo.engine.metrics` (vectorised forms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.engine.metrics import (
    auc_from_counts,
    confusion_scores,
    roc_auc,
    scores_from_confusion,
    weighted_auc,
)

__all__ = ["resample_weights", "bootstrap_ci", "metric_cis", "item_cis", "item_metrics",
           "validation_warnings", "format_metric", "MIN_POSITIVES"]

#: fewer positives (or a single group) in validation than this gives a warning
MIN_POSITIVES = 20
_CHUNK_CELLS = 20_000_000  # weights matrix cells per chunk (~160 MB of float64)


def resample_weights(groups: Sequence[Any] | None, n_items: int, n: int,
                     rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """(n, n_items) multiplicities: items drawn with replacement, or whole groups when given."""
    if groups is None or len(set(map(str, groups))) <= 1:
        inv = np.arange(n_items)  # no (or one) group: items are the units
    else:
        inv = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1].ravel()
    k = int(inv.max()) + 1 if n_items else 0
    draws = rng.integers(0, max(k, 1), size=(n, k))
    counts = np.zeros((n, k))
    np.add.at(counts, (np.repeat(np.arange(n), k), draws.ravel()), 1.0)
    return counts[:, inv]


def bootstrap_ci(per_item_stats: Any, groups: Sequence[Any] | None,
                 metric_fn: Callable[[Any, npt.NDArray[np.float64]], npt.NDArray[np.float64]],
                 n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn`` over items (or groups of items).

    ``metric_fn(per_item_stats, weights)`` returns the metric of each resample, where
    ``weights`` is (r, n_items) multiplicities. Resamples whose metric is undefined (NaN, e.g.
    AUC with one class drawn) are dropped; (nan, nan) when none is defined.
    """
    first = per_item_stats[0] if isinstance(per_item_stats, tuple) else per_item_stats
    n_items = len(groups) if groups is not None else len(first)
    if n_items == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    w = resample_weights(groups, n_items, n, rng)
    step = max(1, _CHUNK_CELLS // max(1, n_items))
    vals = np.concatenate([np.asarray(metric_fn(per_item_stats, w[i:i + step]), np.float64)
                           for i in range(0, n, step)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return (float(lo), float(hi))


def _binned_auc(hists: npt.NDArray[np.float64],
                weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """AUC of per-item (pos, neg) score histograms (N, 2, bins) summed with ``weights``."""
    return auc_from_counts(weights @ hists[:, 0], weights @ hists[:, 1])


def metric_cis(acc: Any, groups: Sequence[Any] | None, prefix: str = "val", *, n: int = 1000,
               seed: int = 0) -> dict[str, list[float]]:
    """``{prefix}_accuracy_ci``, ``_dice_ci``, ``_iou_ci``, ``_auc_ci`` as [low, high] from a
    :class:`~napari_histo.engine.metrics.MetricAccumulator` that kept per-item statistics."""
    items = acc.per_item()
    return {} if items is None else item_cis(items, groups, prefix, n=n, seed=seed)


def item_cis(items: dict[str, np.ndarray], groups: Sequence[Any] | None, prefix: str = "val", *,
             n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Bootstrap intervals from per-item statistics (``MetricAccumulator.per_item()``)."""
    cm3 = np.asarray(items["cm"])
    c = cm3.shape[-1]
    cms = cm3.reshape(len(cm3), -1).astype(np.float64)
    if groups is not None and len(groups) != len(cms):
        raise ValueError(f"{len(groups)} groups for {len(cms)} validation items")
    out: dict[str, list[float]] = {}
    for key in ("accuracy", "dice", "iou"):
        def score(st: Any, w: npt.NDArray[np.float64], key: str = key) -> npt.NDArray[np.float64]:
            return confusion_scores((w @ st).reshape(-1, c, c))[key]

        lo, hi = bootstrap_ci(cms, groups, score, n, seed)
        out[f"{prefix}_{key}_ci"] = [lo, hi]
    if "scores" in items:
        lo, hi = bootstrap_ci((items["scores"], items["truth"]), groups,
                              lambda st, w: weighted_auc(st[0], st[1], w), n, seed)
        out[f"{prefix}_auc_ci"] = [lo, hi]
    elif "hist" in items:
        hists = np.asarray(items["hist"], np.float64)
        out[f"{prefix}_auc_ci"] = list(bootstrap_ci(hists, groups, _binned_auc, n, seed))
    return out


def item_metrics(items: dict[str, np.ndarray], prefix: str = "val") -> dict[str, float]:
    """Point estimates (accuracy, dice, iou, precision, recall, auc) of pooled per-item stats."""
    cm = np.asarray(items["cm"]).sum(0)
    out = {f"{prefix}_{k}": v for k, v in scores_from_confusion(cm).items()}
    if "scores" in items:
        out[f"{prefix}_auc"] = roc_auc(items["scores"], items["truth"])
    elif "hist" in items:
        hists = np.asarray(items["hist"], np.float64)
        out[f"{prefix}_auc"] = float(_binned_auc(hists, np.ones((1, len(hists))))[0])
    return out


def validation_warnings(n_positive: int, groups: Sequence[Any], *, unit: str = "positive items",
                        folds_hint: bool = True) -> list[str]:
    """Say when a validation set is too small to trust (few positives, one group)."""
    out = []
    hint = " Use --folds K (group cross-validation) for an honest estimate." if folds_hint else ""
    n_groups = len(set(map(str, groups)))
    if n_groups <= 1 and len(groups):
        out.append(f"validation holds a single group ({next(iter(set(map(str, groups))))}): "
                   "its score says little about other slides/patients and its 95 % interval "
                   "cannot reflect between-group variation." + hint)
    if n_positive < MIN_POSITIVES:
        out.append(f"validation holds only {n_positive} {unit} (< {MIN_POSITIVES}): the 95 % "
                   "interval is wide and the best checkpoint may be picked by chance." + hint)
    return out


def format_metric(metrics: dict[str, Any], key: str, digits: int = 4) -> str | None:
    """``val_auc=0.9100 [0.80, 0.97]`` (CI from ``key_ci`` or ``key_ci_lo/hi``); None if absent."""
    v = metrics.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
        return None
    ci = metrics.get(f"{key}_ci")
    if ci is None and f"{key}_ci_lo" in metrics:
        ci = (metrics.get(f"{key}_ci_lo"), metrics.get(f"{key}_ci_hi"))
    text = f"{key}={v:.{digits}f}"
    if ci is not None and len(ci) == 2 and all(isinstance(x, (int, float)) and x == x for x in ci):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text
