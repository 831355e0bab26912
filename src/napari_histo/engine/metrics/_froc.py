"""CAMELYON16 FROC, following the challenge's ``Evaluation_FROC.py``.

The truth mask is dilated by 75 um (distance < 75 / (2 px_um) px), holes filled, lesions
are its 8-connected components; lesions whose major axis is < 275 um are isolated tumour
cells (ITC): detections on them are neither true nor false positives and they are not
counted as misses. Detections are local maxima of the probability map. Sensitivity at an
FP rate r is the best sensitivity reached with at most r false positives per slide, and
the score is its mean over r in :data:`FROC_RATES`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError

FROC_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class FrocResult:
    """FROC curve and score (see the module docstring for the rules)."""

    fps_per_slide: list[float]
    sensitivity: list[float]
    sensitivity_at: dict[str, float]
    score: float
    lesions: int
    itc: int
    slides: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def evaluation_mask(truth: npt.ArrayLike, px_um: float) -> tuple[np.ndarray, list[int]]:
    """CAMELYON16 evaluation mask (labelled lesions) and the labels that are ITCs."""
    from scipy import ndimage
    from skimage import measure

    t = np.asarray(truth) > 0
    if not t.any():
        return np.zeros(t.shape, np.int32), []
    dist = ndimage.distance_transform_edt(~t)
    binary = dist < 75.0 / (px_um * 2.0)
    filled = ndimage.binary_fill_holes(binary)
    lab = measure.label(filled, connectivity=2)
    itc = [int(rp.label) for rp in measure.regionprops(lab)
           if rp.axis_major_length < 275.0 / px_um]
    return lab.astype(np.int32), itc


def detections(prob: npt.ArrayLike, px_um: float, *, min_prob: float = 0.1,
               min_distance_um: float = 75.0) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a probability map: (coords (N, 2) in px, probabilities (N,))."""
    from skimage.feature import peak_local_max

    p = np.asarray(prob, dtype=np.float32)
    md = max(1, int(round(min_distance_um / px_um)))
    coords = peak_local_max(p, min_distance=md, threshold_abs=min_prob, exclude_border=False)
    coords = coords.reshape(-1, 2)
    return coords, p[coords[:, 0], coords[:, 1]] if len(coords) else np.zeros(0, np.float32)


def froc_inputs(prob: npt.ArrayLike, truth: npt.ArrayLike, px_um: float,
                **det_kw: Any) -> dict[str, Any]:
    """One slide's FP probabilities, per-lesion best TP probability, lesion and ITC counts."""
    lab, itc = evaluation_mask(truth, px_um)
    coords, probs = detections(prob, px_um, **det_kw)
    nlab = int(lab.max())
    tp = np.zeros(nlab, np.float64)
    fps: list[float] = []
    itc_set = set(itc)
    for (y, x), pr in zip(coords, probs, strict=False):
        hit = int(lab[y, x])
        if hit == 0:
            fps.append(float(pr))
        elif hit not in itc_set:
            tp[hit - 1] = max(tp[hit - 1], float(pr))
    keep = [i for i in range(nlab) if (i + 1) not in itc_set]
    return {"fp": fps, "tp": tp[keep].tolist(), "lesions": len(keep), "itc": len(itc)}


def froc(slides: list[dict[str, Any]], rates: tuple[float, ...] = FROC_RATES) -> FrocResult:
    """FROC over slides (each from :func:`froc_inputs`)."""
    n = len(slides)
    if n == 0:
        raise DataError("FROC needs at least one slide")
    fps = np.asarray([p for s in slides for p in s["fp"]], np.float64)
    tps = np.asarray([p for s in slides for p in s["tp"]], np.float64)
    lesions = sum(s["lesions"] for s in slides)
    thresholds = np.unique(np.r_[fps, tps[tps > 0]])[::-1]
    fp_rate = [0.0]
    sens = [0.0]
    for t in thresholds:
        fp_rate.append(float((fps >= t).sum()) / n)
        sens.append(float((tps >= t).sum()) / lesions if lesions else float("nan"))
    fr, se = np.asarray(fp_rate), np.asarray(sens)
    at = {}
    for r in rates:
        ok = fr <= r + 1e-12
        at[str(r)] = float(se[ok].max()) if ok.any() else 0.0
    score = float(np.mean(list(at.values()))) if lesions else float("nan")
    return FrocResult(fr.tolist(), se.tolist(), at, score, lesions,
                      sum(s["itc"] for s in slides), n)
