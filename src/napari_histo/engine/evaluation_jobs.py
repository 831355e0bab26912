"""Evaluation tasks a viewer runs in a worker: two arrays, or two folders of slides.

:func:`evaluate_arrays_job` compares a probability (or label) array with a ground-truth
label array placed anywhere in the same world (``(scale, translate)`` of pixel centres, as
napari layers are): the truth is resampled onto the prediction's grid row chunk by row
chunk into a :class:`~napari_histo.engine.metrics.PixelAccumulator`.
:func:`evaluate_folders_job` pairs prediction stores with masks/annotations by file name
and runs :func:`~napari_histo.engine.evaluation.evaluate_slides`. Both are generators
(Task) yielding Progress/Message events; nothing here knows napari.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.progress import Message, Progress

__all__ = ["evaluate_arrays_job", "evaluate_folders_job", "pair_by_name"]


def evaluate_arrays_job(prob: Any, prob_place: tuple[Any, Any], truth: Any,
                        truth_place: tuple[Any, Any], *, threshold: float = 0.5,
                        is_probability: bool = True, rows: int = 512) -> Any:
    """Pixel metrics of ``prob`` vs ``truth`` sampled on ``prob``'s grid, in row chunks.

    Returns ``{"metrics", "fpr", "tpr", "confusion"}`` (confusion as [[tn, fp], [fn, tp]]).
    """
    from napari_histo.engine.corrections import resample_nearest
    from napari_histo.engine.metrics import PixelAccumulator

    acc = PixelAccumulator(threshold=threshold)
    h, w = int(prob.shape[-2]), int(prob.shape[-1])
    (ps, pt), (ts, tt) = prob_place, truth_place
    n = -(-h // rows)
    for i, y0 in enumerate(range(0, h, rows)):
        y1 = min(h, y0 + rows)
        p = np.asarray(prob[y0:y1]).astype(np.float32)
        if p.ndim == 3:  # a channel axis: foreground = not background
            p = p[1] if p.shape[0] == 2 else 1.0 - p[0]
        if not is_probability:
            p = (p > 0).astype(np.float32)
        t = resample_nearest(truth, ts, tt, (y1 - y0, w), ps, (pt[0] + y0 * ps[0], pt[1]))
        acc.add(p, t)
        yield Progress(i + 1, n, "evaluate")
    metrics = acc.result()
    fpr, tpr = acc.curve()
    cm = np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])
    return {"metrics": metrics, "fpr": fpr, "tpr": tpr, "confusion": cm}


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".ome.zarr", ".zarr", "_mask.tif", "_mask.png", ".ome.tif", ".tif", ".png",
                ".xml", ".geojson", ".json"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return p.stem


def pair_by_name(pred_dir: str | Path, truth_dir: str | Path) -> list[tuple[Path, Path]]:
    """(prediction, truth) pairs of two folders whose names share a stem
    (``tumor_001.ome.zarr`` + ``tumor_001_mask.tif``); hidden files are ignored."""
    preds = sorted(p for p in Path(pred_dir).iterdir() if not p.name.startswith("."))
    truths = {_stem(t): t for t in Path(truth_dir).iterdir() if not t.name.startswith(".")}
    return [(p, truths[_stem(p)]) for p in preds if _stem(p) in truths]


def evaluate_folders_job(pred_dir: str, truth_dir: str, out_dir: str | None = None) -> Any:
    """Slide-level AUC and FROC over prediction stores paired with truths by name."""
    from napari_histo.core.errors import DataError
    from napari_histo.engine.evaluation import evaluate_slides

    pairs = pair_by_name(pred_dir, truth_dir)
    if not pairs:
        raise DataError(f"no prediction in {pred_dir} has a ground truth with the same name in "
                        f"{truth_dir} (e.g. tumor_001.ome.zarr + tumor_001_mask.tif)")
    yield Message(f"evaluating {len(pairs)} slide(s)")
    report = evaluate_slides([p for p, _ in pairs], [t for _, t in pairs], out_dir=out_dir)
    return report
