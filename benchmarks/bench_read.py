"""Slide-reading benchmark: random 256 x 256 level-0 reads/s vs tiffslide, OpenSlide and raw decode.

Usage::

    python benchmarks/bench_read.py [--size 50000] [--reads 600] [--out DIR] [--keep]
                                    [--no-napari]

1. Builds (at run time, streamed, never whole in memory) a ``size x size`` JPEG-tiled pyramidal
   TIFF out of real H&E tiles from ``../shared/data`` (CAMELYON16 patches, GlaS images, Gleason
   tiles, stain tiles, cut into 256 px tiles; each library tile is JPEG-encoded once and its
   bytes reused, lower levels built per tile).
2. Reads the same random unaligned 256 x 256 level-0 regions with: napari-histo
   (``Slide.read_region``), tiffslide, openslide-python (openslide-bin), and the physical
   limit: ``os.pread`` + ``imagecodecs.jpeg_decode`` of exactly the tiles each region touches
   (no assembly). Once single-threaded, once with one thread per CPU.
3. In a subprocess under a real napari viewer (offscreen Qt; xvfb when available): time from
   ``viewer.open(path, plugin='napari-histo')`` to the layer being added, peak RSS, and the
   number of level-0 tiles decoded by then (must be 0).
4. Prints the ratios and writes ``bench_read.json`` to ``--out``; deletes the slide unless
   ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))
TILE = 256


# ----------------------------------------------------------------------------- tile library


def tile_library(max_tiles: int = 800) -> list[np.ndarray]:
    """Real H&E tiles (256 x 256 RGB) cut from the shared data sets."""
    from PIL import Image

    files: list[Path] = []
    files += sorted((DATA / "camelyon16_patches").rglob("*.png"))
    files += sorted((DATA / "gleason_prostate_tiles" / "img").glob("*.jpg"))
    files += sorted((DATA / "stain_tiles").rglob("*.png"))
    files += sorted((DATA / "glas_gland_segmentation" / "images").glob("*.png"))[:70]
    tiles: list[np.ndarray] = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB"))
        for y in range(0, a.shape[0] - TILE + 1, TILE):
            for x in range(0, a.shape[1] - TILE + 1, TILE):
                t = np.ascontiguousarray(a[y : y + TILE, x : x + TILE])
                if t.mean() < 235:  # skip blank background tiles
                    tiles.append(t)
        if len(tiles) >= max_tiles:
            break
    if not tiles:
        raise SystemExit(f"no tiles found under {DATA}")
    return tiles[:max_tiles]


def build_slide(path: Path, size: int) -> dict[str, float]:
    from napari_histo.io.synthetic import write_slide_from_tiles

    t0 = time.perf_counter()
    lib = tile_library()
    t1 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 8192 == 0:
            print(f"  writing tiles {done}/{total} ({time.perf_counter() - t1:.0f} s)", flush=True)

    write_slide_from_tiles(path, lib, (size, size), mpp=0.25, seed=0, progress=progress)
    t2 = time.perf_counter()
    return {"library_tiles": len(lib), "library_s": t1 - t0, "write_s": t2 - t1,
            "file_gb": path.stat().st_size / 1e9}


# ----------------------------------------------------------------------------- readers


def make_readers(path: Path) -> dict[str, Callable[[int, int], np.ndarray]]:
    """name -> read(y, x) returning a 256 x 256 (x3 or x4) array."""
    import imagecodecs
    import openslide
    import tifffile
    import tiffslide

    from napari_histo.io.slide import open_slide

    ours = open_slide(path)
    ts = tiffslide.TiffSlide(path)
    osl = openslide.OpenSlide(str(path))
    tf = tifffile.TiffFile(path)
    page = tf.series[0].levels[0].keyframe
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    gx = math.ceil(page.imagewidth / page.tilewidth)
    fd = os.open(path, os.O_RDONLY)
    tables = page.jpegtables

    def raw(y: int, x: int) -> np.ndarray:
        last = None
        for ty in range(y // TILE, (y + TILE - 1) // TILE + 1):
            for tx in range(x // TILE, (x + TILE - 1) // TILE + 1):
                i = ty * gx + tx
                last = imagecodecs.jpeg_decode(os.pread(fd, int(counts[i]), int(offsets[i])),
                                               tables=tables)
        assert last is not None
        return last

    return {
        "napari-histo": lambda y, x: ours.read_region((y, x), 0, (TILE, TILE)),
        "tiffslide": lambda y, x: ts.read_region((x, y), 0, (TILE, TILE), as_array=True),
        "openslide": lambda y, x: np.asarray(osl.read_region((x, y), 0, (TILE, TILE))),
        "raw-decode limit": raw,
    }


def measure(read: Callable[[int, int], np.ndarray], locs: list[tuple[int, int]], threads: int) -> float:
    """Reads per second over ``locs`` with ``threads`` threads."""
    read(*locs[0])
    t0 = time.perf_counter()
    if threads == 1:
        for y, x in locs:
            read(y, x)
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda yx: read(*yx), locs, chunksize=8))
    return len(locs) / (time.perf_counter() - t0)


def check_same_pixels(readers: dict[str, Callable[[int, int], np.ndarray]], y: int, x: int) -> dict[str, float]:
    ours = readers["napari-histo"](y, x).astype(int)
    out = {}
    for name in ("tiffslide", "openslide"):
        other = readers[name](y, x)[..., :3].astype(int)
        out[name] = float(np.abs(ours - other).mean())
    return out


# ----------------------------------------------------------------------------- napari open

NAPARI_SCRIPT = r"""
import json, os, resource, sys, time
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
path = sys.argv[1]
from napari_histo.io import _tiff
decoded = []
orig = _tiff.TiffLevel._decode_segment
def counting(self, sy, sx):
    decoded.append(self.name)
    return orig(self, sy, sx)
