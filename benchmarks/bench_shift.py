"""Stain-shift proxy benchmark: a checkpoint's metric on plain vs re-stained validation data.

A model that scores AUC 1.0 on its own centre can fall apart on another scanner and stain.
Without labelled data from other centres, this re-stains the run's validation images with
the Macenko stain vectors of every other H&E source in the shared data (the TCGA and CMU
slides, the Kather CRC tiles, the Gleason prostate tiles, GlaS or CAMELYON16, and each
``stain_tiles`` image), evaluates the checkpoint on each re-stained copy with the run's own
preprocessing (``evaluate_checkpoint(split="val")``, so a stored stain normalisation is
applied as at inference) and reports the metric per target stain, the mean, spread and worst
case, and their ratios to the plain figure. Targets marked ``unseen`` were not used to fit
the RandStainNA prior of ``engine.transforms.STAIN_PRIOR``.

Re-staining uses one dataset-level source stain (Macenko fitted on a mosaic of the dataset's
images), so relative stain amounts between images are kept (``engine.stain.restain``).

    python benchmarks/bench_shift.py RUN_DIR_OR_CKPT --data /work/shared/data/camelyon16_patches
    python benchmarks/bench_shift.py RUN --data .../glas_gland_segmentation --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.progress import run_task
from napari_histo.engine.stain import fit_stain, restain
from napari_histo.engine.training.evaluate import evaluate_checkpoint

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_DIRS = {"labels", "label", "mask", "masks", "annotations", "annotation"}
UNSEEN = {"tcga_slide", "cmu_slide", "gleason"}  # not in STAIN_PRIOR


def _read(path: Path) -> np.ndarray:
    from skimage.io import imread

    return np.ascontiguousarray(np.asarray(imread(str(path)))[..., :3]).astype(np.uint8)


def _mosaic(images: list[np.ndarray], side: int = 256) -> np.ndarray:
    """Centre crops of up to 16 images side by side (a cheap dataset-level stain sample)."""
    crops = []
    for im in images[:16]:
        h, w = im.shape[:2]
        s = min(side, h, w)
        y, x = (h - s) // 2, (w - s) // 2
        crop = im[y:y + s, x:x + s]
        if s < side:
            crop = np.pad(crop, ((0, side - s), (0, side - s), (0, 0)), constant_values=255)
        crops.append(crop)
    return np.concatenate(crops, axis=1)


def _slide_region(path: Path) -> np.ndarray:
    """A low-resolution whole-slide image (<= ~2000 px side) of a shared SVS slide."""
    from napari_histo.io.slide import open_slide

    with open_slide(path) as slide:
        level = slide.level_count - 1
        dy, dx = slide.level_downsample_yx(level)
        h, w = int(slide.shape[0] / dy), int(slide.shape[1] / dx)
        step = max(1, max(h, w) // 2000)
        return np.ascontiguousarray(slide.read_region((0, 0), level, (h, w))[::step, ::step, :3])


def dataset_images(root: Path) -> list[Path]:
    """Image files of a dataset folder, leaving out masks/label folders."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXT and not (set(p.relative_to(root).parts[:-1])
                                                                   & MASK_DIRS):
            out.append(p)
    return out


