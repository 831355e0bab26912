"""Best-checkpoint selection on a small validation set: raw metric vs smoothed vs weight EMA.

Every rule is scored on held-out TEST groups that neither training nor selection saw:

* GlaS (segmentation): images downscaled ``--glas-scale``x, patients split train / val
  (``val_fraction``, by seed) / test (fixed patients), test Dice.
* CAMELYON16 patches (classification): train on tumor_001 + tumor_004; the 26 patches of
  tumor_064 are split in two interleaved halves by x (2 tumour patches each): one validates,
  the other tests (same slide: optimistic, but no training leak), test AUC and accuracy.

One training run per (dataset, seed) with ``selection="ema"`` (so ``last.pt`` holds both the
raw weights and their EMA); after every epoch the raw and the EMA weights are scored on
validation and test, then every rule is applied to the same per-epoch table:

raw (best val metric), smoothed (best EMA-over-epochs of the val metric), val_loss (lowest
val loss), ema (EMA weights, best val metric), ema_last, last (raw weights, last epoch).

    python benchmarks/bench_selection.py --dataset glas --seeds 0 1 2 --time-limit 3
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_histo.core.progress import EpochEnd, run_task
from napari_histo.engine.checkpoints import load_checkpoint
from napari_histo.engine.datasets import (
    PatchDataset,
    find_classification_items,
    find_segmentation_pairs,
    load_pairs,
)
from napari_histo.engine.training import TrainConfig, train
from napari_histo.engine.training.losses import SegClsLoss
from napari_histo.engine.training.pipeline import BatchMaker
from napari_histo.engine.training.validate import validate_classification, validate_segmentation

DATA = Path(os.environ.get("HISTO_DATA", "/work/shared/data"))
GLAS_TEST_PATIENTS = 4  # patients (of the GlaS train+test pool) kept for testing


def _glas(tmp: Path, scale: int) -> tuple[Path, Path]:
    from PIL import Image

    src = DATA / "glas_gland_segmentation"
    rows = list(csv.DictReader(open(src / "Grade.csv", newline="")))
    pids = sorted({r["patient ID"].strip() for r in rows}, key=lambda p: int(p) if p.isdigit() else 0)
    rng = np.random.default_rng(1234)
    test = set(rng.choice(pids, GLAS_TEST_PATIENTS, replace=False).tolist())
    out = {}
    for split in ("trainval", "test"):
        d = tmp / f"glas_{split}"
        (d / "images").mkdir(parents=True)
        (d / "labels").mkdir()
        keep = [r for r in rows if (r["patient ID"].strip() in test) == (split == "test")
                and (src / "images" / f"{r['name']}.png").is_file()]
        for r in keep:
            img = Image.open(src / "images" / f"{r['name']}.png").convert("RGB")
            lab = Image.open(src / "labels" / f"{r['name']}.png")
            size = (img.width // scale, img.height // scale)
            img.resize(size, Image.Resampling.BOX).save(d / "images" / f"{r['name']}.png")
            lab.resize(size, Image.Resampling.NEAREST).save(d / "labels" / f"{r['name']}.png")
        with open(d / "Grade.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)
        out[split] = d
    return out["trainval"], out["test"]


def _camelyon(tmp: Path) -> tuple[Path, Path]:
    src = DATA / "camelyon16_patches"
    rows = list(csv.DictReader(open(src / "labels.csv", newline="")))
    t64 = sorted([r for r in rows if r["source_slide"] == "tumor_064"], key=lambda r: int(r["x_level0"]))
    half = {}
    for lab in ("normal", "tumor"):  # interleave by x inside each class: 2 + 2 tumour patches
        for i, r in enumerate(r for r in t64 if r["label"] == lab):
            half[r["path"]] = "tumor_064a" if i % 2 == 0 else "tumor_064b"
    out = {}
    for split in ("trainval", "test"):
        d = tmp / f"cam_{split}"
        d.mkdir()
        for sub in ("normal", "tumor"):
            (d / sub).symlink_to(src / sub)
        keep = []
        for r in rows:
            g = half.get(r["path"], r["source_slide"])
            if (g == "tumor_064b") == (split == "test"):
                keep.append({**r, "source_slide": g})
        with open(d / "labels.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)
        out[split] = d
    return out["trainval"], out["test"]


def _score(model: torch.nn.Module, task: str, ds: Any, pre: dict[str, Any], n_cls: int) -> dict[str, float]:
    dev = torch.device("cpu")
    loss = SegClsLoss("ce+dice" if task == "segment" else "ce", n_cls)
    if task == "segment":
        acc, _ = run_task(validate_segmentation(model, ds, pre, dev, loss, n_cls, 512, keep_first=False))
    else:
        maker = BatchMaker(ds, pre, None, int(pre["patch_size"]))
        acc, _ = run_task(validate_classification(model, ds, maker, 16, dev, loss, n_cls))
    r = acc.result("x")
    return {"dice": r["x_dice"], "auc": r["x_auc"], "accuracy": r["x_accuracy"], "loss": r["x_loss"]}


def run_one(dataset: str, seed: int, minutes: float, tmp: Path, trainval: Path, test: Path) -> list[dict[str, Any]]:
    if dataset == "glas":
        cfg = TrainConfig(task="segment", data=(str(trainval),), out_dir=str(tmp / f"run_{dataset}_{seed}"),
                          model="unet-tiny", patch_size=96, batch_size=8, epochs=200,
                          steps_per_epoch=8, group_by="patient ID", val_fraction=0.15, seed=seed,
                          time_limit_min=minutes, threads=1, selection="ema",
                          early_stopping_patience=None, preview=False)
        recs = find_segmentation_pairs(trainval, "patient ID")
    else:
        cfg = TrainConfig(task="classify", data=(str(trainval),), out_dir=str(tmp / f"run_{dataset}_{seed}"),
                          model="cnn-small", model_kwargs={"base": 8}, mpp=0.96, data_mpp=0.243,
                          patch_size=56, batch_size=8, epochs=200, steps_per_epoch=4,
                          group_by="source_slide", val_groups=("tumor_064a",), seed=seed,
                          time_limit_min=minutes, threads=1, selection="ema",
                          early_stopping_patience=None, preview=False)
    table: list[dict[str, Any]] = []
    sets: dict[str, Any] = {}

    def on_event(ev: Any) -> None:
        if not isinstance(ev, EpochEnd):
            return
        lm = load_checkpoint(Path(cfg.out_dir) / "last.pt")
        pre, n_cls = dict(lm.preprocessing), lm.num_classes
        if not sets:
            vg = set(map(str, lm.extra["val_groups"]))
            if cfg.task == "segment":
                sets["val"] = load_pairs([r for r in recs if r.group in vg], 1.0)
                sets["test"] = load_pairs(find_segmentation_pairs(test, "patient ID"), 1.0)
            else:
                items = [r for r in find_classification_items(trainval, "source_slide") if r.group in vg]
                sc = cfg.data_mpp / cfg.mpp
                sets["val"] = PatchDataset.from_records(items, lm.class_names, cfg.patch_size, sc)
                sets["test"] = PatchDataset.from_records(find_classification_items(test, "source_slide"),
                                                         lm.class_names, cfg.patch_size, sc)
        from napari_histo.engine.checkpoints import read_checkpoint

        ema_state = read_checkpoint(Path(cfg.out_dir) / "last.pt")["extra"]["ema_state"]
        row: dict[str, Any] = {"epoch": ev.epoch}
        raw = lm.model.eval()
        for split in ("val", "test"):
            for k, v in _score(raw, cfg.task, sets[split], pre, n_cls).items():
                row[f"raw_{split}_{k}"] = v
        raw.load_state_dict(ema_state)
        for split in ("val", "test"):
            for k, v in _score(raw, cfg.task, sets[split], pre, n_cls).items():
                row[f"ema_{split}_{k}"] = v
        table.append(row)

    run_task(train(cfg), on_event)
    return table


def select(table: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Test metric (and chosen epoch) of every rule on one run's per-epoch table."""
    def arg(key: str, sign: float = 1.0, tie: str | None = None) -> int:
        best, bi = (-math.inf, -math.inf), 0
        for i, r in enumerate(table):
            v = r[key]
            t = -r[tie] if tie else 0.0
            s = (sign * v if v == v else -math.inf, t)
            if s > best:
                best, bi = s, i
        return bi

    sm, prev = [], None
    for r in table:
        v = r[f"raw_val_{metric}"]
        prev = v if prev is None or v != v else 0.5 * v + 0.5 * prev
        sm.append(prev)
    for r, s in zip(table, sm, strict=True):
        r["raw_val_smoothed"] = s
    picks = {"raw": ("raw", arg(f"raw_val_{metric}", tie="raw_val_loss")),
             "smoothed": ("raw", arg("raw_val_smoothed", tie="raw_val_loss")),
             "val_loss": ("raw", arg("raw_val_loss", -1.0)),
             "ema": ("ema", arg(f"ema_val_{metric}", tie="ema_val_loss")),
             "ema_last": ("ema", len(table) - 1), "last": ("raw", len(table) - 1)}
    out: dict[str, float] = {}
    for rule, (w, i) in picks.items():
        out[rule] = table[i][f"{w}_test_{metric}"]
        out[f"{rule}_epoch"] = table[i]["epoch"]
        out[f"{rule}_val"] = table[i][f"{w}_val_{metric}"]
    out["oracle"] = max(r[f"raw_test_{metric}"] for r in table)
    out["epochs"] = len(table)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("glas", "camelyon"), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--time-limit", type=float, default=3.0, help="minutes per run")
    ap.add_argument("--glas-scale", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="JSON of all tables and picks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    metric = "dice" if args.dataset == "glas" else "auc"
    results = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        trainval, test = _glas(tmp, args.glas_scale) if args.dataset == "glas" else _camelyon(tmp)
        for seed in args.seeds:
            t0 = time.perf_counter()
            table = run_one(args.dataset, seed, args.time_limit, tmp, trainval, test)
            picks = select(table, metric)
            if args.dataset == "camelyon":
                picks.update({f"{k}_test_accuracy": v for k, v in select(table, "accuracy").items()
                              if k in ("raw", "smoothed", "val_loss", "ema", "ema_last", "last")})
            results.append({"seed": seed, "seconds": time.perf_counter() - t0, "picks": picks,
                            "table": table})
            print(json.dumps({"dataset": args.dataset, "seed": seed, **{k: round(v, 4) if isinstance(v, float)
                                                                          else v for k, v in picks.items()}}),
                  flush=True)
    rules = ("raw", "smoothed", "val_loss", "ema", "ema_last", "last", "oracle")
    mean = {r: float(np.nanmean([x["picks"][r] for x in results])) for r in rules}
    print(json.dumps({"dataset": args.dataset, "metric": f"test_{metric}", "mean_over_seeds": mean}))
    if args.out:
        args.out.write_text(json.dumps({"results": results, "mean": mean}, indent=1, default=float))


if __name__ == "__main__":
    main()