_tiff.TiffLevel._decode_segment = counting
def level0():
    return sum(1 for n in decoded if n.endswith("level 0"))
import napari
viewer = napari.Viewer(show=False)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def open_once():
    t0 = time.perf_counter()
    try:
        layers = viewer.open(path, plugin="napari-histo")
        mode = "viewer.open(plugin='napari-histo')"
    except Exception as err:  # reader not ready: fall back to open_slide + multiscale list
        mode = f"open_slide + add_image (plugin reader failed: {type(err).__name__}: {err})"
        from napari_histo.io.slide import open_slide
        s = open_slide(path)
        layers = [viewer.add_image(s.levels, rgb=True, multiscale=True, contrast_limits=(0, 255))]
    return time.perf_counter() - t0, layers, mode
t_cold, layers, mode = open_once()   # includes first imports (dask, tifffile) and napari's pint registry
l0_cold = level0()
t1 = time.perf_counter()
try:
    viewer.screenshot(canvas_only=True)   # napari draws the view: decodes only the coarse level it shows
except Exception:
    pass
t_view = time.perf_counter() - t1
viewer.layers.clear()
t_warm, layers2, _ = open_once()
l0_warm = level0()
reader_s = None
try:
    from napari_histo.plugin._reader import get_reader
    t2 = time.perf_counter()
    data = get_reader(path)(path)
    reader_s = time.perf_counter() - t2
except Exception as err:
    reader_s = f"failed: {err}"
