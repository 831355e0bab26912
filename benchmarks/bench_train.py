"""Throughput of the full training loop vs a model-only step loop (same device, batch, model).

The full loop is ``engine.training.train`` on GlaS (in-memory crops, batch augmentation in a
prefetch thread, metrics, events); the peer is a bare loop of forward + loss + backward +
clip + step on one pre-made batch. Blocks are interleaved (A B A B ...) so drift in a shared
CPU's load hits both alike. Prints samples/s for each and their ratio (target >= 0.95).

    python benchmarks/bench_train.py --data ../shared/data/glas_gland_segmentation
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch


def full_loop(cfg_kw: dict, steps: int, warmup: int) -> float:
    """Samples/s of train() between batch ``warmup`` and ``steps`` (no validation)."""
    from napari_histo.core.progress import Progress
    from napari_histo.engine.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out_dir=str(Path(tmp) / "run"), epochs=1, steps_per_epoch=steps,
                          val_fraction=0.0, preview=False, **cfg_kw)
        t_start = None
        gen = train(cfg)
        try:
            for ev in gen:
                if isinstance(ev, Progress) and ev.desc == "train":
                    if ev.done == warmup:
                        t_start = time.perf_counter()
                    if ev.done == steps:
                        dt = time.perf_counter() - t_start
                        break
        finally:
            gen.close()
    return (steps - warmup) * cfg.batch_size / dt


def model_only(cfg_kw: dict, steps: int, warmup: int) -> float:
    """Samples/s of forward/loss/backward/clip/step on one fixed batch."""
    from napari_histo.engine.models import build_model, make_spec
    from napari_histo.engine.training.losses import SegClsLoss

    b, p = cfg_kw["batch_size"], cfg_kw["patch_size"]
    model = build_model(make_spec(cfg_kw["model"], num_classes=2))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = SegClsLoss("ce+dice", 2)
    x = torch.randn(b, 3, p, p)
    y = torch.randint(0, 2, (b, p, p))
    for i in range(steps):
        if i == warmup:
            t = time.perf_counter()
        loss = loss_fn(model(x), y)
        float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return (steps - warmup) * b / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                          / "glas_gland_segmentation"))
    ap.add_argument("--model", default="unet-small")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg_kw = dict(task="segment", data=(args.data,), model=args.model, batch_size=args.batch_size,
                  patch_size=args.patch_size, mpp=2.48, data_mpp=0.62, threads=args.threads,
                  device="cpu")
    full, bare = [], []
    for r in range(args.repeats):
        bare.append(model_only(cfg_kw, args.steps, args.warmup))
        full.append(full_loop(cfg_kw, args.steps, args.warmup))
        print(f"repeat {r + 1}: model-only {bare[-1]:.2f} samples/s, full loop {full[-1]:.2f} "
              f"samples/s, ratio {full[-1] / bare[-1]:.3f}", flush=True)
    ratios = [f / b for f, b in zip(full, bare, strict=False)]
    print(f"device cpu ({torch.get_num_threads()} threads), {args.model}, batch {args.batch_size}"
          f" x {args.patch_size}px")
    print(f"model-only median {statistics.median(bare):.2f} samples/s; full loop median "
          f"{statistics.median(full):.2f} samples/s")
    print(f"RATIO full/model-only: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target >= 0.95 "
          f"{'MET' if statistics.median(ratios) >= 0.95 else 'MISSED'}")
    assert all(math.isfinite(v) for v in ratios)


if __name__ == "__main__":
    main()
