"""Score predictions against ground truth: pixel metrics, slide-level AUC, CAMELYON16 FROC.

- :func:`pixel_metrics` / :class:`PixelAccumulator`: accuracy, Dice, IoU, precision, recall
  and ROC AUC computed chunk by chunk (flat memory). AUC is exact (rank based, ties halved)
  while at most ``exact_max`` pixels were seen, else from 1024-bin score histograms.
- :func:`evaluate_prediction`: a written prediction store (or probability image) against a
  mask (any resolution covering the same extent) or an ASAP XML / GeoJSON annotation,
  sampled at the prediction's grid.
- :func:`froc`: the CAMELYON16 FROC, following the challenge's ``Evaluation_FROC.py``:
  the truth mask is dilated by 75 um (distance < 75 / (2 px_um) px), holes filled, lesions
  are its 8-connected components; lesions whose major axis is < 275 um are isolated tumour
  cells (ITC): detections on them are neither true nor false positives and they are not
  counted as misses. Detections are local maxima of the probability map. Sensitivity at an
  FP rate r is the best sensitivity reached with at most r false positives per slide, and
  the score is its mean over r in (1/4, 1/2, 1, 2, 4, 8).
- :func:`slide_auc`: slide-level ROC AUC of the maximum tumour probability per slide.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError

if TYPE_CHECKING:
    from napari_histo.engine.inference.predict import PredictionResult

__all__ = ["FROC_RATES", "FrocResult", "PixelAccumulator", "evaluate_prediction", "froc",
           "froc_inputs", "pixel_metrics", "roc_auc", "roc_curve", "save_froc_plot",
           "save_roc_plot", "slide_auc"]

FROC_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BINS = 1024


# ------------------------------------------------------------------------------ AUC


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Exact ROC AUC (Mann-Whitney U, ties count one half); NaN with one class only."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() > 0
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def roc_curve(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() > 0
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.array([], int)
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / max(1, y.sum())]
    fpr = np.r_[0.0, fp / max(1, (~y).sum())]
    return fpr, tpr


def _hist_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from score histograms (same bins): ties within a bin count one half."""
    npos, nneg = pos.sum(), neg.sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(((pos * neg_below).sum() + 0.5 * (pos * neg).sum()) / (npos * nneg))


def _hist_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = np.cumsum(pos[::-1])
    fp = np.cumsum(neg[::-1])
    return (np.r_[0.0, fp / max(1, neg.sum())], np.r_[0.0, tp / max(1, pos.sum())])


# ------------------------------------------------------------------------------ pixels


