"""ROC curves and ROC AUC: exact where the scores fit in memory, binned where they cannot.

Every AUC here is one formula, :func:`auc_from_counts`: the Mann-Whitney U over groups of
equal score in ascending order, a positive-negative pair in one group counting one half.

- exact (:func:`roc_auc`, :func:`roc_curve`, :func:`weighted_auc`): the groups are the
  distinct scores. This is scikit-learn's ``roc_auc_score`` / ``roc_curve`` (with
  ``drop_intermediate=False``), sample weights included; tests check the parity.
- binned (:class:`HistogramROC`): the groups are :data:`BINS` equal bins of [0, 1]
  (``floor(p * BINS)``), so a whole slide (billions of pixels) streams in flat memory.
  Only pairs sharing a bin can be ordered differently, so the binned AUC is within
  :meth:`HistogramROC.error_bound` (half the fraction of pairs sharing a bin) of the exact
  one; uint8 probabilities (k / 255) fall in distinct bins and lose nothing.
- :class:`RocAccumulator` streams chunks: exact while at most ``exact_max`` scores were seen
  (:data:`EXACT_MAX`, 16 MB of float32), binned after.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

#: score bins of the streaming ROC (1/1024 wide; every uint8 level gets its own bin)
BINS = 1024
#: scores kept for an exact AUC before a stream falls back to the bins
EXACT_MAX = 4_000_000


def _numpy(x: Any) -> np.ndarray:
    """A numpy view of an array-like or a (CPU or GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def auc_from_counts(pos: npt.ArrayLike, neg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """AUC from positive/negative counts (or weights) per score group, ascending along the
    last axis; one value per row, NaN where a row lacks a class."""
    p = np.asarray(pos, np.float64)
    n = np.asarray(neg, np.float64)
    neg_below = np.cumsum(n, -1) - n
    u = (p * (neg_below + 0.5 * n)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = p.sum(-1) * n.sum(-1)
        return np.where(den > 0, u / den, np.nan)


def curve_from_counts(pos: npt.ArrayLike, neg: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from counts per ascending score group: one point per non-empty group, from
    the highest threshold down, starting at (0, 0). Rates of an absent class stay 0."""
    p = np.asarray(pos, np.float64)
    n = np.asarray(neg, np.float64)
    keep = (p + n) > 0
    tp = np.cumsum(p[keep][::-1])
    fp = np.cumsum(n[keep][::-1])
    tot_p = tp[-1] if tp.size and tp[-1] > 0 else 1.0
    tot_n = fp[-1] if fp.size and fp[-1] > 0 else 1.0
    return np.r_[0.0, fp / tot_n], np.r_[0.0, tp / tot_p]


def _grouped(scores: npt.ArrayLike, labels: npt.ArrayLike,
             weights: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight of each distinct score, ascending (..., groups)."""
    s = np.asarray(_numpy(scores), np.float64).ravel()
    y = _numpy(labels).ravel() > 0
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    w = np.ones(s.size) if weights is None else np.asarray(weights, np.float64)
    if w.shape[-1] != s.size:
        raise ValueError(f"{w.shape[-1]} weights for {s.size} scores")
    if s.size == 0:
        return np.zeros(w.shape[:-1] + (0,)), np.zeros(w.shape[:-1] + (0,))
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[..., order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    return (np.add.reduceat(w * y, starts, axis=-1), np.add.reduceat(w * ~y, starts, axis=-1))


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike,
            sample_weight: npt.ArrayLike | None = None) -> float:
    """Exact ROC AUC (labels > 0 positive; tied scores count one half).

    NaN, not an error, with one class only (a validation split without positives must not
    stop a training run) or any NaN score.
    """
    if np.isnan(np.asarray(_numpy(scores), np.float64)).any():
        return float("nan")
    return float(auc_from_counts(*_grouped(scores, labels, sample_weight)))


def weighted_auc(scores: npt.ArrayLike, labels: npt.ArrayLike,
                 weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Exact ROC AUC of each row of ``weights`` (r, n): the bootstrap's resample
    multiplicities, scored in one sort. NaN for rows with one class."""
    return auc_from_counts(*_grouped(scores, labels, np.atleast_2d(weights)))


def roc_curve(scores: npt.ArrayLike, labels: npt.ArrayLike,
              sample_weight: npt.ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score, from (0, 0) to (1, 1); zero-weight items ignored."""
    return curve_from_counts(*_grouped(scores, labels, sample_weight))


def bin_index(scores: npt.ArrayLike, bins: int = BINS) -> np.ndarray:
    """Bin of each score: ``floor(p * bins)``, clipped into 0..bins-1."""
    s = np.asarray(_numpy(scores), np.float32).ravel()
    with np.errstate(invalid="ignore"):
        return np.clip((s * bins).astype(np.int64), 0, bins - 1)


class HistogramROC:
    """Streaming, binned ROC: histograms of positive and negative scores in [0, 1]."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def update(self, scores: Any, positive: Any) -> npt.NDArray[np.int64]:
        """Add scores with their truth (array-likes or tensors); returns this chunk's
        (2, bins) counts, positives first."""
        idx = bin_index(scores, self.bins)
        t = _numpy(positive).ravel().astype(bool)
        counts = np.bincount(idx + self.bins * t, minlength=2 * self.bins).reshape(2, self.bins)
        self.neg += counts[0]
        self.pos += counts[1]
        return counts[::-1].copy()

    def auc(self) -> float:
        """Binned AUC (ties inside a bin count half); NaN with one class only."""
        return float(auc_from_counts(self.pos, self.neg))

    def error_bound(self) -> float:
        """Largest possible ``|binned - exact|`` AUC: half the share of pos-neg pairs that
        share a bin (the only pairs whose order the bins can hide)."""
        den = float(self.pos.sum()) * float(self.neg.sum())
        return 0.5 * float((self.pos.astype(np.float64) * self.neg).sum()) / den if den else 0.0

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) at the bin edges, from the highest threshold down."""
        return curve_from_counts(self.pos, self.neg)


class RocAccumulator:
    """Streams (score, truth) chunks: exact AUC and curve while at most ``exact_max`` scores
    were seen (None: always), from :class:`HistogramROC` after that."""

    def __init__(self, exact_max: int | None = EXACT_MAX, bins: int = BINS) -> None:
        self.exact_max = exact_max
        self.hist = HistogramROC(bins)
        self.n = 0
        self._scores: list[np.ndarray] = []
        self._truth: list[np.ndarray] = []

    @property
    def exact(self) -> bool:
        """True while every score is still kept."""
        return self.exact_max is None or self.n <= self.exact_max

    def update(self, scores: Any, positive: Any) -> npt.NDArray[np.int64]:
        """Add a chunk; returns its (2, bins) histogram (positives first)."""
        s = np.asarray(_numpy(scores), np.float32).ravel()
        t = _numpy(positive).ravel().astype(bool)
        counts = self.hist.update(s, t)
        self.n += s.size
        if self.exact:
            self._scores.append(s.copy())
            self._truth.append(t.copy())
        else:
            self._scores, self._truth = [], []
        return counts

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """All kept (scores, truth); empty once the stream outgrew ``exact_max``."""
        return (np.concatenate(self._scores or [np.zeros(0, np.float32)]),
                np.concatenate(self._truth or [np.zeros(0, bool)]))

    def auc(self) -> float:
        """Exact AUC while exact, else binned."""
        return roc_auc(*self.scores()) if self.exact else self.hist.auc()

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact ROC curve while exact, else binned."""
        return roc_curve(*self.scores()) if self.exact else self.hist.curve()
