"""Inference benchmarks: pipeline efficiency, memory vs slide size, TIAToolbox peer.

Usage::

    nice .venv/bin/python benchmarks/bench_infer.py [--size 50000] [--small 10000]
        [--workdir /tmp/bench_infer] [--eff-tiles 160] [--device auto]

1. Builds >= 50k x 50k and 10k x 10k pyramidal JPEG slides at 0.25 um/px from real tissue
   tiles of ../shared/data (GlaS + stain tiles; tissue islands on white glass), at run time,
   outside the repository (``io.synthetic.write_slide_from_tiles``).
2. Pipeline efficiency: end-to-end tiles/s of ``predict_slide`` (read + tissue + batch +
   blend + zarr write, a region of the 50k slide) vs the model alone on the same tiles
   already in memory, same device and batch. Target >= 0.9.
3. Memory: peak RSS (separate processes) predicting the whole 10k and 50k slides, streamed
   to OME-Zarr, with a cheap 1-conv model at 1 um/px so the pipeline, not the model, is
   exercised. Target: flat within 10 %.
4. Peer: TIAToolbox's SemanticSegmentor on the whole 10k slide through
   ``bench_infer_peer.py``, from a throwaway venv at /tmp/tiavenv when it exists (never
   installed into the project venv).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))


def tile_library(ts: int = 256) -> list[np.ndarray]:
    """Real tissue tiles (ts x ts) cut from GlaS and stain tiles, plus one white glass tile."""
    from PIL import Image

    from napari_histo.engine.tissue import tissue_mask

    files = sorted((SHARED / "glas_gland_segmentation" / "images").glob("*.png"))[:24]
    files += sorted((SHARED / "stain_tiles").rglob("*.png"))
    lib = []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        for y in range(0, img.shape[0] - ts + 1, ts):
            for x in range(0, img.shape[1] - ts + 1, ts):
                t = img[y : y + ts, x : x + ts]
                if tissue_mask(t).mean() > 0.6:
                    lib.append(np.ascontiguousarray(t))
    white = np.full((ts, ts, 3), 242, np.uint8)
    return [white, *lib]


def make_slide(path: Path, side: int, lib: list[np.ndarray], seed: int = 0) -> Path:
    """A side x side slide: tissue islands (~40 %) of library tiles on white glass."""
    from scipy.ndimage import zoom

    from napari_histo.io.synthetic import write_slide_from_tiles

    if path.exists():
        return path
    ts = lib[0].shape[0]
    g = -(-side // ts)
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, g // 16 + 2),) * 2)
    field = zoom(coarse, g / (coarse.shape[0] - 1), order=1)[:g, :g]
    tissue = field > np.quantile(field, 0.6)
    layout = np.where(tissue, rng.integers(1, len(lib), size=(g, g)), 0)
    t0 = time.perf_counter()
    write_slide_from_tiles(path, lib, (side, side), layout=layout, mpp=0.25)
    print(f"  wrote {path.name} ({side} x {side}, {path.stat().st_size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def seg_model(device: str):
    import torch

    from napari_histo.engine.checkpoints import LoadedModel, default_preprocessing
    from napari_histo.engine.devices import resolve_device
    from napari_histo.engine.models import build_model

    torch.manual_seed(0)
    dev = resolve_device(device)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    m = build_model(spec).to(dev).eval()
    return LoadedModel(m, dev, "segment", ["bg", "tumor"], spec,
                       default_preprocessing(mpp=0.5, patch_size=256))


def efficiency(slide: Path, workdir: Path, n_tiles: int, device: str, batch: int) -> dict:
    """End-to-end predict_slide tiles/s vs model-only tiles/s on the same tiles."""
    import shutil

    from napari_histo.core.progress import run_task
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.engine.inference._model import Runner
    from napari_histo.engine.inference.predict import prepare_slide_run
    from napari_histo.io.slide import open_slide

    lm = seg_model(device)
    tile, overlap = 256, 32
    stride = tile - overlap
    side_tiles = int(np.ceil(np.sqrt(n_tiles)))
    side0 = side_tiles * stride * 2  # level-0 px (working = 0.5 um/px = level 1)
    cy = cx = 20000  # inside the slide, whatever the tissue
    region = (cy, cx, cy + side0, cx + side0)
    cfg = InferenceConfig(tile=tile, overlap=overlap, batch_size=batch, device=device,
                          tissue_only=False, readers=4, block_tiles=2)
    out = workdir / "eff.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    # warm-up (imports, first conv)
    runner = Runner(lm, batch, pad_batches=True)
    runner(np.zeros((batch, tile, tile, 3), np.uint8))
    t0 = time.perf_counter()
    res = run_task(predict_slide(slide, lm, cfg, region=region, out_path=out))
    e2e_total = time.perf_counter() - t0
    st = res.stats
    n = st.computed_tiles
    # the same tiles, in memory
    with open_slide(slide) as s:
        ctx = prepare_slide_run(s, lm, cfg, region=region)
        plan, src = ctx.plan, ctx.source
        tiles = []
        for b in plan.blocks():
            region_px = src.read(plan.read_box(b))
            tiles.append(plan.extract(region_px, [o for o, _ in plan.tiles(b)]))
        tiles = np.concatenate(tiles)
    assert len(tiles) == n, (len(tiles), n)
    def model_only() -> float:
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            runner(tiles[i : i + batch])
        if lm.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - t0

    # the machine is shared: measure the model alone before and after, take the mean
    m_before = model_only()
    # and the end-to-end run once more, after, to average the load drift the same way
    shutil.rmtree(out, ignore_errors=True)
    res2 = run_task(predict_slide(slide, lm, cfg, region=region, out_path=out))
    m_after = model_only()
    model_s = (m_before + m_after) / 2
    e2e_s = (st.wall_s + res2.stats.wall_s) / 2
    # pipeline ceiling: the same run with a 1-conv model (reading, blending, writing only)
    import torch
    from torch import nn

    from napari_histo.engine.checkpoints import LoadedModel

    cheap = LoadedModel(nn.Conv2d(3, 2, 1).to(lm.device).eval(), lm.device, "segment",
                        ["bg", "tumor"], {"name": "conv1", "in_channels": 3, "num_classes": 2},
                        lm.preprocessing)
    shutil.rmtree(out, ignore_errors=True)
    with torch.inference_mode():
        res3 = run_task(predict_slide(slide, cheap, cfg, region=region, out_path=out))
    return {"tiles": n, "tile": tile, "batch": batch, "device": str(lm.device),
            "e2e_loop_s": e2e_s, "e2e_runs_s": [st.wall_s, res2.stats.wall_s],
            "e2e_total_s": e2e_total, "model_only_s": model_s,
            "model_only_runs_s": [m_before, m_after],
            "pipeline_only_tiles_per_s": n / res3.stats.wall_s,
            "e2e_tiles_per_s": n / e2e_s, "model_tiles_per_s": n / model_s,
            "efficiency": (n / e2e_s) / (n / model_s),
            "efficiency_incl_setup": (n / e2e_total) / (n / model_s),
            "time_in_model_during_e2e_s": st.model_s, "read_wait_s": st.wait_read_s,
            "region_level0": list(region)}


MEM_CHILD = r"""
import resource, sys, time, json, torch
from torch import nn
from napari_histo.core.progress import run_task
from napari_histo.engine.inference import InferenceConfig, predict_slide
from napari_histo.engine.checkpoints import LoadedModel, default_preprocessing
slide, out, mpp = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1)).eval()
lm = LoadedModel(m, torch.device("cpu"), "segment", ["bg", "tumor"],
                 {"name": "conv1", "in_channels": 3, "num_classes": 2},
                 default_preprocessing(mpp=mpp, patch_size=256))
