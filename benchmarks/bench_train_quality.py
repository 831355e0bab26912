"""Quality benchmark: train with the CLI on the shared data, then re-score with ``evaluate``.

GlaS: U-Net, validation by patient (Grade.csv ``patient ID``), 4x downscaled (2.48 um/px),
20-minute limit; target validation pixel Dice >= 0.85. CAMELYON16 patches: small CNN,
validation slide tumor_064 (the only slide holding both classes; the other two train),
Macenko-normalised to TIAToolbox's target tile; target ROC AUC >= 0.95. Prints both metrics,
the targets, and whether ``evaluate --split val`` reproduces them from the checkpoint.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_quality.py --out /tmp/nh_runs [--only glas]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from napari_histo.cli import main as cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def glas_args(out: Path, minutes: float) -> list[str]:
    return ["train", "--task", "segment", "--data", str(DATA / "glas_gland_segmentation"),
            "--out", str(out), "--model", "unet-small", "--mpp", "2.48", "--data-mpp", "0.62",
            "--patch-size", "128", "--batch-size", "16", "--lr", "3e-3", "--epochs", "300",
            "--patience", "60", "--time-limit", str(minutes), "--group-by", "patient ID",
            "--threads", "1", "--quiet"]


def camelyon_args(out: Path, minutes: float) -> list[str]:
    return ["train", "--task", "classify", "--data", str(DATA / "camelyon16_patches"),
            "--out", str(out), "--model", "cnn-small", "--mpp", "0.486", "--data-mpp", "0.243",
            "--patch-size", "112", "--batch-size", "16", "--steps-per-epoch", "4",
            "--epochs", "60", "--lr", "2e-3", "--patience", "25", "--time-limit", str(minutes),
            "--group-by", "source_slide", "--val-groups", "tumor_064", "--stain-norm", "macenko",
            "--stain-reference", str(DATA / "stain_tiles" / "tiatoolbox" / "target_image.png"),
            "--threads", "1", "--quiet"]


def evaluate(ckpt: Path, data: Path) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(["evaluate", "--model", str(ckpt), "--data", str(data), "--split", "val",
                  "--json", "--device", "cpu"])
    assert rc == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="/tmp/nh_runs")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--only", choices=("glas", "camelyon"))
    args = ap.parse_args()
    out = Path(args.out)
    jobs = [("glas", glas_args, "glas_gland_segmentation", "dice", 0.85),
            ("camelyon", camelyon_args, "camelyon16_patches", "auc", 0.95)]
    for name, make, data, metric, target in jobs:
        if args.only and args.only != name:
            continue
        run = out / f"bench_{name}"
        assert cli(make(run, args.minutes)) == 0
        hist = json.loads((run / "metrics.json").read_text())
        best = [h for h in hist if h.get("is_best")][-1]
        ev = evaluate(run / "best.pt", DATA / data)
        print(f"{name}: best epoch {best['epoch']}/{len(hist)}, val {metric} "
              f"{best['val_' + metric]:.4f} (target >= {target}: "
              f"{'MET' if best['val_' + metric] >= target else 'MISSED'}); evaluate --split val "
              f"{metric} {ev[metric]:.4f}, {ev['items']} items; {best['elapsed_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
