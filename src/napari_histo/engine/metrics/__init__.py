"""The one home of the project's metrics: confusion matrix, accuracy, Dice, IoU, ROC, AUC, FROC.

Training, evaluation, the bootstrap intervals (:mod:`~napari_histo.engine.uncertainty`) and
the widgets all import from here, so a number means the same thing everywhere.

- counts (``_counts``): :func:`confusion_matrix` and the scores derived from it, per class
  (:func:`scores_from_confusion`, vectorised :func:`confusion_scores`) or binary
  (:func:`binary_scores`, :func:`dice`, :func:`iou`); empty-class conventions are documented
  there.
- ROC/AUC (``_roc``): exact (scikit-learn-equivalent) wherever the scores fit in memory;
  a 1024-bin streaming form only past :data:`EXACT_MAX` scores (whole slides), within
  :meth:`HistogramROC.error_bound` of the exact value.
- FROC (``_froc``): the CAMELYON16 lesion-level FROC.
- accumulators (``_accumulate``): :class:`MetricAccumulator` (training tensors) and
  :class:`PixelAccumulator` (probability-map chunks).

Numpy at import: torch, scipy and scikit-image load only when a function needs them.
Plots of these metrics live in :mod:`napari_histo.engine.plots`.
"""

from __future__ import annotations

from napari_histo.engine.metrics._accumulate import MetricAccumulator, PixelAccumulator
from napari_histo.engine.metrics._counts import (
    argmax_channels,
    binary_scores,
    confusion_matrix,
    confusion_scores,
    dice,
    iou,
    scores_from_confusion,
    summary,
)
from napari_histo.engine.metrics._froc import (
    FROC_RATES,
    FrocResult,
    detections,
    evaluation_mask,
    froc,
    froc_inputs,
)
from napari_histo.engine.metrics._roc import (
    BINS,
    EXACT_MAX,
    HistogramROC,
    RocAccumulator,
    auc_from_counts,
    bin_index,
    curve_from_counts,
    roc_auc,
    roc_curve,
    weighted_auc,
)

__all__ = [
    "BINS", "EXACT_MAX", "FROC_RATES", "FrocResult", "HistogramROC", "MetricAccumulator",
    "PixelAccumulator", "RocAccumulator", "argmax_channels", "auc_from_counts", "bin_index",
    "binary_scores", "confusion_matrix", "confusion_scores", "curve_from_counts", "detections",
    "dice", "evaluation_mask", "froc", "froc_inputs", "iou", "roc_auc", "roc_curve",
    "scores_from_confusion", "summary", "weighted_auc",
]
