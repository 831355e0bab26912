"""Validation passes: whole images (tiled when large) for segmentation, patches for classifiers.

Both are generators yielding ``Progress(..., "val")`` and returning a MetricAccumulator plus
what the preview plot needs, so the GUI can show validation progress and cancel it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_histo.core.progress import Event, Progress
from napari_histo.engine.datasets import ArraySample
from napari_histo.engine.metrics import MetricAccumulator
from napari_histo.engine.transforms import normalize, to_float01


def _windows(length: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """(start, valid_from, valid_to) of overlapping windows whose valid parts cover the axis."""
    if length <= tile:
        return [(0, 0, length)]
    step = max(1, tile - 2 * margin)
    starts = list(range(0, length - tile, step)) + [length - tile]
    out = []
    for s in starts:
        v0 = 0 if s == 0 else s + margin
        v1 = length if s + tile >= length else s + tile - margin
        out.append((s, v0, v1))
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, image: np.ndarray, pre: dict[str, Any], device: torch.device,
                   tile: int, *, margin: int = 32, amp_dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> torch.Tensor:
    """Logits (C, H, W) on CPU for a whole uint8 image, in overlapping tiles when large."""
    h, w = image.shape[:2]

    def run(crop: np.ndarray) -> torch.Tensor:
        x = normalize(to_float01(torch.from_numpy(np.array(crop, copy=True))[None]), pre["mean"], pre["std"])
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            return model(x)[0].float().cpu()

    if h <= tile and w <= tile:
        return run(image)
    out: torch.Tensor | None = None
    for ys, vy0, vy1 in _windows(h, tile, margin):
        for xs, vx0, vx1 in _windows(w, tile, margin):
            logit = run(image[ys:ys + tile, xs:xs + tile])
            if out is None:
                out = torch.zeros((logit.shape[0], h, w))
            out[:, vy0:vy1, vx0:vx1] = logit[:, vy0 - ys:vy1 - ys, vx0 - xs:vx1 - xs]
    assert out is not None
    return out


def validate_segmentation(model: nn.Module, samples: Sequence[ArraySample], pre: dict[str, Any],
                          device: torch.device, loss_fn: nn.Module, num_classes: int, tile: int, *,
                          amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                          keep_first: bool = True) -> Generator[Event, None, tuple[MetricAccumulator, np.ndarray | None]]:
    """Score every validation image; return the accumulator and the first image's probability."""
    model.eval()
    acc = MetricAccumulator(num_classes, per_item=True)  # per-image counts: bootstrap CIs
    first_prob = None
    for i, s in enumerate(samples):
        logits = predict_logits(model, s.image, pre, device, tile, amp_dtype=amp_dtype,
                                channels_last=channels_last)
        target = torch.from_numpy(s.labels.astype(np.int64))[None]
        weights = None if s.weights is None else torch.from_numpy(s.weights)[None]
        loss = float(loss_fn(logits[None], target, weights))
        prob = torch.softmax(logits, 0)[None]
        n = int((target != 255).sum())
        acc.update(prob, target, loss, n=max(n, 1))
        if i == 0 and keep_first:
            fg = (1 - prob[0, 0]) if num_classes > 2 else prob[0, 1]
            first_prob = fg.numpy()
        yield Progress(i + 1, len(samples), "val")
    return acc, first_prob


def validate_classification(model: nn.Module, dataset: Any, make_batch: Any, batch_size: int,
                            device: torch.device, loss_fn: nn.Module, num_classes: int, *,
                            amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                            ) -> Generator[Event, None, tuple[MetricAccumulator, np.ndarray]]:
    """Score the validation patches (centre crops); return accumulator and all positive probs."""
    model.eval()
    acc = MetricAccumulator(num_classes, exact_roc=True, per_item=True)
    n = len(dataset)
    probs_all = []
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    with torch.no_grad():
        for b, idx in enumerate(batches):
            batch = make_batch(idx, None, None)
            x = batch["x"].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["y"].to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x)
            logits = logits.float()
            loss = float(loss_fn(logits, y))
            prob = torch.softmax(logits, 1)
            acc.update(prob.cpu(), y.cpu(), loss, n=len(idx))
            probs_all.append(((1 - prob[:, 0]) if num_classes > 2 else prob[:, 1]).cpu().numpy())
            yield Progress(b + 1, len(batches), "val")
    return acc, np.concatenate(probs_all) if probs_all else np.zeros(0)
