"""Peer benchmark: napari-histo ``predict_slide`` vs TIAToolbox ``SemanticSegmentor``.

Why: a throughput figure means little without a peer. This runs the *same* whole-slide
segmentation through both engines (same slide, same network object and weights, same
resolution, tile, overlap, batch, device and torch threads) and reports the throughput
ratio, plus how closely the two probability maps agree.

How (from the throwaway venv that holds TIAToolbox; never install it into the project's)::

    /tmp/tiavenv/bin/python benchmarks/bench_infer_peer.py [--slide PATH]
        [--workdir /tmp/bench_infer] [--runs 2] [--threads N] [--tia-workers 0]

- Slide: the 10k x 10k pyramidal JPEG slide of ``bench_infer.py`` (built with its
  ``tile_library``/``make_slide`` if missing), whole, at 0.5 um/px (its level 1, 5000 px).
- Model: ``bench_infer.seg_model`` (unet-tiny, 2 classes, seed 0). TIAToolbox gets it
  wrapped as a ``ModelABC`` whose ``infer_batch`` applies napari-histo's own normalisation
  (``preprocess_batch``) and softmax, so both feed the network the same float tensor.
- Both process every tile (napari-histo ``tissue_only=False``; TIAToolbox
  ``auto_get_mask=False``, no mask), 256 px tiles, 32 px overlap (stride 224), batch 8, CPU,
  writing probabilities to zarr (napari-histo: float16 OME-Zarr + labels; TIAToolbox:
  float32 probabilities + argmax predictions).
- Each engine is warmed up once, then timed ``--runs`` times, alternating, wall clock of the
  whole call (setup, reading, inference, blending, writing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:  # the throwaway venv sees the project's site-packages but not its editable install
    import napari_histo  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "src"))

from bench_infer import make_slide, seg_model, tile_library  # noqa: E402

TILE, OVERLAP, BATCH, MPP = 256, 32, 8, 0.5


def nh_run(slide: Path, lm: Any, out: Path) -> dict[str, Any]:
    """One napari-histo run of the whole slide into an OME-Zarr store."""
    from napari_histo.core.progress import run_task
    from napari_histo.engine.inference import InferenceConfig, predict_slide

    cfg = InferenceConfig(tile=TILE, overlap=OVERLAP, batch_size=BATCH, device="cpu",
                          tissue_only=False, readers=4)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = run_task(predict_slide(slide, lm, cfg, out_path=out))
    return {"s": time.perf_counter() - t0, "tiles": res.stats.computed_tiles}


def nh_warmup(slide: Path, lm: Any) -> None:
    """Imports, first conv and the pipeline itself, on a 4-tile region kept in memory."""
    from napari_histo.core.progress import run_task
    from napari_histo.engine.inference import InferenceConfig, predict_slide

    cfg = InferenceConfig(tile=TILE, overlap=OVERLAP, batch_size=BATCH, device="cpu",
                          tissue_only=False, readers=4)
    run_task(predict_slide(slide, lm, cfg, region=(0, 0, 896, 896)))


def tia_model(lm: Any) -> Any:
    """The napari-histo network as a TIAToolbox ModelABC (same module, same weights)."""
    import torch
    from tiatoolbox.models.models_abc import ModelABC

    from napari_histo.engine.checkpoints import preprocess_batch

    class Wrapped(ModelABC):
        def __init__(self) -> None:
            super().__init__()
            self.net = lm.model
            self.preprocessing = lm.preprocessing

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        @staticmethod
        def infer_batch(model: Any, batch_data: torch.Tensor, *, device: str) -> np.ndarray:
            model.eval()
            with torch.inference_mode():
                x = preprocess_batch(batch_data, model.preprocessing, device)
                probs = torch.softmax(model(x).float(), dim=1)
            return probs.permute(0, 2, 3, 1).cpu().numpy()  # NHWC

        @staticmethod
        def postproc(image: Any) -> Any:
            return image.argmax(axis=-1)

    return Wrapped()


def tia_engine(lm: Any, workers: int) -> tuple[Any, Any]:
    """SemanticSegmentor and IOSegmentorConfig: 0.5 um/px in and out, 256 px, stride 224."""
    from tiatoolbox import logger, rcParam
    from tiatoolbox.models.engine.io_config import IOSegmentorConfig
    from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor

    logger.setLevel(logging.WARNING)  # its per-run INFO lines
    rcParam["torch_compile_mode"] = "disable"  # as napari-histo: eager (CPU: no compile anyway)
    seg = SemanticSegmentor(model=tia_model(lm), batch_size=BATCH, num_workers=workers,
                            device="cpu", verbose=False)
    res = [{"units": "mpp", "resolution": MPP}]
    io = IOSegmentorConfig(input_resolutions=res, output_resolutions=res,
                           patch_input_shape=(TILE, TILE), patch_output_shape=(TILE, TILE),
                           stride_shape=(TILE - OVERLAP, TILE - OVERLAP), save_resolution=res[0])
    return seg, io


def tia_run(seg: Any, io: Any, slide: Path, save_dir: Path) -> dict[str, Any]:
    """One TIAToolbox WSI-mode run of the whole slide (no tissue mask) into zarr."""
    t0 = time.perf_counter()
    out = seg.run([slide], patch_mode=False, ioconfig=io, save_dir=save_dir, overwrite=True,
                  output_type="zarr", auto_get_mask=False, return_probabilities=True)
    s = time.perf_counter() - t0
    return {"s": s, "tiles": len(seg.dataloader.dataset.inputs), "out": str(out[slide])}


def tia_warmup(seg: Any, io: Any) -> None:
    """Imports, dataloader and first conv, on 8 blank patches in patch mode."""
    seg.run(np.full((BATCH, TILE, TILE, 3), 242, np.uint8), patch_mode=True, ioconfig=io,
            output_type="dict", return_probabilities=True)


def agreement(nh_store: Path, tia_store: Path) -> dict[str, Any]:
    """Positive-class probability difference over the area both maps cover."""
    import zarr

    from napari_histo.engine.inference.predict import result_from_store

    p_nh = np.asarray(result_from_store(nh_store).probabilities[:], np.float32)
    if p_nh.ndim == 3:  # (C, H, W) for multi-class; binary is (H, W)
        p_nh = p_nh[1]
    if p_nh.max() > 1.0:  # uint8 stores hold 255 p
        p_nh = p_nh / 255.0
    p_tia = np.asarray(zarr.open(str(tia_store), mode="r")["probabilities"][..., 1], np.float32)
    h, w = min(p_nh.shape[0], p_tia.shape[0]), min(p_nh.shape[1], p_tia.shape[1])
    d = np.abs(p_nh[:h, :w] - p_tia[:h, :w])
    return {"shape_nh": list(p_nh.shape), "shape_tia": list(p_tia.shape), "common": [h, w],
            "mean_abs_diff": float(d.mean()), "p99_abs_diff": float(np.quantile(d, 0.99)),
            "max_abs_diff": float(d.max()),
            "pearson_r": float(np.corrcoef(p_nh[:h, :w].ravel(), p_tia[:h, :w].ravel())[0, 1]),
            "label_agreement": float(((p_nh[:h, :w] > 0.5) == (p_tia[:h, :w] > 0.5)).mean()),
            "mean_p_nh": float(p_nh.mean()), "mean_p_tia": float(p_tia.mean()),
            "std_p_nh": float(p_nh.std()), "std_p_tia": float(p_tia.std())}


def agreement_line(a: dict[str, Any]) -> str:
    """One printed line of :func:`agreement`."""
    return (f"agreement over {a['common'][0]} x {a['common'][1]} px: mean |dp| "
            f"{a['mean_abs_diff']:.4f}, p99 {a['p99_abs_diff']:.4f}, max {a['max_abs_diff']:.4f}, "
            f"r {a['pearson_r']:.4f}, labels equal {a['label_agreement']:.4f}; p spread (std) "
            f"{a['std_p_nh']:.4f} / {a['std_p_tia']:.4f} (tile grids are offset by 16 px and "
            "blends differ: sin^2 window vs plain mean)")


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs, mean and best seconds and tiles/s of one engine."""
    s = [r["s"] for r in runs]
    n = runs[0]["tiles"]
    return {"runs_s": s, "mean_s": float(np.mean(s)), "best_s": min(s), "tiles": n,
            "tiles_per_s": n / float(np.mean(s)), "best_tiles_per_s": n / min(s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", default=None, help="default WORKDIR/tiles_10000.tif")
    ap.add_argument("--workdir", default="/tmp/bench_infer")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tia-workers", type=int, default=0, help="TIAToolbox DataLoader workers")
    args = ap.parse_args()
    import tiatoolbox
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    slide = Path(args.slide) if args.slide else work / "tiles_10000.tif"
    if not slide.exists():
        print(f"building {slide.name} ...", flush=True)
        make_slide(slide, 10000, tile_library())
    print(f"slide {slide} | {MPP} um/px, tile {TILE}, overlap {OVERLAP}, batch {BATCH}, cpu, "
          f"torch {torch.__version__} {torch.get_num_threads()} threads, "
          f"tiatoolbox {tiatoolbox.__version__} ({args.tia_workers} DataLoader workers; "
          "napari-histo 4 reader threads)", flush=True)
    lm = seg_model("cpu")
    seg, io = tia_engine(lm, args.tia_workers)
    nh_out, tia_dir = work / "peer_napari_histo.ome.zarr", work / "peer_tiatoolbox"
    print("warm-up ...", flush=True)
    nh_warmup(slide, lm)
    tia_warmup(seg, io)
    nh_runs: list[dict[str, Any]] = []
    tia_runs: list[dict[str, Any]] = []
    for i in range(args.runs):  # alternate, so load drift on a shared machine hits both
        nh_runs.append(nh_run(slide, lm, nh_out))
        print(f"  run {i + 1} napari-histo: {nh_runs[-1]['s']:.1f} s, "
              f"{nh_runs[-1]['tiles']} tiles", flush=True)
        tia_runs.append(tia_run(seg, io, slide, tia_dir))
        print(f"  run {i + 1} TIAToolbox:   {tia_runs[-1]['s']:.1f} s, "
              f"{tia_runs[-1]['tiles']} tiles", flush=True)
    nh, tia = summary(nh_runs), summary(tia_runs)
    ratio = nh["tiles_per_s"] / tia["tiles_per_s"]
    best_ratio = nh["best_tiles_per_s"] / tia["best_tiles_per_s"]
    for name, r in (("napari-histo", nh), ("TIAToolbox  ", tia)):
        print(f"{name}: {r['mean_s']:.1f} s mean ({r['tiles_per_s']:.2f} tiles/s), best "
              f"{r['best_s']:.1f} s ({r['best_tiles_per_s']:.2f} tiles/s), {r['tiles']} tiles")
    print(f"ratio napari-histo / TIAToolbox tiles/s: {ratio:.2f}x on means "
          f"(= TIAToolbox s / napari-histo s), {best_ratio:.2f}x on best runs")
    try:
        agree: dict[str, Any] = agreement(nh_out, Path(tia_runs[-1]["out"]))
        print(agreement_line(agree))
    except Exception as e:  # layouts may differ between versions: report, don't fail
        agree = {"error": f"{type(e).__name__}: {e}"}
        print(f"agreement not computed: {agree['error']}")
    report = {"slide": str(slide), "mpp": MPP, "tile": TILE, "overlap": OVERLAP,
              "batch": BATCH, "device": "cpu", "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "tiatoolbox": tiatoolbox.__version__, "tia_workers": args.tia_workers,
              "napari_histo": nh, "tiatoolbox_run": tia, "ratio_tiles_per_s": ratio,
              "ratio_best_tiles_per_s": best_ratio, "agreement": agree}
    (work / "bench_infer_peer.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"report: {work / 'bench_infer_peer.json'}")


if __name__ == "__main__":
    main()