@dataclass
class PixelAccumulator:
    """Streams (probability, truth) chunks; :meth:`result` gives the metrics."""

    threshold: float = 0.5
    exact_max: int = 4_000_000
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    pos_hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    neg_hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    _scores: list[np.ndarray] = field(default_factory=list)
    _labels: list[np.ndarray] = field(default_factory=list)
    _n: int = 0

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
        pred = p >= self.threshold
        self.tp += int((pred & t).sum())
        self.fp += int((pred & ~t).sum())
        self.fn += int((~pred & t).sum())
        self.tn += int((~pred & ~t).sum())
        idx = np.clip((p * BINS).astype(np.int64), 0, BINS - 1)
        self.pos_hist += np.bincount(idx[t], minlength=BINS)
        self.neg_hist += np.bincount(idx[~t], minlength=BINS)
        self._n += p.size
        if self._n <= self.exact_max:
            self._scores.append(p)
            self._labels.append(t)
        else:
            self._scores, self._labels = [], []

    def result(self) -> dict[str, Any]:
        """accuracy, dice, iou, precision, recall, auc (+ auc_exact), counts."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        n = tp + fp + fn + tn
        if n == 0:
            raise DataError("nothing to evaluate: no valid pixels")

        def div(a: float, b: float) -> float:
            return float(a / b) if b else float("nan")

        exact = self._n <= self.exact_max and bool(self._scores)
        if exact:
            s, y = np.concatenate(self._scores), np.concatenate(self._labels)
            auc = roc_auc(s, y)
        else:
            auc = _hist_auc(self.pos_hist, self.neg_hist)
        # Dice/IoU of two empty masks: 1 (perfect agreement on "no tumour")
        dice = div(2 * tp, 2 * tp + fp + fn) if (tp + fp + fn) else 1.0
        iou = div(tp, tp + fp + fn) if (tp + fp + fn) else 1.0
        return {"accuracy": div(tp + tn, n), "dice": dice, "iou": iou,
                "precision": div(tp, tp + fp), "recall": div(tp, tp + fn),
                "specificity": div(tn, tn + fp), "auc": auc, "auc_exact": exact,
                "threshold": self.threshold, "pixels": n, "positives": tp + fn,
                "tp": tp, "fp": fp, "fn": fn, "tn": tn}

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """ROC curve (fpr, tpr): exact when the scores were kept, else from histograms."""
        if self._n <= self.exact_max and self._scores:
            return roc_curve(np.concatenate(self._scores), np.concatenate(self._labels))
        return _hist_curve(self.pos_hist, self.neg_hist)


def pixel_metrics(prob: npt.ArrayLike, truth: npt.ArrayLike, *, threshold: float = 0.5,
                  valid: npt.ArrayLike | None = None, chunk: int = 2048,
                  exact_max: int = 4_000_000) -> dict[str, Any]:
    """Pixel metrics of a probability map (array-like, (H, W), uint8 = 255 p) vs truth."""
    acc = PixelAccumulator(threshold=threshold, exact_max=exact_max)
    h = prob.shape[0]  # type: ignore[union-attr]
    for y in range(0, h, chunk):
        p = _as_prob(np.asarray(prob[y : y + chunk]))  # type: ignore[index]
        t = np.asarray(truth[y : y + chunk])  # type: ignore[index]
        v = None if valid is None else np.asarray(valid[y : y + chunk])  # type: ignore[index]
        acc.add(p, t, v)
    return acc.result()


def _as_prob(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return a.astype(np.float32)


# ------------------------------------------------------------------------------ truth


class _Truth:
    """Ground truth sampled on a prediction grid: a mask file or annotations."""

    def __init__(self, path: str | Path, slide_shape: tuple[int, int] | None,
                 pred_shape: tuple[int, int], downsample: tuple[float, float],
                 origin: tuple[float, float]) -> None:
        self.path = Path(path)
        self.down, self.origin = downsample, origin
        self.pred_shape = pred_shape
        if not self.path.exists():
            raise DataError(f"ground truth not found: {self.path}")
        suffix = self.path.suffix.lower()
        self.annotations = None
        if suffix in (".xml", ".geojson", ".json"):
            from napari_histo.io.annotations import read_annotations

            # polygons that do not fit the slide are skipped with a warning, not scored
            self.annotations = read_annotations(self.path, extent=slide_shape)
            return
        from napari_histo.io.masks import open_mask

        self.mask = open_mask(self.path)
        mh, mw = self.mask.shape
        if slide_shape is None:  # same extent as the prediction
            slide_shape = (int(round(pred_shape[0] * downsample[0])),
                           int(round(pred_shape[1] * downsample[1])))
        self.scale = (slide_shape[0] / mh, slide_shape[1] / mw)
        if abs(self.scale[0] / self.scale[1] - 1) > 0.02:
            raise DataError(f"{self.path.name} ({mh} x {mw}) does not cover the same extent "
                            f"as the slide ({slide_shape[0]} x {slide_shape[1]})")
        downs = self.mask.metadata.level_downsamples
        self.level = max((i for i, d in enumerate(downs) if self.scale[0] * d <= downsample[0] * 1.01),
                         default=0)

    def window(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Truth labels of prediction pixels [y0:y1, x0:x1] (nearest sampling)."""
        dy, dx = self.down
        oy, ox = self.origin
        if self.annotations is not None:
            from napari_histo.io.annotations import rasterize_annotations

            return rasterize_annotations(self.annotations, (y1 - y0, x1 - x0),
                                         downsample=dy, origin=(oy + y0 * dy, ox + x0 * dx))
        ds = float(self.mask.metadata.level_downsamples[self.level])
        sy, sx = self.scale[0] * ds, self.scale[1] * ds
        ys = np.floor((oy + (np.arange(y0, y1) + 0.5) * dy) / sy).astype(np.int64)
        xs = np.floor((ox + (np.arange(x0, x1) + 0.5) * dx) / sx).astype(np.int64)
        ly0, ly1 = int(ys.min()), int(ys.max()) + 1
        lx0, lx1 = int(xs.min()), int(xs.max()) + 1
        win = np.asarray(self.mask.read_region((int(round(ly0 * ds)), int(round(lx0 * ds))),
                                               self.level, (ly1 - ly0, lx1 - lx0)))
        if win.ndim == 3:
            win = win[..., 0]
        return win[np.ix_(ys - ly0, xs - lx0)]


