"""Inference scaling: a cohort over 2 dask workers vs 1 worker, one torch thread per process.

Usage::

    nice .venv/bin/python benchmarks/bench_scale_infer.py [--slides 4] [--side 6000]
        [--workdir /tmp/bench_scale_infer] [--repeats 1]

Builds ``--slides`` pyramidal JPEG slides (``--side`` px square at 0.25 um/px) from real tissue
tiles of ../shared/data at run time (``bench_infer.tile_library``/``make_slide``: tissue
islands on white glass), saves a unet-tiny checkpoint working at 0.5 um/px, then predicts the
whole cohort with ``predict_distributed`` against a LocalCluster of 1 and of 2 single-threaded
worker processes (started before the clock, torch warmed up and pinned to 1 thread in every
worker), alternately, in the same run. Figures: cohort tiles/s end to end (client planning +
cluster) and in the cluster phase (first progress event after planning -> last block done),
and their 2-vs-1 ratios against the 1.6x target. Outputs are checked equal between the runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET = 1.6


def _checkpoint(path: Path) -> Path:
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model

    torch.manual_seed(0)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    return save_checkpoint(path, build_model(spec), spec=spec, task="segment",
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=0.5, patch_size=256))


def _one_thread() -> int:
    import torch

    torch.set_num_threads(1)
    torch.zeros(1, 3, 64, 64) @ torch.zeros(64, 64)  # import + first kernel off the clock
    return torch.get_num_threads()


def run_cohort(address: str, slides: list[Path], ckpt: Path, out: Path) -> dict[str, float]:
    """One timed cohort run against the cluster at ``address``."""
    from napari_histo.core.progress import Progress
    from napari_histo.engine.distributed import predict_distributed
    from napari_histo.engine.inference import InferenceConfig

    shutil.rmtree(out, ignore_errors=True)
    cfg = InferenceConfig(tile=256, overlap=32, batch_size=8, device="cpu", readers=2,
                          scheduler=address)
    outs = [out / f"{s.stem}.ome.zarr" for s in slides]
    t0 = time.perf_counter()
    t_cluster = None
    gen = predict_distributed(slides, ckpt, cfg, outs, blocks_per_task=1)
    try:
        while True:
            ev = next(gen)
            if t_cluster is None and isinstance(ev, Progress):
                t_cluster = time.perf_counter()
    except StopIteration as stop:
        results = stop.value
    t1 = time.perf_counter()
    assert all(r is not None and r.complete for r in results), "a slide failed"
    tiles = sum(r.total_tiles - r.skipped_tiles for r in results)
    return {"tiles": tiles, "wall_s": t1 - t0, "cluster_s": t1 - (t_cluster or t0)}


def _same(a: Path, b: Path) -> bool:
    import zarr

    for store in sorted(a.glob("*.ome.zarr")):
        x = zarr.open_group(str(store), mode="r")["0"][...]
        y = zarr.open_group(str(b / store.name), mode="r")["0"][...]
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--side", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=1, help="alternate 1/2-worker runs")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale_infer"))
    args = ap.parse_args()
    from bench_infer import make_slide, tile_library
    from distributed import Client, LocalCluster

    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)
    lib = tile_library()
    slides = [make_slide(wd / f"cohort{i}_{args.side}.tif", args.side, lib, seed=i)
              for i in range(args.slides)]
    ckpt = _checkpoint(wd / "unet_tiny.pt")
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    clusters = {}
    try:
        for n in (1, 2):
            lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=None, silence_logs=40)
            client = Client(lc)
            threads = client.run(_one_thread)
            assert set(threads.values()) == {1}, threads
            clusters[n] = (lc, client)
        for _ in range(args.repeats):
            for n in (1, 2):
                r = run_cohort(clusters[n][0].scheduler_address, slides, ckpt, wd / f"out{n}")
                runs[n].append(r)
                print(f"  {n} worker(s): {r['tiles']} tiles, {r['wall_s']:.1f} s end to end, "
                      f"{r['cluster_s']:.1f} s cluster phase", flush=True)
    finally:
        for lc, client in clusters.values():
            client.close()
            lc.close()
    same = _same(wd / "out1", wd / "out2")

    def rate(n: int, key: str) -> float:
        return float(np.median([r["tiles"] / r[key] for r in runs[n]]))

    fig = {
        "slides": args.slides, "side": args.side, "tiles": runs[1][0]["tiles"],
        "tiles_per_s_1": rate(1, "wall_s"), "tiles_per_s_2": rate(2, "wall_s"),
        "ratio_end_to_end": rate(2, "wall_s") / rate(1, "wall_s"),
        "ratio_cluster_phase": rate(2, "cluster_s") / rate(1, "cluster_s"),
        "outputs_equal": same, "runs": runs,
    }
    print(json.dumps(fig, indent=1))
    for key in ("ratio_end_to_end", "ratio_cluster_phase"):
        verdict = "MET" if fig[key] >= TARGET else "missed"
        print(f"2 workers vs 1, {key[6:].replace('_', ' ')}: {fig[key]:.2f}x "
              f"(target >= {TARGET}x): {verdict}")


if __name__ == "__main__":
    main()
