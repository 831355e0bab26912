"""Benchmark the io writers and annotation rasterizer against peers measured in the same run.

Run: ``nice .venv/bin/python benchmarks/writers.py [--size 8192]``. Prints figures and ratios:

* rasterize_annotations (tumor_064.xml, 256 px level-0 windows near lesions) vs
  skimage.draw.polygon on the same bbox-filtered polygons;
* write_ome_zarr (level 0 + full pyramid, from a lazy dask array) vs ``dask.array.to_zarr``
  of level 0 alone with the same codec (a lower bound on the work);
* write_ome_tiff (tiles streamed from dask, pyramid) vs ``tifffile.imwrite`` of the in-memory
  level 0 alone (same tiles and codec);
* the streaming store (chunk by chunk + region pyramids) vs the one-shot writer;
* peak RSS growth per writer, to show that dask inputs are never materialized.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))


class PeakRSS:
    """Sample this process's RSS every 20 ms; ``.peak_mb`` is the growth over the start."""

    def __init__(self) -> None:
        import psutil

        self._p = psutil.Process()
        self.start = self._p.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._p.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def bench_rasterize(n: int = 400) -> None:
    from skimage.draw import polygon

    from napari_histo.io.annotations import rasterize_annotations, read_annotations

    anns = read_annotations(DATA / "camelyon16_annotations" / "tumor_064.xml")
    rng = np.random.default_rng(0)
    boxes = [a.bbox for a in anns if a.kind == "tumor"]
    origins = []
    for i in range(n):
        y0, x0, y1, x1 = boxes[i % len(boxes)]
        origins.append((rng.uniform(y0 - 128, y1 - 128), rng.uniform(x0 - 128, x1 - 128)))

    def peer(origin: tuple[float, float]) -> np.ndarray:
        out = np.zeros((256, 256), np.uint8)
        oy, ox = origin
        for excl in (False, True):
            for a in anns:
                if (a.kind == "exclusion") != excl:
                    continue
                by0, bx0, by1, bx1 = a.bbox
                if by1 < oy or by0 > oy + 256 or bx1 < ox or bx0 > ox + 256:
                    continue
                rr, cc = polygon(a.polygon[:, 0] - oy - 0.5, a.polygon[:, 1] - ox - 0.5, out.shape)
                out[rr, cc] = 0 if excl else 1
        return out

    t = time.perf_counter()
    ours = [rasterize_annotations(anns, (256, 256), origin=o) for o in origins]
    t_ours = time.perf_counter() - t
    n_peer = max(1, n // 20)  # the peer is ~1000x slower: time a subset
    t = time.perf_counter()
    theirs = [peer(o) for o in origins[:n_peer]]
    t_peer = (time.perf_counter() - t) * n / n_peer
    agree = np.mean([(a == b).mean() for a, b in zip(ours, theirs, strict=False)])
    t = time.perf_counter()
    thumb = rasterize_annotations(anns, (220000 // 16, 100000 // 16), downsample=16)
    t_thumb = time.perf_counter() - t
    print(
        f"rasterize 256px windows: ours {n / t_ours:8.1f}/s  skimage.draw.polygon "
        f"{n / t_peer:8.1f}/s  ratio {t_peer / t_ours:5.2f}x  (pixel agreement {agree:.5f})"
    )
    print(f"rasterize whole slide at downsample 16 ({thumb.shape}): {t_thumb:.3f} s")


def _labels_dask(size: int, chunk: int) -> da.Array:
    def blk(block_info=None):  # noqa: ANN001, ANN202
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        return ((np.sin(yy / 300.0) * np.cos(xx / 210.0) > 0.3).astype(np.uint8)) * (
            1 + ((yy // 2000) % 2)
        ).astype(np.uint8)

    c = da.core.normalize_chunks((chunk, chunk), (size, size))
    return da.map_blocks(blk, chunks=c, dtype=np.uint8)


def _rgb_dask(size: int, chunk: int) -> da.Array:
    from PIL import Image

    tile = np.asarray(
        Image.open(DATA / "stain_tiles" / "henorm_python" / "example1.png").convert("RGB")
    )[:1024, :1024]

    def blk(block_info=None):  # noqa: ANN001, ANN202
        (y0, y1), (x0, x1) = block_info[None]["array-location"][:2]
        ys = np.arange(y0, y1) % 1024
        xs = np.arange(x0, x1) % 1024
        return tile[ys][:, xs]

    c = da.core.normalize_chunks((chunk, chunk, 3), (size, size, 3))
    return da.map_blocks(blk, chunks=c, dtype=np.uint8)


def bench_writers(size: int, tmp: Path) -> None:
    import numcodecs
    import tifffile
    import zarr

    from napari_histo.io.ome_zarr import create_ome_zarr
    from napari_histo.io.writers import write_ome_tiff, write_ome_zarr

    for kind, arr in (("labels", _labels_dask(size, 512)), ("image", _rgb_dask(size, 512))):
        mb = arr.nbytes / 2**20
        with PeakRSS() as m:
            t = time.perf_counter()
            write_ome_zarr(tmp / f"{kind}.ome.zarr", arr, mpp=0.5, kind=kind, chunks=512)
            t_ours = time.perf_counter() - t
        # peer: level 0 only, plain zarr v2 with the same codec, dask's own writer
        shuffle = numcodecs.Blosc.BITSHUFFLE
        z = zarr.create_array(
            str(tmp / f"{kind}_plain.zarr"),
            shape=arr.shape,
            chunks=(512, 512) + arr.shape[2:],
            dtype=arr.dtype,
            zarr_format=2,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=shuffle),
        )
        with PeakRSS() as mp:
            t = time.perf_counter()
            da.store(arr, z, lock=False)
            t_peer = time.perf_counter() - t
        print(
            f"OME-Zarr {kind:6s} {size}^2 ({mb:6.0f} MB): write_ome_zarr+pyramid {t_ours:6.2f} s "
            f"({mb / t_ours:6.1f} MB/s, peak +{m.peak_mb:5.0f} MB) | da.store level 0 only "
            f"{t_peer:6.2f} s (peak +{mp.peak_mb:5.0f} MB) | ratio {t_peer / t_ours:4.2f}"
        )
        comp = "jpeg" if kind == "image" else "zlib"
        with PeakRSS() as m:
            t = time.perf_counter()
            write_ome_tiff(tmp / f"{kind}.ome.tif", arr, mpp=0.5, kind=kind, compression=comp)
            t_ours = time.perf_counter() - t
        t = time.perf_counter()
        full = arr.compute()
        t_src = time.perf_counter() - t
        tifffile.imwrite(tmp / f"{kind}_plain.tif", full, tile=(256, 256), compression=comp)
        t_peer = time.perf_counter() - t
        del full
        print(
            f"OME-TIFF {kind:6s} ({comp}): write_ome_tiff+pyramid {t_ours:6.2f} s "
            f"({mb / t_ours:6.1f} MB/s, peak +{m.peak_mb:5.0f} MB) | compute whole array "
            f"({t_src:5.2f} s) + tifffile.imwrite level 0: {t_peer:6.2f} s | ratio "
            f"{t_peer / t_ours:4.2f}"
        )

    # streaming store, chunk by chunk with a region pyramid after each block
    arr = _labels_dask(size // 2, 512)
    s = size // 2
    t = time.perf_counter()
    store = create_ome_zarr(tmp / "stream.ome.zarr", (s, s), np.uint8, chunks=512, mpp=0.5)
    for y in range(0, s, 512):
        for x in range(0, s, 512):
            store.write_block(y, x, arr[y : y + 512, x : x + 512].compute())
            store.build_pyramid(region=(y, x, y + 512, x + 512), workers=1)
    store.mark_complete()
    t_stream = time.perf_counter() - t
    t = time.perf_counter()
    write_ome_zarr(tmp / "oneshot.ome.zarr", arr, mpp=0.5, chunks=512)
    t_one = time.perf_counter() - t
    print(
        f"streaming store {s}^2 labels, chunk by chunk + live pyramid: {t_stream:.2f} s vs "
        f"one-shot {t_one:.2f} s (ratio {t_one / t_stream:.2f})"
    )


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="side of the written images")
    ap.add_argument("--windows", type=int, default=200, help="rasterized windows")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  python {sys.version.split()[0]}")
    bench_rasterize(args.windows)
    tmp = Path(tempfile.mkdtemp(prefix="napari_histo_bench_"))
    try:
        bench_writers(args.size, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"max RSS of the run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