print(json.dumps({
    "mode": mode,
    "open_to_layer_cold_s": t_cold,
    "open_to_layer_warm_s": t_warm,
    "plugin_reader_only_warm_s": reader_s,
    "first_view_s": t_view,
    "layers": [l.name for l in layers],
    "multiscale": bool(getattr(layers[0], "multiscale", False)),
    "level0_tiles_decoded_at_open": l0_cold,
    "level0_tiles_decoded_after_first_view_and_reopen": l0_warm,
    "tiles_decoded_total": len(decoded),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_before_open_mb": rss_before / 1024,
}))
viewer.close()
"""


def napari_open(path: Path) -> dict[str, object]:
    cmd = [sys.executable, "-c", NAPARI_SCRIPT, str(path)]
    if subprocess.run(["which", "xvfb-run"], capture_output=True).returncode == 0:
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1200x24", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=50000, help="slide side in px (default 50000)")
    ap.add_argument("--reads", type=int, default=600, help="random regions per measurement")
    ap.add_argument("--out", type=Path, default=None, help="folder for bench_read.json")
    ap.add_argument("--keep", action="store_true", help="keep the generated slide")
    ap.add_argument("--slide", type=Path, default=None, help="reuse an existing slide")
    ap.add_argument("--no-napari", action="store_true", help="skip the napari open timing")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench_read_"))
    path = args.slide or workdir / f"tiles_{args.size}.tif"
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_avg_at_start": os.getloadavg()},
        "size": args.size, "reads": args.reads,
    }
    try:
        if args.slide is None:
            print(f"building a {args.size} x {args.size} px JPEG-tiled pyramid from real tiles ...")
            results["build"] = build_slide(path, args.size)
            print(f"  {results['build']}")
        # warm the page cache so every reader sees the same (cached) file
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
        readers = make_readers(path)
        rng = np.random.default_rng(42)
        import tifffile

        with tifffile.TiffFile(path) as tf:
            h, w = tf.series[0].levels[0].shape[:2]
        results["size"] = [h, w]
        locs = [(int(rng.integers(0, h - TILE)), int(rng.integers(0, w - TILE))) for _ in range(args.reads)]
        results["pixel_mean_abs_diff_vs_ours"] = check_same_pixels(readers, *locs[0])
        ncpu = os.cpu_count() or 1
        # Readers are measured in alternating rounds (each on fresh random locations), so a
        # change in the machine's load during the run biases no reader in particular.
        rounds = 3
        per_round = max(1, args.reads // rounds)
        elapsed: dict[tuple[str, int], float] = {}
        for threads in (1, ncpu):
            for _rnd in range(rounds):
                for name, read in readers.items():
                    if name == "napari-histo" and threads == 1:
                        # single-threaded means no parallel tile decode inside a read either
                        os.environ["NAPARI_HISTO_DECODE_THREADS"] = "1"
                    run_locs = [(int(rng.integers(0, h - TILE)), int(rng.integers(0, w - TILE)))
                                for _ in range(per_round)]
                    rate = measure(read, run_locs, threads)
                    os.environ.pop("NAPARI_HISTO_DECODE_THREADS", None)
                    elapsed[(name, threads)] = elapsed.get((name, threads), 0.0) + per_round / rate
            for name in readers:
                rate = rounds * per_round / elapsed[(name, threads)]
                print(f"  {name:18s} {threads} thread(s): {rate:8.1f} reads/s", flush=True)
        table: dict[str, dict[str, float]] = {
            name: {f"{t}t": rounds * per_round / elapsed[(name, t)] for t in (1, ncpu)}
            for name in readers
        }
        results["reads_per_s"] = table
        ratios = {}
        for key in table["napari-histo"]:
            ours = table["napari-histo"][key]
            ratios[key] = {
                "vs_tiffslide": ours / table["tiffslide"][key],
                "vs_openslide": ours / table["openslide"][key],
                "vs_raw_limit": ours / table["raw-decode limit"][key],
            }
        results["ratios"] = ratios
        targets = {"vs_tiffslide": 1.5, "vs_openslide": 2.0, "vs_raw_limit": 0.8}
        print("\nratios (napari-histo / peer), targets: >=1.5x tiffslide, >=2x openslide, >=0.8x raw")
        for key, r in ratios.items():
            print("  " + key + ": " + ", ".join(
                f"{k} {v:.2f}x ({'met' if v >= targets[k] else 'MISSED'})" for k, v in r.items()))
        if not args.no_napari:
            print("\nnapari open timing (subprocess) ...", flush=True)
            results["napari_open"] = napari_open(path)
            print("  " + json.dumps(results["napari_open"]))
    finally:
        if not args.keep and args.slide is None and path.exists():
            path.unlink()
        if not args.keep:
            try:
                workdir.rmdir()
            except OSError:
                pass
    results["machine"]["load_avg_at_end"] = os.getloadavg()  # type: ignore[index]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_read.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.out / 'bench_read.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