cfg = InferenceConfig(tile=256, overlap=32, batch_size=8, device="cpu", readers=4)

def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")

with torch.inference_mode():  # warm the backend up: its one-off buffers are not the run's
    m(torch.zeros(8, 3, 256, 256))
import_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
baseline = status_mb("VmRSS")
try:  # reset the high-water mark (Linux >= 4.0) so the peak is the run's own
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
t0 = time.perf_counter()
res = run_task(predict_slide(slide, lm, cfg, out_path=out))
print(json.dumps({"peak_rss_mb": status_mb("VmHWM"), "baseline_rss_mb": baseline,
                  "import_peak_rss_mb": import_peak,
                  "s": time.perf_counter() - t0, "tiles": res.total_tiles,
                  "computed": res.stats.computed_tiles, "skipped": res.skipped_tiles,
                  "shape": list(res.probabilities.shape)}))
"""


def memory(slide: Path, workdir: Path, mpp: float, tile_cache_mb: int | None = None) -> dict:
    """Peak RSS of a whole-slide streamed prediction in a fresh process.

    ``tile_cache_mb=0`` turns the readers' decoded-tile cache off (it is bounded, 64 MB by
    default, but a small slide never fills it, so it shows up as "growth" with slide size).
    """
    import shutil

    out = workdir / f"mem_{slide.stem}.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if tile_cache_mb is not None:
        env["NAPARI_HISTO_TILE_CACHE_MB"] = str(tile_cache_mb)
    r = subprocess.run([sys.executable, "-c", MEM_CHILD, str(slide), str(out), str(mpp)],
                       capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def tiatoolbox_peer(workdir: Path, slide: Path) -> dict:
    """TIAToolbox SemanticSegmentor vs ours (``bench_infer_peer.py``), from a throwaway venv.

    TIAToolbox is never installed into the project's venv; it runs from /tmp/tiavenv when
    that exists (see docs/benchmarks.md for how it was made).
    """
    py = Path("/tmp/tiavenv/bin/python")
    if not py.exists():
        return {"status": "not installed (no throwaway venv at /tmp/tiavenv)"}
    r = subprocess.run([str(py), "-c", "import tiatoolbox; print(tiatoolbox.__version__)"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return {"status": "does not import", "error": r.stderr.strip().splitlines()[-1:]}
    script = Path(__file__).with_name("bench_infer_peer.py")
    run = subprocess.run([str(py), str(script), "--workdir", str(workdir), "--slide", str(slide)],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return {"status": f"tiatoolbox {r.stdout.strip()} failed",
                "error": run.stderr.strip().splitlines()[-3:]}
    peer = json.loads((workdir / "bench_infer_peer.json").read_text())
    return {"status": f"tiatoolbox {r.stdout.strip()}", "ratio": peer["ratio_tiles_per_s"],
            "napari_histo_tiles_per_s": peer["napari_histo"]["tiles_per_s"],
            "tiatoolbox_tiles_per_s": peer["tiatoolbox_run"]["tiles_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=50000)
    ap.add_argument("--small", type=int, default=10000)
    ap.add_argument("--workdir", default="/tmp/bench_infer")
    ap.add_argument("--eff-tiles", type=int, default=144)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mem-mpp", type=float, default=1.0)
    ap.add_argument("--skip", nargs="*", default=[], help="efficiency memory peer")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"cpu_count": os.cpu_count()}
    print("building slides from real tissue tiles ...", flush=True)
    lib = tile_library()
    print(f"  library: {len(lib) - 1} tissue tiles + white", flush=True)
    big = make_slide(work / f"tiles_{args.size}.tif", args.size, lib)
    small = make_slide(work / f"tiles_{args.small}.tif", args.small, lib)
    if "efficiency" not in args.skip:
        print("pipeline efficiency ...", flush=True)
        e = efficiency(big, work, args.eff_tiles, args.device, args.batch)
        report["efficiency"] = e
        print(f"  {e['tiles']} tiles {e['tile']} px batch {e['batch']} on {e['device']}: "
              f"end-to-end {e['e2e_tiles_per_s']:.2f} tiles/s, model alone "
              f"{e['model_tiles_per_s']:.2f} tiles/s -> ratio {e['efficiency']:.3f} "
              f"(target >= 0.9; incl. setup {e['efficiency_incl_setup']:.3f}); pipeline alone "
              f"(1-conv model) {e['pipeline_only_tiles_per_s']:.1f} tiles/s", flush=True)
    if "memory" not in args.skip:
        print("peak RSS vs slide size ...", flush=True)
        ms = memory(small, work, args.mem_mpp)
        mb = memory(big, work, args.mem_mpp)
        report["memory"] = {"small": ms, "big": mb}
        if "error" not in ms and "error" not in mb:
            ratio = mb["peak_rss_mb"] / ms["peak_rss_mb"]
            report["memory"]["ratio"] = ratio
            print(f"  {args.small}^2: {ms['peak_rss_mb']:.0f} MB ({ms['s']:.0f} s, "
                  f"{ms['computed']} tiles); {args.size}^2: {mb['peak_rss_mb']:.0f} MB "
                  f"({mb['s']:.0f} s, {mb['computed']} tiles) -> ratio {ratio:.3f} "
                  "(target <= 1.10)", flush=True)
            growth = ((mb["peak_rss_mb"] - mb["baseline_rss_mb"])
                      / max(1.0, ms["peak_rss_mb"] - ms["baseline_rss_mb"]))
            report["memory"]["growth_ratio"] = growth
            print(f"  peak above the warmed-up process ({ms['baseline_rss_mb']:.0f} / "
                  f"{mb['baseline_rss_mb']:.0f} MB): {ms['peak_rss_mb'] - ms['baseline_rss_mb']:.0f}"
                  f" MB vs {mb['peak_rss_mb'] - mb['baseline_rss_mb']:.0f} MB -> {growth:.2f}x; "
                  f"import-time peak {mb['import_peak_rss_mb']:.0f} MB (excluded)", flush=True)
        ns, nb = (memory(sl, work, args.mem_mpp, tile_cache_mb=0) for sl in (small, big))
        if "error" not in ns and "error" not in nb:
            report["memory"]["no_tile_cache"] = {"small": ns, "big": nb,
                                                 "ratio": nb["peak_rss_mb"] / ns["peak_rss_mb"]}
            print(f"  tile cache off: {ns['peak_rss_mb']:.0f} MB vs {nb['peak_rss_mb']:.0f} MB -> "
                  f"ratio {nb['peak_rss_mb'] / ns['peak_rss_mb']:.3f}", flush=True)
        else:
            print(f"  memory run failed: {ms.get('error') or mb.get('error')}", flush=True)
    if "peer" not in args.skip:
        report["tiatoolbox"] = tiatoolbox_peer(work, small)
        print(f"TIAToolbox: {report['tiatoolbox']}", flush=True)
    (work / "bench_infer.json").write_text(json.dumps(report, indent=2))
    print(f"report: {work / 'bench_infer.json'}")


if __name__ == "__main__":
    main()
