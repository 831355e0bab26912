"""Score written predictions against ground truth: pixel metrics, slide-level AUC, FROC.

The metrics come from :mod:`napari_histo.engine.metrics` and the figures from
:mod:`napari_histo.engine.plots`; this module reads predictions and truths and pairs them.

- :func:`pixel_metrics`: accuracy, Dice, IoU, precision, recall and ROC AUC of an array,
  chunk by chunk (flat memory) into a :class:`~napari_histo.engine.metrics.PixelAccumulator`
  (AUC exact up to ``exact_max`` pixels, binned beyond).
- :func:`evaluate_prediction`: a written prediction store (or probability image) against a
  mask (any resolution covering the same extent) or an ASAP XML / GeoJSON annotation,
  sampled at the prediction's grid.
- :func:`slide_froc_inputs` / :func:`evaluate_slides`: the CAMELYON16 FROC
  (:func:`~napari_histo.engine.metrics.froc`) and :func:`slide_auc`, the slide-level ROC AUC
  of the maximum tumour probability per slide, over several slides.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError
from napari_histo.engine.metrics import (
    EXACT_MAX,
    FrocResult,
    PixelAccumulator,
    binary_scores,
    froc,
    froc_inputs,
    roc_auc,
)

if TYPE_CHECKING:
    from napari_histo.engine.inference.slide_run import PredictionResult

__all__ = ["evaluate_prediction", "evaluate_slides", "pixel_metrics", "slide_auc",
           "slide_froc_inputs", "write_json"]


# ------------------------------------------------------------------------------ pixels


def pixel_metrics(prob: npt.ArrayLike, truth: npt.ArrayLike, *, threshold: float = 0.5,
                  valid: npt.ArrayLike | None = None, chunk: int = 2048,
                  exact_max: int = EXACT_MAX) -> dict[str, Any]:
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


def evaluate_prediction(pred: str | Path | PredictionResult, truth: str | Path, *,
                        threshold: float | None = None,
                        chunk: int = 1024, exact_max: int = EXACT_MAX,
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


def slide_auc(max_probs: npt.ArrayLike, is_tumor: npt.ArrayLike) -> float:
    """Slide-level ROC AUC of the maximum tumour probability per slide."""
    return roc_auc(max_probs, is_tumor)


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
    from napari_histo.engine.plots import plot_froc, plot_rocs

    per: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    froc_slides = []
    fr: FrocResult | None = None
    for p, t in zip(preds, truths, strict=False):
        m, acc = evaluate_prediction(p, t, threshold=threshold)
        per.append(m)
        curves[f"{Path(str(p)).name} (AUC {m['auc']:.3f})"] = acc.curve()
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
        pooled = binary_scores(tot["tp"], tot["fp"], tot["fn"], tot["tn"])
        report["pooled"] = {k: pooled[k] for k in ("accuracy", "dice", "iou")}
        labels = [m["tumor_slide"] for m in per]
        report["slide_auc"] = slide_auc([m["max_probability"] for m in per], labels)
        if len(froc_slides) == len(per):
            fr = froc(froc_slides)
            report["froc"] = fr.to_dict()
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        write_json(report, d / "metrics.json")
        plot_rocs(d / "roc.png", curves, title="pixel ROC")
        if fr is not None:
            plot_froc(d / "froc.png", fr)
        report["files"] = [str(d / "metrics.json"), str(d / "roc.png")] + (
            [str(d / "froc.png")] if "froc" in report else [])
    return report
