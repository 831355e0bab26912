"""Per-pixel uncertainty of stored probabilities: entropy and margin.

Both take what a prediction store holds: ``(H, W)`` positive-class probabilities of a binary
model, or ``(C, H, W)`` class probabilities; float in [0, 1] or uint8 (= round(255 p)). Both
return float32 in [0, 1] (1 = the model cannot tell the classes apart), so one scale serves
the ranking, the stored uint8 map and the viewer's colour bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["as_class_probs", "entropy_map", "margin_map", "to_uint8"]


def as_class_probs(probabilities: Any) -> npt.NDArray[np.float32]:
    """(C, H, W) float32 class probabilities from a binary (H, W) or multi-class store block."""
    p = np.asarray(probabilities)
    p = p.astype(np.float32) / 255.0 if p.dtype == np.uint8 else p.astype(np.float32)
    p = np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)
    if p.ndim == 2:
        return np.stack([1.0 - p, p])
    if p.ndim != 3:
        raise ValueError(f"probabilities must be (H, W) or (C, H, W), got shape {p.shape}")
    return p


def entropy_map(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy of the class probabilities, divided by log C (so in [0, 1]).

    Entropy weighs every class, so a three-way tie scores higher than a two-way one; it is
    the default uncertainty of the review queue.
    """
    p = as_class_probs(probabilities)
    c = p.shape[0]
    s = p.sum(axis=0, keepdims=True)
    p = np.divide(p, s, out=np.zeros_like(p), where=s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=0)
    return np.clip(h / np.log(max(c, 2)), 0.0, 1.0).astype(np.float32)


def margin_map(probabilities: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: 1 where the two likeliest classes tie, 0 where one is sure."""
    p = as_class_probs(probabilities)
    if p.shape[0] == 1:
        return np.zeros(p.shape[1:], np.float32)
    top2 = -np.partition(-p, 1, axis=0)[:2]
    return np.clip(1.0 - (top2[0] - top2[1]), 0.0, 1.0).astype(np.float32)


def to_uint8(u: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Uncertainty in [0, 1] -> uint8 (round(255 u)), the stored map's encoding."""
    return np.round(np.clip(u, 0.0, 1.0) * 255.0).astype(np.uint8)
