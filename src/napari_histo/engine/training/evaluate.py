"""Score a checkpoint on any labelled dataset with the training-time preprocessing.

``evaluate_checkpoint(ckpt, data, split="val")`` reproduces the validation metrics of the
run that wrote the checkpoint (same groups, resolution and stain normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import DataError
from napari_histo.core.progress import Message, Task
from napari_histo.engine.checkpoints import load_checkpoint
from napari_histo.engine.datasets import (
    PatchDataset,
    PCamDataset,
    find_classification_items,
    find_pcam,
    find_pcam_splits,
    find_segmentation_pairs,
    load_pairs,
)
from napari_histo.engine.training.losses import SegClsLoss
from napari_histo.engine.training.pipeline import BatchMaker
from napari_histo.engine.training.validate import validate_classification, validate_segmentation
from napari_histo.engine.uncertainty import metric_cis, validation_warnings


def evaluate_checkpoint(checkpoint: str | Path, data: Sequence[str | Path], *, split: str = "all",
                        data_mpp: float | None = None, device: str = "auto", batch_size: int = 8,
                        group_by: str | None = None, out_dir: str | Path | None = None,
                        tta: bool = False) -> Task[dict[str, Any]]:
    """Metrics (accuracy, dice, iou, precision, recall, auc, loss, confusion) of a checkpoint.

    ``split`` = "val"/"train" keeps only the groups the run used for that side (stored in the
    checkpoint); "all" uses every item. A standard PCam folder has fixed files instead:
    ``split`` = "train"/"val"/"test" picks one (the test split is read only when asked). ``data_mpp`` defaults to the run's setting.
    ``tta`` averages the model over flips/rot90 (``engine.transforms.TTAModel``).
    """
    lm = load_checkpoint(checkpoint, device)
    model = lm.model
    if tta:
        from napari_histo.engine.transforms import TTAModel

        model = TTAModel(lm.model).eval()
    cfg = dict(lm.extra.get("config") or {})
    data_mpp = data_mpp if data_mpp is not None else cfg.get("data_mpp")
    mpp = lm.preprocessing.get("mpp")
    scale = float(data_mpp) / float(mpp) if (data_mpp and mpp) else 1.0
    group_by = group_by or cfg.get("group_by") or "auto"
    keep: set[str] | None = None
    # a standard PCam folder has fixed train/valid/test files: the split picks the file
    pcam_splits = find_pcam_splits(data[0]) if lm.task == "classify" and data else None
    fixed_pcam = pcam_splits is not None and "" not in pcam_splits
    if split == "test" and not fixed_pcam:
        raise DataError("split 'test' needs data with a fixed test split (a PCam folder with "
                        "camelyonpatch_level_2_split_test_x.h5); use val, train or all")
    if fixed_pcam and split == "all":
        raise DataError(f"{data[0]} holds fixed PCam splits: choose --split test, val or train")
    if split in ("val", "train") and not fixed_pcam:
        groups = lm.extra.get("val_groups")
        if groups is None:
            raise DataError(f"{Path(checkpoint).name} does not record its validation groups; "
                            "use split 'all'")
        keep = set(map(str, groups))
    n_cls = lm.num_classes
    kind = cfg.get("loss") or "auto"
    if kind == "auto":
        kind = "ce+dice" if lm.task == "segment" else "ce"
    loss_fn = SegClsLoss(kind, n_cls).to(lm.device)
    pre = dict(lm.preprocessing)
    yield Message(f"evaluating {Path(checkpoint).name} ({lm.task}, {n_cls} classes) at scale {scale:.3g}")

    def wanted(group: str) -> bool:
        if keep is None:
            return True
        return (group in keep) == (split == "val")

    if lm.task == "segment":
        records = []
        for src in data:
            records += [r for r in find_segmentation_pairs(src, group_by) if wanted(r.group)]
        if not records:
            raise DataError(f"no {split} items in {list(map(str, data))}")
        samples = load_pairs(records, scale)
        if pre.get("stain"):
            from napari_histo.engine.stain import normalize_image

            for s in samples:
                s.image = normalize_image(s.image, pre["stain"])
        mx = max(int(s.labels[s.labels != 255].max(initial=0)) for s in samples)
        if mx >= n_cls:
            raise DataError(f"labels go up to {mx} but the model has {n_cls} classes")
        tile = max(512, int(pre.get("patch_size") or 256))
        acc, _ = yield from validate_segmentation(model, samples, pre, lm.device, loss_fn.cpu(),
                                                  n_cls, tile, keep_first=False)
        n_items = len(samples)
        item_groups = [str(s.group) for s in samples]
        n_pos = sum(int(((s.labels > 0) & (s.labels != 255)).any()) for s in samples)
        unit = "images with foreground"
    else:
        pcam = (find_pcam(data[0], split if fixed_pcam else None)
                if pcam_splits is not None else None)
        ds: Any
        if pcam is not None:
            ds = PCamDataset(pcam[0], pcam[1], int(pre["patch_size"]))
        else:
            recs = []
            for src in data:
                recs += [r for r in find_classification_items(src, group_by) if wanted(r.group)]
            unknown = sorted({r.label for r in recs} - set(lm.class_names))
            if unknown:
                raise DataError(f"labels {unknown} are not classes of this model {lm.class_names}")
            if not recs:
                raise DataError(f"no {split} items in {list(map(str, data))}")
            ds = PatchDataset.from_records(recs, lm.class_names, int(pre["patch_size"]), scale)
            if pre.get("stain"):
                from napari_histo.engine.stain import normalize_image

                ds.images = [normalize_image(im, pre["stain"]) for im in ds.images]
        maker = BatchMaker(ds, pre, None, int(pre["patch_size"]))
        acc, _ = yield from validate_classification(model, ds, maker, batch_size, lm.device,
                                                    loss_fn, n_cls)
        n_items = len(ds)
        item_groups = [str(g) for g in ds.groups]
        n_pos = int((np.asarray(ds.labels) > 0).sum())
        unit = "positive patches"
    res: dict[str, Any] = {k[4:]: v for k, v in acc.result("val").items()}
    # 95 % intervals: bootstrap over images/patches, resampling whole groups (slides)
    res.update({k[4:]: v for k, v in metric_cis(acc, item_groups, "val").items()})
    res["groups"] = len(set(item_groups))
    res["warnings"] = validation_warnings(n_pos, item_groups, unit=unit, folds_hint=False)
    for text in res["warnings"]:
        yield Message(text, level="warning")
    res["confusion"] = acc.cm.tolist()
    res["class_names"] = list(lm.class_names)
    res["items"] = n_items
    res["split"] = split
    if out_dir is not None:
        import json

        from napari_histo.engine.training import reports

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(reports._clean(res), indent=1))
        fpr, tpr = acc.roc()
        reports.plot_roc(out / "roc.png", fpr, tpr, float(res.get("auc", np.nan)), "ROC",
                         res.get("auc_ci"))
        reports.plot_confusion(out / "confusion.png", acc.cm, lm.class_names, "Confusion")
    return res
