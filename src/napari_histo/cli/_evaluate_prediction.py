"""``napari-histo evaluate --pred OUT --truth MASK_OR_ANNOTATION [--json] [--out DIR]``.

Pixel accuracy, Dice, IoU and ROC AUC of written predictions (OME-Zarr stores from
``predict``, or probability PNGs) against masks or ASAP XML / GeoJSON annotations, chunk by
chunk at the prediction's resolution; with several slides also the slide-level AUC and the
CAMELYON16 FROC. ``--out`` receives metrics.json, roc.png and froc.png.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from napari_histo.core.errors import ConfigError, DataError


def _expand(values: list[str]) -> list[Path]:
    out: list[Path] = []
    for v in values:
        p = Path(v)
        if p.is_dir() and not ((p / ".zattrs").exists() or (p / "zarr.json").exists()):
            # a folder of predictions/masks
            kids = sorted(q for q in p.iterdir() if not q.name.startswith("."))
            out.extend(kids)
        else:
            out.append(p)
    return out


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".ome.zarr", ".zarr", "_mask.tif", "_mask.png", ".ome.tif", ".tif", ".png",
                ".xml", ".geojson", ".json", "_probability.png"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return p.stem


def _pair(preds: list[Path], truths: list[Path]) -> list[tuple[Path, Path]]:
    if len(preds) == len(truths) and len(preds) <= 1:
        return list(zip(preds, truths, strict=False))
    by = {_stem(t): t for t in truths}
    pairs = []
    for p in preds:
        t = by.get(_stem(p))
        if t is None:
            if len(preds) == len(truths):
                return list(zip(preds, truths, strict=False))
            raise ConfigError(f"no ground truth named like {p.name} among --truth files")
        pairs.append((p, t))
    return pairs


#: probability images ``evaluate --pred`` reads besides prediction stores
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def _check_pred(p: Path) -> None:
    """One-line errors for a --pred that is not a finished prediction store or image."""
    from napari_histo.engine.inference.writer import read_meta

    if p.is_dir():
        meta = read_meta(p)
        if meta is None:
            raise ConfigError(f"{p} is not a napari-histo prediction store (no prediction "
                              "metadata); give a store written by napari-histo predict")
        if not meta.get("complete"):
            raise DataError(f"{p} is an unfinished prediction; finish it with "
                            "napari-histo predict ... --resume first")
    elif not p.exists():
        raise ConfigError(f"prediction not found: {p}")
    elif not p.name.lower().endswith(IMAGE_SUFFIXES):
        raise ConfigError(f"{p} is neither a prediction store nor a probability image "
                          f"({', '.join(IMAGE_SUFFIXES)})")


def run_prediction_evaluation(args: argparse.Namespace) -> int:
    """Evaluate --pred against --truth; print a table (or JSON)."""
    from napari_histo.engine.evaluation import evaluate_slides

    preds = _expand(args.pred)
    for p in preds:
        _check_pred(p)
    pairs = _pair(preds, _expand(args.truth))
    report = evaluate_slides([p for p, _ in pairs], [t for _, t in pairs], out_dir=args.out,
                             threshold=getattr(args, "threshold", None))
    if args.json:
        def clean(o: Any) -> Any:  # NaN -> null
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, list):
                return [clean(v) for v in o]
            if isinstance(o, float) and math.isnan(o):
                return None
            return o

        print(json.dumps(clean(report), indent=2))
        return 0
    for m in report["slides"]:
        print(f"{Path(m['prediction']).name}: accuracy {m['accuracy']:.4f}  dice {m['dice']:.4f}  "
              f"iou {m['iou']:.4f}  auc {m['auc']:.4f}{'' if m['auc_exact'] else ' (binned)'}")
    if "slide_auc" in report:
        print(f"slide-level AUC (max probability): {report['slide_auc']:.4f}")
    if "froc" in report:
        f = report["froc"]
        pts = "  ".join(f"{k}:{v:.3f}" for k, v in f["sensitivity_at"].items())
        print(f"FROC score {f['score']:.4f} ({f['lesions']} lesions, {f['itc']} ITC)  {pts}")
    for f in report.get("files", []):
        print(f"wrote {f}")
    return 0
