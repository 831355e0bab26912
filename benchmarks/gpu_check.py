"""GPU proofs (issue 14): CUDA training with AMP + channels_last, CUDA inference, and figures.

Usage::

    .venv/bin/python benchmarks/gpu_check.py [--workdir /tmp/gpu_check] [--side 100000]
    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke      # same code paths, tiny, on CPU

Checks, one line each (``OK``/``FAIL``), then a summary line; exit 0 when all pass, 1 when a
check failed, 2 (one line) when there is no CUDA device:

1. train: ``engine.training.train`` with ``amp`` and ``channels_last`` for a few epochs of
   real steps on generated H&E (``io.synthetic.synthetic_he``): losses finite and the last
   below the first. Figure: training samples/s over a model-only step loop (same model,
   batch, AMP, channels_last, optimizer; data already on the GPU).
2. infer: ``predict_slide`` on a CAMELYON-size slide (``--side`` = 100k x 100k level-0 px at
   0.25 um/px, predicted at 1 um/px, tissue only, streamed to OME-Zarr). The slide is
   *virtual*: a pyramid of dask arrays whose chunks are cut on demand from a small texture
   library (real tissue tiles from ../shared/data when present, else generated H&E) laid
   out as ~40 % tissue islands on white glass. Writing it as a file would take ~30 GB
   uncompressed (or minutes of JPEG encoding): this measures the pipeline and the GPU, not
   a disk. Figures: seconds for the slide, end-to-end tiles/s over model-only tiles/s.

Each check runs under its own time budget (``--budget-s``), so a hung step is a FAIL line
rather than a stuck machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))
FIG: dict[str, Any] = {}


class Budget:
    """SIGALRM after ``seconds``: a check that hangs fails instead of eating the machine."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(1, int(seconds))

    def __enter__(self) -> None:
        def boom(*_: object) -> None:
            raise TimeoutError(f"over its {self.seconds} s budget")

        signal.signal(signal.SIGALRM, boom)
        signal.alarm(self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.alarm(0)


def say(name: str, text: str) -> None:
    print(f"{name:<28} {text}", flush=True)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------- training


def check_train(dev: str, smoke: bool, workdir: Path) -> None:
    import torch

    from napari_histo.core.progress import EpochEnd, run_task
    from napari_histo.engine.datasets.segmentation import ArraySample
    from napari_histo.engine.models import build_model
    from napari_histo.engine.training.config import TrainConfig
    from napari_histo.engine.training.loop import train
    from napari_histo.io.synthetic import synthetic_he

    model, patch, batch = ("unet-tiny", 64, 4) if smoke else ("unet-small", 256, 32)
    steps, epochs = (3, 3) if smoke else (40, 4)
    side = 256 if smoke else 1024
    arrays = []
    for i in range(6):
        img, mask = synthetic_he((side, side), seed=i)
        arrays.append(ArraySample(img, mask.astype(np.int64), group=f"g{i % 3}", name=f"a{i}"))
    cfg = TrainConfig(task="segment", model=model, out_dir=str(workdir / "train"), epochs=epochs,
                      batch_size=batch, patch_size=patch, num_classes=2, device=dev,
                      amp=True, channels_last=True, steps_per_epoch=steps, augment=False,
                      early_stopping_patience=None, seed=0)
    stamps: list[float] = []
    losses: list[float] = []

    def on(ev: Any) -> None:
        if isinstance(ev, EpochEnd):
            stamps.append(time.perf_counter())
            losses.append(float(ev.metrics.get("train_loss", math.nan)))

    t0 = time.perf_counter()
    run_task(train(cfg, arrays=arrays), on)
    ok = all(math.isfinite(v) for v in losses) and len(losses) >= 2 and losses[-1] < losses[0]
    FIG["train_losses"] = losses
    say("train amp+channels_last", f"{'OK' if ok else 'FAIL'}: {len(losses)} epochs x {steps} "
        f"steps, loss {losses[0]:.4f} -> {losses[-1]:.4f} on {dev}")
    if not ok:
        raise AssertionError(f"training losses not finite and decreasing: {losses}")
    # epochs after the first (warm-up, cudnn autotune): samples per second, validation included
    per_epoch = np.diff([t0, *stamps])[1:]
    loop_sps = steps * batch / float(np.median(per_epoch))
    # model-only: the same step (AMP, channels_last, AdamW, grad scaling) on resident tensors
    device = torch.device(dev)
    net = build_model({"name": model, "in_channels": 3, "num_classes": 2}).to(device)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    x = torch.randn(batch, 3, patch, patch, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch, patch, patch), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda"
                            else torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    model_sps = steps * batch / (time.perf_counter() - t)
    FIG.update(train_samples_per_s=loop_sps, train_model_only_samples_per_s=model_sps,
               train_ratio=loop_sps / model_sps)
    say("train / model-only steps", f"{loop_sps / model_sps:.2f} ({loop_sps:.1f} vs "
        f"{model_sps:.1f} samples/s, batch {batch} x {patch} px, {model})")


# ------------------------------------------------------------------------- inference


def texture_library(ts: int = 512) -> list[np.ndarray]:
    """Real tissue tiles from ../shared/data when present, else generated H&E."""
    from napari_histo.io.synthetic import synthetic_he

    lib: list[np.ndarray] = []
    files = sorted((SHARED / "glas_gland_segmentation" / "images").glob("*.png"))[:8]
    if files:
        from PIL import Image

        for f in files:
            img = np.asarray(Image.open(f).convert("RGB"))
            if img.shape[0] >= ts and img.shape[1] >= ts:
                lib.append(np.ascontiguousarray(img[:ts, :ts]))
    if not lib:
        for seed in range(4):
            img, _ = synthetic_he((ts * 2, ts * 2), seed=seed)
            lib.append(np.ascontiguousarray(img[ts // 2 : ts // 2 + ts, ts // 2 : ts // 2 + ts]))
    return lib


class VirtualSlide:
    """A SlideLike pyramid computed on demand: texture tiles on a ~40 % tissue layout.

    Level k (downsample 2**k) pixel (y, x) lies in level-0 cell ((y << k) // cell, ...);
    tissue cells show library texture (the same texture at every level: the pyramid is a
    stand-in for a scanner's, not its exact mean), glass cells are white.
    """

    def __init__(self, side: int, mpp: float = 0.25, cell: int = 4096, seed: int = 0) -> None:
        import dask.array as da

        from napari_histo.io.slide import SlideMetadata

        self.name = f"virtual_{side}"
        self.path = None
        self.shape = (side, side)
        self.lib = np.stack(texture_library())
        self.ts = self.lib.shape[1]
        self.cell = cell
        g = -(-side // cell)
        rng = np.random.default_rng(seed)
        from scipy.ndimage import zoom

        coarse = rng.random((max(2, g // 4 + 2),) * 2)
        field = zoom(coarse, g / (coarse.shape[0] - 1), order=1)[:g, :g]
        tissue = field > np.quantile(field, 0.6)
        self.layout = np.where(tissue, rng.integers(1, len(self.lib) + 1, size=(g, g)), 0)
        levels, shapes, downs = [], [], []
        k = 0
        while True:
            h = -(-side // 2**k)
            shapes.append((h, h))
            downs.append(float(2**k))
            levels.append(da.map_blocks(self._chunk, k, dtype=np.uint8,
                                        chunks=(da.core.normalize_chunks(512, (h,))[0],) * 2
                                        + ((3,),), meta=np.empty((0, 0, 0), np.uint8)))
            if h <= 2048:
                break
            k += 1
        self.levels = levels
        self.metadata = SlideMetadata(
            format="virtual", vendor=None, mpp=(mpp, mpp), objective_power=None,
            level_shapes=tuple(shapes), level_downsamples=tuple(downs),
            level_downsamples_yx=tuple((d, d) for d in downs),
            level_native=(True,) * len(shapes), tile_shapes=((512, 512),) * len(shapes))

    def _chunk(self, k: int, block_info: Any = None) -> np.ndarray:
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        ys, xs = np.arange(y0, y1), np.arange(x0, x1)
        idx = self.layout[np.minimum((ys << k) // self.cell, len(self.layout) - 1)[:, None],
                          np.minimum((xs << k) // self.cell, len(self.layout) - 1)[None, :]]
        tex = self.lib[np.maximum(idx - 1, 0), (ys % self.ts)[:, None], (xs % self.ts)[None, :]]
        return np.where((idx > 0)[..., None], tex, np.uint8(242)).astype(np.uint8)

    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> np.ndarray:
        y, x = location
        d = 2**level
        h, w = size
        return np.asarray(self.levels[level][y // d : y // d + h, x // d : x // d + w])


def check_infer(dev: str, smoke: bool, workdir: Path, side: int) -> None:
    import shutil

    import torch

    from napari_histo.core.progress import run_task
    from napari_histo.engine.checkpoints import LoadedModel, default_preprocessing
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.engine.inference._model import Runner
    from napari_histo.engine.models import build_model

    torch.manual_seed(0)
    device = torch.device(dev)
    model = "unet-tiny" if smoke else "unet-small"
    spec = {"name": model, "in_channels": 3, "num_classes": 2}
    lm = LoadedModel(build_model(spec).to(device).eval(), device, "segment", ["bg", "tumor"],
                     spec, default_preprocessing(mpp=1.0, patch_size=256))
    batch = 4 if smoke else 64
    cfg = InferenceConfig(tile=256, overlap=32, batch_size=batch, device=dev, readers=8,
                          amp=device.type == "cuda", block_tiles=2 if smoke else 8)
    slide = VirtualSlide(side, cell=min(4096, max(256, side // 8)))
    out = workdir / "virtual.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    runner = Runner(lm, batch, pad_batches=True, amp=cfg.amp)
    runner(np.zeros((batch, 256, 256, 3), np.uint8))  # warm-up off the clock
    t0 = time.perf_counter()
    res = run_task(predict_slide(slide, lm, cfg, out_path=out))
    wall = time.perf_counter() - t0
    n = res.stats.computed_tiles if res.stats is not None else 0
    ok = bool(res.complete) and n > 0
    say("infer CAMELYON-size slide", f"{'OK' if ok else 'FAIL'}: {side} x {side} px at 0.25 "
        f"um/px -> 1 um/px, {n} tissue tiles of {res.total_tiles}, {wall:.1f} s on {dev}")
    if not ok:
        raise AssertionError("prediction incomplete")
    tiles = np.stack([slide.lib[i % len(slide.lib)][:256, :256] for i in range(batch)])
    reps = max(1, min(n, 4000) // batch)
    runner(tiles)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        runner(tiles)
    sync(device)
    model_tps = reps * batch / (time.perf_counter() - t)
    e2e_tps = n / wall
    FIG.update(infer_slide_s=wall, infer_tiles=n, infer_total_tiles=res.total_tiles,
               infer_tiles_per_s=e2e_tps, infer_model_only_tiles_per_s=model_tps,
               infer_ratio=e2e_tps / model_tps)
    say("infer / model-only", f"{e2e_tps / model_tps:.2f} ({e2e_tps:.0f} vs {model_tps:.0f} "
        f"tiles/s, batch {batch}, amp {cfg.amp}, {model})")
    shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny run of the same paths on CPU")
    ap.add_argument("--side", type=int, help="virtual slide side, level-0 px (default 100000; "
                                             "4096 with --cpu-smoke)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gpu_check"))
    ap.add_argument("--budget-s", type=float, default=200, help="seconds per check")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda}); nothing measured", file=sys.stderr)
        return 2
    dev = "cpu" if smoke else "cuda"
    side = args.side or (4096 if smoke else 100_000)
    args.workdir.mkdir(parents=True, exist_ok=True)
    name = "cpu (smoke)" if smoke else torch.cuda.get_device_name(0)
    say("device", f"{name}, torch {torch.__version__}")
    failed = []
    for label, fn in (("train", lambda: check_train(dev, smoke, args.workdir)),
                      ("infer", lambda: check_infer(dev, smoke, args.workdir, side))):
        t = time.perf_counter()
        try:
            with Budget(args.budget_s):
                fn()
        except Exception as err:  # one FAIL line per check; the traceback goes to stderr
            traceback.print_exc(file=sys.stderr)
            say(label, f"FAIL: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            failed.append(label)
        FIG[f"{label}_check_s"] = time.perf_counter() - t
    if args.json:
        args.json.write_text(json.dumps(FIG, indent=1))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in FIG.items()}))
    say("summary", "all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