def _open_pred(pred: str | Path | PredictionResult) -> tuple[Any, dict[str, Any]]:
    """(probability array-like, metadata) of a store path, a PredictionResult or an image."""
    if not isinstance(pred, (str, Path)):
        return pred.probabilities, {"downsample": list(pred.downsample),
                                    "origin_px": list(pred.origin_px), "mpp": pred.mpp}
    p = Path(pred)
    if p.is_dir():
        from napari_histo.engine.inference.writer import open_prediction

        prob, _, meta = open_prediction(p)
        if not meta.get("complete"):
            raise DataError(f"{p} is an unfinished prediction; finish it with --resume first")
        return prob, meta
    if not p.exists():
        raise DataError(f"prediction not found: {p}")
    from PIL import Image

    from napari_histo.core.limits import check_decode, check_regular_file

    check_regular_file(p, what=f"prediction {p}", error=DataError)
    try:
        with Image.open(p) as im:
            check_decode(im.size[1], im.size[0], f"prediction {p.name}", channels=1,
                         error=DataError, hint="predict into an OME-Zarr store instead")
            arr = np.asarray(im.convert("L"))
    except DataError:
        raise
    except Exception as err:  # not an image Pillow reads, or a bomb Pillow refuses itself
        raise DataError(f"cannot read the prediction {p.name}: {type(err).__name__}: {err}") from err
    return arr, {"downsample": [1.0, 1.0], "origin_px": [0.0, 0.0], "mpp": None}


def evaluate_prediction(pred: str | Path | PredictionResult, truth: str | Path, *, threshold: float | None = None,
                        chunk: int = 1024, exact_max: int = 4_000_000,
                        ) -> tuple[dict[str, Any], PixelAccumulator]:
    """Pixel metrics of a prediction (store path, PredictionResult or PNG) vs truth.

    The truth (mask or annotation) is sampled at the prediction's grid: every prediction
    pixel is compared with the truth at its centre. Returns (metrics, accumulator).
    """
    prob, meta = _open_pred(pred)
    if threshold is None:
        threshold = float(meta.get("threshold", 0.5))
    if prob.ndim == 3:  # multi-class: score of "not background"
        raise DataError("pixel evaluation of multi-class predictions is not supported yet; "
                        "evaluate a binary (background/tumour) model")
    shape = tuple(int(s) for s in prob.shape)
    down = tuple(float(v) for v in meta.get("downsample") or (1.0, 1.0))
    origin = tuple(float(v) for v in meta.get("origin_px") or (0.0, 0.0))
    slide_shape = tuple(meta["slide_shape"]) if meta.get("slide_shape") else None
    t = _Truth(truth, slide_shape, shape, down, origin)  # type: ignore[arg-type]
    acc = PixelAccumulator(threshold=threshold, exact_max=exact_max)
    pmax = 0.0
    any_truth = False
    for y0 in range(0, shape[0], chunk):
        for x0 in range(0, shape[1], chunk):
            y1, x1 = min(y0 + chunk, shape[0]), min(x0 + chunk, shape[1])
            p = _as_prob(np.asarray(prob[y0:y1, x0:x1]))
            w = t.window(y0, x0, y1, x1)
            acc.add(p, w)
            pmax = max(pmax, float(p.max(initial=0.0)))
            any_truth = any_truth or bool((w > 0).any())
    m = acc.result()
    m["max_probability"] = pmax
    m["tumor_slide"] = any_truth
    m["prediction"] = str(pred if not hasattr(pred, "path") else pred.path)
    m["truth"] = str(truth)
    return m, acc


# ------------------------------------------------------------------------------ FROC


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


def slide_auc(max_probs: npt.ArrayLike, is_tumor: npt.ArrayLike) -> float:
    """Slide-level ROC AUC of the maximum tumour probability per slide."""
    return roc_auc(max_probs, is_tumor)


# ------------------------------------------------------------------------------ plots


