"""Test-time-augmentation disagreement for the few regions where it can change the order.

TTA costs 8 forward passes per tile, so it is run only on the ``top`` best-ranked regions
whose mean probability is within ``near`` of the threshold (where a flip can tip the label);
the cost (regions, store pixels, seconds) is returned for the ranking metadata.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Progress, Task
from napari_histo.engine.review.regions import DEFAULT_WEIGHTS, Region

__all__ = ["TTA_WEIGHT", "tta_disagreement", "tta_rerank"]

#: weight of the TTA disagreement added to a region's score
TTA_WEIGHT = 1.0


def tta_disagreement(stored: np.ndarray, tta_probs: np.ndarray, tissue: np.ndarray) -> float:
    """Mean ``|p_tta - p_stored|`` over tissue, of the positive class (binary) or summed
    over classes / 2 (multi-class): 0 = the flips agree with the stored prediction, 1 = they
    flip every pixel with full confidence."""
    from napari_histo.engine.review.uncertainty import as_class_probs

    s = as_class_probs(stored)
    d = np.abs(tta_probs - s).sum(axis=0) / 2.0
    return float(d[tissue].mean()) if tissue.any() else 0.0


def tta_rerank(meta: dict[str, Any], probs: Any, ranked: list[Region], *,
               model: str | Path | None = None, top: int = 8, near: float = 0.35,
               ) -> Task[tuple[list[Region], dict[str, Any]]]:
    """Add ``TTA_WEIGHT * disagreement`` to the score of the chosen regions and re-rank.

    ``meta``/``probs``: the store's metadata and level-0 probabilities; ``model``: a
    checkpoint (default: the one the store was predicted with).
    """
    from napari_histo.engine.checkpoints import load_checkpoint
    from napari_histo.engine.review.slide_access import predict_box, store_image_reader

    ckpt = model or meta.get("checkpoint")
    if not ckpt or not Path(str(ckpt)).exists():
        raise ConfigError(f"TTA needs the checkpoint the prediction was made with "
                          f"({ckpt or 'not recorded'} is not there); pass one (--tta CKPT)")
    if not isinstance(top, int) or top < 0:
        raise ConfigError(f"tta_top must be a whole number >= 0, got {top!r}")
    thr = float(meta.get("threshold", 0.5))
    chosen = [r for r in ranked if abs(r.mean_prob - thr) <= near][:top]
    t0 = time.perf_counter()
    loaded = load_checkpoint(str(ckpt), device="cpu")
    read = store_image_reader(meta)
    found: dict[str, float] = {}
    px = 0
    try:
        for i, r in enumerate(chosen):
            y0, x0, y1, x1 = r.bbox_store
            p = predict_box(read, loaded, r.bbox_store, tta=True)
            stored = np.asarray(probs[..., y0:y1, x0:x1])
            tissue = (stored > 0) if stored.ndim == 2 else stored.sum(axis=0) > 0
            found[r.id] = tta_disagreement(stored, p, tissue)
            px += (y1 - y0) * (x1 - x0)
            yield Progress(i + 1, len(chosen), "TTA disagreement")
    finally:
        read.close()
    w = DEFAULT_WEIGHTS.get("tta", TTA_WEIGHT)
    rescored = [Region(**{**r.__dict__, "score": r.score + w * found[r.id], "tta": found[r.id]})
                if r.id in found else r for r in ranked]
    rescored.sort(key=lambda r: (-r.score, r.bbox_store[0], r.bbox_store[1]))
    out = [Region(**{**r.__dict__, "rank": i + 1}) for i, r in enumerate(rescored)]
    cost = {"regions": len(chosen), "store_px": px, "seconds": round(time.perf_counter() - t0, 3),
            "checkpoint": str(ckpt), "near": near, "top": top}
    return out, cost