def target_stains(data: Path, exclude: Path) -> dict[str, dict[str, Any]]:
    """Macenko parameters of every other H&E source in the shared data folder."""
    src: dict[str, np.ndarray] = {}
    wsi = data / "wsi"
    for name, f in (("tcga_slide", "tcga-cr-7395-01a-01-ts1.svs"), ("cmu_slide", "CMU-1-Small-Region.svs")):
        if (wsi / f).exists():
            src[name] = _slide_region(wsi / f)
    groups = {"kather": "kather_crc_2016_samples", "gleason": "gleason_prostate_tiles/img",
              "glas": "glas_gland_segmentation/images", "camelyon16": "camelyon16_patches"}
    for name, sub in groups.items():
        d = data / sub
        if d.exists() and exclude.resolve() not in (d.resolve(), *d.resolve().parents):
            files = dataset_images(d)
            src[name] = _mosaic([_read(p) for p in files[:: max(1, len(files) // 16)]])
    for p in sorted((data / "stain_tiles").rglob("*.png")):
        src[f"{p.parent.name}/{p.stem}"] = _read(p)
    out = {}
    for name, img in src.items():
        try:
            out[name] = fit_stain(img, "macenko")
        except Exception as err:  # a source without tissue is skipped, not fatal
            print(f"skip {name}: {err}")
    return out


def restained_copy(root: Path, dst: Path, source: dict[str, Any], target: dict[str, Any]) -> None:
    """Mirror ``root`` into ``dst``: images re-stained, everything else copied."""
    from skimage.io import imsave

    images = set(dataset_images(root))
    for p in sorted(root.rglob("*")):
        q = dst / p.relative_to(root)
        if p.is_dir():
            q.mkdir(parents=True, exist_ok=True)
            continue
        q.parent.mkdir(parents=True, exist_ok=True)
        if p in images:
            img = restain(_read(p), source, target)
            imsave(str(q), img, check_contrast=False)
        else:
            shutil.copyfile(p, q)  # a copy: a linked labels.csv could resolve to the original


def evaluate(ckpt: Path, data: Path, tta: bool) -> dict[str, Any]:
    return run_task(evaluate_checkpoint(ckpt, [data], split="val", tta=tta, device="cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run folder (uses best.pt) or checkpoint .pt")
    ap.add_argument("--data", required=True, help="GlaS or camelyon16_patches folder")
    ap.add_argument("--shared", default=str(DATA), help="shared data folder with the stain sources")
    ap.add_argument("--metric", help="metric to report (default: auc for classify, dice for segment)")
    ap.add_argument("--tta", action="store_true", help="evaluate with test-time augmentation")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    run = Path(args.run)
    ckpt = run / "best.pt" if run.is_dir() else run
    data = Path(args.data)
    t0 = time.perf_counter()
    plain = evaluate(ckpt, data, args.tta)
    metric = args.metric or ("auc" if "auc" in plain and plain["auc"] == plain["auc"] else "dice")
    base = float(plain[metric])
    files = dataset_images(data)
    source = fit_stain(_mosaic([_read(p) for p in files[:: max(1, len(files) // 16)]]), "macenko")
    targets = target_stains(Path(args.shared), data)
    extra = "accuracy" if metric != "accuracy" and "accuracy" in plain else None
    per: dict[str, float] = {}
    per_extra: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_shift_") as tmp:
        for name, tgt in targets.items():
            dst = Path(tmp) / name.replace("/", "_")
            restained_copy(data, dst, source, tgt)
            r = evaluate(ckpt, dst, args.tta)
            shutil.rmtree(dst)
            per[name] = float(r[metric])
            line = f"  {name:<46} {metric}={per[name]:.4f}  ratio={per[name] / base:.3f}"
            if extra:
                per_extra[name] = float(r[extra])
                line += f"  {extra}={per_extra[name]:.4f}"
            print(line + (" (unseen)" if name in UNSEEN else ""), flush=True)
    vals = np.array(list(per.values()))
    unseen = np.array([v for k, v in per.items() if k in UNSEEN])
    res = {"checkpoint": str(ckpt), "data": str(data), "metric": metric, "tta": args.tta,
           "plain": base, "restained_mean": float(vals.mean()), "restained_std": float(vals.std()),
           "restained_min": float(vals.min()), "unseen_mean": float(unseen.mean()) if unseen.size else None,
           "ratio_mean": float(vals.mean() / base), "ratio_min": float(vals.min() / base),
           "targets": per, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{ckpt}: {metric} plain {base:.4f} | re-stained mean {vals.mean():.4f} +- {vals.std():.4f} "
          f"(min {vals.min():.4f}, unseen-by-prior mean {res['unseen_mean'] or float('nan'):.4f}) | ratio mean "
          f"{res['ratio_mean']:.3f}, worst {res['ratio_min']:.3f} over {len(per)} stains")
    if extra:
        ev = np.array(list(per_extra.values()))
        res.update({f"{extra}_plain": float(plain[extra]), f"{extra}_restained_mean": float(ev.mean()),
                    f"{extra}_restained_std": float(ev.std()), f"{extra}_targets": per_extra})
        print(f"  {extra}: plain {plain[extra]:.4f} | re-stained mean {ev.mean():.4f} +- {ev.std():.4f} "
              f"(min {ev.min():.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