def save_roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path,
                  title: str = "ROC") -> Path:
    """ROC curves {name: (fpr, tpr, auc)} to a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_froc_plot(res: FrocResult, path: str | Path) -> Path:
    """FROC curve (sensitivity vs mean FPs per slide, log x) to a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    fr = np.maximum(np.asarray(res.fps_per_slide), 1e-2)
    ax.step(fr, res.sensitivity, where="post")
    ax.plot([float(r) for r in res.sensitivity_at], list(res.sensitivity_at.values()), "o")
    ax.set_xscale("log")
    ax.set_xlim(0.1, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false positives per slide")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(f"FROC (score {res.score:.3f}, {res.lesions} lesions, {res.slides} slides)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically (NaN as null)."""
    import math
    import os

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.floating, float)):
            return None if math.isnan(float(o)) else float(o)
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.bool_):
            return bool(o)
        return o

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2))
    os.replace(tmp, path)
    return path


def slide_froc_inputs(pred: str | Path, truth: str | Path, *, max_px_um: float = 8.0,
                      **det_kw: Any) -> dict[str, Any]:
    """FROC inputs of one written prediction store at a coarse pyramid level (<= 8 um/px)."""
    import zarr

    from napari_histo.engine.inference.writer import open_prediction

    _, _, meta = open_prediction(pred)
    group: Any = zarr.open_group(str(pred), mode="r")
    down0 = [float(v) for v in meta.get("downsample") or (1.0, 1.0)]
    mpp = meta.get("mpp")
    if not mpp:
        raise DataError(f"{pred} has no mpp: the FROC needs physical units")
    k = 0
    while str(k + 1) in group and mpp[0] * 2 ** (k + 1) <= max_px_um:
        k += 1
    prob = _as_prob(np.asarray(group[str(k)][...]))
    px_um = float(mpp[0]) * 2**k
    down = (down0[0] * 2**k, down0[1] * 2**k)
    origin = tuple(float(v) for v in meta.get("origin_px") or (0.0, 0.0))
    slide_shape = tuple(meta["slide_shape"]) if meta.get("slide_shape") else None
    t = _Truth(truth, slide_shape, prob.shape, down, origin)  # type: ignore[arg-type]
    truth_arr = t.window(0, 0, prob.shape[0], prob.shape[1])
    out = froc_inputs(prob, truth_arr, px_um, **det_kw)
    out["px_um"] = px_um
    return out


def evaluate_slides(preds: Sequence[str | Path], truths: Sequence[str | Path], *, out_dir: str | Path | None = None,
                    threshold: float | None = None) -> dict[str, Any]:
    """Per-slide pixel metrics; with several slides also slide-level AUC and FROC; plots.

    Writes ``metrics.json``, ``roc.png`` (and ``froc.png``) into ``out_dir`` when given.
    """
    if len(preds) != len(truths):
        raise DataError(f"give one truth per prediction ({len(preds)} vs {len(truths)})")
    per: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    froc_slides = []
    for p, t in zip(preds, truths, strict=False):
        m, acc = evaluate_prediction(p, t, threshold=threshold)
        per.append(m)
        fpr, tpr = acc.curve()
        curves[Path(str(p)).name] = (fpr, tpr, m["auc"])
        if Path(str(p)).is_dir() and len(preds) > 1:
            try:
                froc_slides.append(slide_froc_inputs(p, t))
            except DataError:
                pass
    report: dict[str, Any] = {"slides": per}
    if len(per) == 1:
        report.update({k: per[0][k] for k in ("accuracy", "dice", "iou", "auc")})
    else:
        tot = {k: sum(m[k] for m in per) for k in ("tp", "fp", "fn", "tn")}
        n = sum(tot.values())
        report["pooled"] = {
            "accuracy": (tot["tp"] + tot["tn"]) / n if n else float("nan"),
            "dice": 2 * tot["tp"] / max(1, 2 * tot["tp"] + tot["fp"] + tot["fn"]),
            "iou": tot["tp"] / max(1, tot["tp"] + tot["fp"] + tot["fn"])}
        labels = [m["tumor_slide"] for m in per]
        report["slide_auc"] = slide_auc([m["max_probability"] for m in per], labels)
        if len(froc_slides) == len(per):
            fr = froc(froc_slides)
            report["froc"] = fr.to_dict()
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        write_json(report, d / "metrics.json")
        save_roc_plot(curves, d / "roc.png", title="pixel ROC")
        if "froc" in report:
            save_froc_plot(FrocResult(**report["froc"]), d / "froc.png")
        report["files"] = [str(d / "metrics.json"), str(d / "roc.png")] + (
            [str(d / "froc.png")] if "froc" in report else [])
    return report
