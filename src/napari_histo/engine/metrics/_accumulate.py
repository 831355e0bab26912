"""Streaming accumulators: a training split's tensors, or a probability map's chunks.

Both feed the same confusion counts and :class:`~._roc.RocAccumulator`, so a Dice or AUC
means the same thing in a training run, in ``napari-histo evaluate`` and in the widgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError
from napari_histo.engine.metrics._counts import (
    argmax_channels,
    binary_scores,
    confusion_matrix,
    scores_from_confusion,
)
from napari_histo.engine.metrics._roc import EXACT_MAX, RocAccumulator

if TYPE_CHECKING:
    import torch


class MetricAccumulator:
    """Per-epoch accumulation of loss, confusion matrix and ROC for one split (tensors).

    ``exact_roc=True`` keeps every score (patches); otherwise the ROC is exact up to
    ``exact_max`` scores and binned beyond (pixels).
    """

    def __init__(self, num_classes: int, *, exact_roc: bool = False, per_item: bool = False,
                 exact_max: int = EXACT_MAX) -> None:
        self.num_classes = num_classes
        #: keep per-item statistics for bootstrap intervals (patches: each row of a batch;
        #: images: each ``update`` call, with its confusion counts and score histogram)
        self.keep_items = per_item
        self.item_cms: list[np.ndarray] = []
        self.item_hists: list[np.ndarray] = []
        self.item_pred: list[np.ndarray] = []
        self.item_target: list[np.ndarray] = []
        self.cm = np.zeros((num_classes, num_classes), np.int64)
        self.loss_sum = 0.0
        self.loss_n = 0
        self.exact = exact_roc
        self.no_roc = False
        self.roc_acc = RocAccumulator(None if exact_roc else exact_max)

    def update(self, probs: torch.Tensor, target: torch.Tensor, loss: float | None = None,
               n: int = 1, ignore_index: int = 255, *, with_roc: bool = True) -> None:
        """Add softmax ``probs`` (N, C, ...) (or logits with ``with_roc=False``) vs ``target``."""
        import torch

        with torch.no_grad():
            pred = argmax_channels(probs)
            cm = confusion_matrix(pred, target, self.num_classes, ignore_index)
            self.cm += cm
            if self.keep_items and self.exact:
                self.item_pred.append(pred.reshape(len(pred), -1)[:, 0].cpu().numpy())
                self.item_target.append(target.reshape(len(target), -1)[:, 0].cpu().numpy())
            elif self.keep_items:
                self.item_cms.append(cm)
            if with_roc:
                keep = target != ignore_index
                pos_score = (1 - probs[:, 0]) if self.num_classes > 2 else probs[:, 1]
                counts = self.roc_acc.update(pos_score[keep].float(), target[keep] > 0)
                if self.keep_items and not self.exact:
                    self.item_hists.append(counts)
            else:
                self.no_roc = True
        if loss is not None:
            self.loss_sum += float(loss) * n
            self.loss_n += n

    def per_item(self) -> dict[str, np.ndarray] | None:
        """Per-item ``cm`` (N, C, C), and ``scores``/``truth`` (N,) or ``hist`` (N, 2, bins);
        None unless built with ``per_item=True``."""
        if not self.keep_items:
            return None
        c = self.num_classes
        if self.exact:
            t = np.concatenate(self.item_target or [np.zeros(0, np.int64)]).astype(np.int64)
            p = np.concatenate(self.item_pred or [np.zeros(0, np.int64)]).astype(np.int64)
            ok = (t >= 0) & (t < c)
            cm = np.zeros((len(t), c * c), np.int64)
            cm[np.flatnonzero(ok), t[ok] * c + np.clip(p[ok], 0, c - 1)] = 1
            scores, truth = self.roc_acc.scores()
            return {"cm": cm.reshape(-1, c, c), "scores": scores, "truth": truth}
        out = {"cm": np.stack(self.item_cms) if self.item_cms else np.zeros((0, c, c), np.int64)}
        if self.item_hists and len(self.item_hists) == len(self.item_cms):
            out["hist"] = np.stack(self.item_hists)
        return out

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) of positive (non-background) vs rest."""
        return self.roc_acc.curve()

    def result(self, prefix: str) -> dict[str, float]:
        """Metrics named ``{prefix}_loss``, ``{prefix}_dice``, ``{prefix}_auc``..."""
        out = {f"{prefix}_{k}": v for k, v in scores_from_confusion(self.cm).items()}
        if self.loss_n:
            out[f"{prefix}_loss"] = self.loss_sum / self.loss_n
        if not self.no_roc:
            out[f"{prefix}_auc"] = self.roc_acc.auc()
        return out


class PixelAccumulator:
    """Streams (probability, truth) chunks of a probability map; :meth:`result` gives the
    binary metrics at ``threshold`` and the ROC AUC (exact up to ``exact_max`` pixels)."""

    def __init__(self, threshold: float = 0.5, exact_max: int = EXACT_MAX) -> None:
        self.threshold = threshold
        self.exact_max = exact_max
        self.cm = np.zeros((2, 2), np.int64)
        self.roc = RocAccumulator(exact_max)

    def add(self, prob: npt.ArrayLike, truth: npt.ArrayLike,
            valid: npt.ArrayLike | None = None) -> None:
        """Add a chunk: ``prob`` in [0, 1], ``truth`` > 0 positive, ``valid`` False = ignore."""
        p = np.asarray(prob, dtype=np.float32).ravel()
        t = np.asarray(truth).ravel() > 0
        if p.shape != t.shape:
            raise DataError(f"prediction and truth chunks differ in size: {p.shape} vs {t.shape}")
        if valid is not None:
            v = np.asarray(valid).ravel().astype(bool)
            p, t = p[v], t[v]
        self.cm += confusion_matrix(p >= self.threshold, t, 2, ignore_index=None)
        self.roc.update(p, t)

    def result(self) -> dict[str, Any]:
        """accuracy, dice, iou, precision, recall, specificity, auc (+ auc_exact), counts."""
        (tn, fp), (fn, tp) = self.cm.tolist()
        n = tp + fp + fn + tn
        if n == 0:
            raise DataError("nothing to evaluate: no valid pixels")
        return {**binary_scores(tp, fp, fn, tn), "auc": self.roc.auc(),
                "auc_exact": self.roc.exact, "threshold": self.threshold, "pixels": n,
                "positives": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn}

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """ROC curve (fpr, tpr): exact while the scores were kept, else from the bins."""
        return self.roc.curve()
