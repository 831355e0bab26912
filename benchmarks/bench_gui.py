"""GUI responsiveness of the napari-histo dock widgets (issue 5's benchmark).

Measures, in one run on a real napari window:

1. **Qt event-loop latency** while idle, while *training* (Train widget, ``unet-small`` on a
   GlaS image + labels from the viewer) and while *predicting a large slide* (Segment widget,
   whole slide streamed into zarr): a 10 ms ``QTimer`` records how late each tick fires;
   p50/p95/max are reported and p95 is compared with the 50 ms target.
2. **Time to first visible tile**: Segment "current view" on a zoomed region of the large
   slide; seconds from "model loaded" to the first tile pasted into the layer (target 0.25 s),
   next to the time for the whole view (peer figure in the same run).
3. **Brush stroke on a whole-slide correction layer**: napari's own ``Labels.paint`` on the
   editable window of the large-slide prediction (ms per dab, 40 px brush), and the autosave
   write-through of that window to the zarr label pyramid, vs a 16.7 ms frame budget.

Usage::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" \\
        .venv/bin/python benchmarks/bench_gui.py [--size 16384] [--seconds 20] [--out DIR]

Real-slide case (issue 11): ``--slide PATH --model CKPT`` opens ``PATH`` in a shown viewer,
runs a whole-slide prediction from the Segment widget while a script pans and zooms
(:func:`bench_real_slide`), and reports event-loop stalls (10 ms heartbeat: p50/p99/max of
how late each tick fired), time to the first visible tile and to completion, next to the
same pan/zoom script without a prediction (the rendering floor). ``--slide generated:SIDE``
writes a SIDE x SIDE slide from real tissue tiles (``bench_infer.make_slide``) first. The
last line is ``max stall: N ms``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_histo.plugin._result_layers import camera_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGET_LATENCY_MS = 50.0
TARGET_FIRST_TILE_S = 0.25
FRAME_MS = 1000.0 / 60.0


class LatencyProbe:
    """A 10 ms QTimer; each tick's lateness is how long the GUI thread was busy elsewhere."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000.0
        self.samples: list[float] = []
        self.at: list[float] = []  # perf_counter time of each sample
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last:
            self.samples.append(max(0.0, now - self._last - self.interval) * 1000.0)
            self.at.append(now)
        self._last = now

    def start(self) -> None:
        self.samples.clear()
        self.at.clear()
        self._last = 0.0
        self._timer.start()

    def stop(self) -> dict[str, float]:
        self._timer.stop()
        s = sorted(self.samples) or [float("nan")]
        return {"n": len(self.samples), "p50": s[len(s) // 2],
                "p95": s[min(len(s) - 1, int(0.95 * len(s)))],
                "p99": s[min(len(s) - 1, int(0.99 * len(s)))], "max": s[-1]}


def pump(cond: Callable[[], bool], timeout: float) -> bool:
    """Run the Qt event loop until ``cond()`` or ``timeout`` seconds."""
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while not cond():
        QApplication.processEvents()
        time.sleep(0.002)
        if time.monotonic() - t0 > timeout:
            return False
    return True


def _checkpoint(folder: Path, name: str) -> Path:
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model, make_spec

    torch.manual_seed(0)
    spec = make_spec(name, num_classes=2)
    return save_checkpoint(folder / f"{name}.pt", build_model(spec), spec=spec, task="segment",
                           class_names=["background", "tumor"],
                           preprocessing=default_preprocessing(patch_size=256))


def bench_training(viewer: Any, seconds: float, out: Path) -> dict[str, float]:
    from napari_histo.plugin._train_widget import TrainWidget

    root = SHARED / "glas_gland_segmentation"
    image = viewer.open(str(root / "images" / "train_1.png"), plugin="napari-histo")[0]
    labels = [lyr for lyr in viewer.layers if type(lyr).__name__ == "Labels"]
    if not labels:
        from skimage.io import imread

        labels = [viewer.add_labels(imread(root / "labels" / "train_1.png"))]
    w = TrainWidget(viewer)
    dock = viewer.window.add_dock_widget(w, name="Train")
    pump(lambda: False, 3.0)  # let the deferred torch preload finish
    w._image_combo.value = image
    w._labels_combo.value = labels[0]
    w._model_combo.value = "unet-small"
    w._epochs_spin.value = 100
    w._batch_spin.value = 8
    w._patch_spin.value = 256
    w._steps_spin.value = 10
    w._device_combo.value = "cpu"
    w._out_edit.value = str(out / "runs")
    probe = LatencyProbe()
    h = w.start()
    pump(lambda: w._progress_bar.value > 0 or h.done, 120)  # data loading done
    probe.start()
    pump(lambda: h.done, seconds)
    stats = probe.stop()
    stats["epochs"] = len(w.curves.history)
    w.stop()
    pump(lambda: h.done and w._start_button.enabled, 120)
    for lyr in list(viewer.layers):
        viewer.layers.remove(lyr)
    viewer.window.remove_dock_widget(dock)  # give the canvas its width back
    return stats


def open_with_segment(viewer: Any, slide: Path, ckpt: Path) -> tuple[Any, Any]:
    """The slide alone in ``viewer`` (its mask and annotations removed), a docked Segment
    widget holding ``ckpt``, and the whole slide in view."""
    from napari_histo.plugin._segment_widget import SegmentWidget

    image = viewer.open(str(slide), plugin="napari-histo")[0]
    for lyr in list(viewer.layers):
        if lyr is not image:
            viewer.layers.remove(lyr)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    seg._image_combo.value = image
    seg.set_checkpoint(ckpt)
    viewer.reset_view()
    return image, seg


def bench_predict(viewer: Any, slide: Path, ckpt: Path, seconds: float) -> dict[str, Any]:
    image, seg = open_with_segment(viewer, slide, ckpt)
    res: dict[str, Any] = {}
    # latency while the whole slide streams into zarr
    probe = LatencyProbe()
    h = seg.run("whole slide")
    pump(lambda: "model_loaded" in seg.timings or h.done, 60)
    probe.start()
    pump(lambda: h.done, seconds * 1.5)
    res["latency"] = probe.stop()
    res["redraws"] = dict(getattr(seg, "redraws", {}))
    res["multiscale"] = bool(seg._live is not None and seg._live.multiscale)
    res["tiles_done"] = int(seg._progress_bar.value)
    res["tiles_total"] = int(seg._progress_bar.max)
    seg.cancel()
    pump(lambda: h.done and seg._run_button.enabled, 120)
    # time to first tile of the visible region (zoomed to ~1024 px of level 0)
    firsts, wholes = [], []
    stages: list[tuple[float, float, float]] = []
    mpp = float(image.scale[-1])
    for k in range(5):
        cy = (0.3 + 0.1 * k) * image.data[0].shape[0] * mpp
        cx = (0.3 + 0.1 * k) * image.data[0].shape[1] * mpp
        camera_of(viewer).center = (cy, cx)
        camera_of(viewer).zoom = min(viewer.canvas.size) / (1024 * mpp)
        h = seg.run("current view")
        pump(lambda h=h: h.done and seg._run_button.enabled, 300)
        t = seg.timings
        if "first_tile" in t and "model_loaded" in t:
            firsts.append(t["first_tile"] - t["model_loaded"])
            wholes.append(t["returned"] - t["model_loaded"])
            res["click_to_first_tile_s"] = t["first_tile"] - t["start"]
            if "store_ready" in t and "layers_ready" in t:
                stages.append((t["store_ready"] - t["model_loaded"],
                               t["layers_ready"] - t["store_ready"],
                               t["first_tile"] - t["layers_ready"]))
    res["first_tile_s"] = statistics.median(firsts) if firsts else float("nan")
    if stages:  # where the first tile's time goes (medians)
        res["first_tile_stages_s"] = {
            name: statistics.median(st[i] for st in stages)
            for i, name in enumerate(("to_store_ready", "layers_created", "to_first_redraw"))}
    res["whole_view_s"] = statistics.median(wholes) if wholes else float("nan")
    res["view_px"] = seg.result.heatmap.data.shape if seg.result is not None else None
    res["segment"] = seg
    res["image"] = image
    return res


def bench_brush(viewer: Any, seg: Any, image: Any) -> dict[str, float]:
    from napari_histo.plugin._correct_widget import CorrectWidget

    mpp = float(image.scale[-1])
    camera_of(viewer).zoom = min(viewer.canvas.size) / (2048 * mpp)
    h = seg.run("current view")
    pump(lambda: h.done and seg._run_button.enabled, 300)
    w = CorrectWidget(viewer)
    viewer.window.add_dock_widget(w, name="Correct")
    w.reset_choices()
    w._prediction_combo.value = seg.result.labels
    w._image_combo.value = image
    s = w.edit_visible_region()
    layer = s.layer
    hh, ww = layer.data.shape
    layer.brush_size = 40
    times = []
    rng = np.random.default_rng(0)
    for _ in range(60):
        y, x = int(rng.integers(20, hh - 20)), int(rng.integers(20, ww - 20))
        t0 = time.perf_counter()
        layer.paint((y, x), 1)
        times.append((time.perf_counter() - t0) * 1000.0)
    pump(lambda: False, 0.5)
    w.save_now()  # the 60 dabs above
    saves = []
    for _ in range(10):  # one stroke, then its autosave
        y, x = int(rng.integers(20, hh - 20)), int(rng.integers(20, ww - 20))
        layer.paint((y, x), 0)
        t0 = time.perf_counter()
        w.save_now()
        saves.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"window_px": hh * ww, "window_shape": (hh, ww),
            "dab_p50_ms": times[len(times) // 2], "dab_p95_ms": times[int(0.95 * len(times))],
            "autosave_ms": statistics.median(saves)}


class PanZoomScript:
    """Pans along a circle and zooms in and out every ``interval_ms``, like a user browsing."""

    def __init__(self, viewer: Any, image: Any, interval_ms: int = 40) -> None:
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        h, w = (float(v) for v in level0_extent(image))
        self.center = (h / 2.0, w / 2.0)
        self.radius = 0.25 * min(h, w)
        self.zoom0 = float(camera_of(viewer).zoom)
        self.k = 0
        self.moves = 0
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._step)

    def _step(self) -> None:
        import math

        self.k += 1
        a = self.k * 0.05
        cam = camera_of(self.viewer)
        cam.center = (self.center[0] + self.radius * math.sin(a),
                      self.center[1] + self.radius * math.cos(a))
        cam.zoom = self.zoom0 * (1.0 + 3.0 * (0.5 + 0.5 * math.sin(a / 3.0)))
        self.moves += 1

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()


def level0_extent(image: Any) -> tuple[float, float]:
    """World (height, width) of an image layer's level 0."""
    from napari_histo.plugin._result_layers import level0_shape

    hh, ww = level0_shape(image)
    return hh * float(image.scale[-2]), ww * float(image.scale[-1])


def _tiles_slide(spec: str, out: Path) -> Path:
    """``generated:SIDE`` -> a SIDE x SIDE slide of real tissue tiles (bench_infer's recipe)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_infer import make_slide, tile_library

    side = int(spec.split(":", 1)[1])
    path = out / f"tiles_{side}.tif"
    return make_slide(path, side, tile_library())


def bench_real_slide(slide: Path, ckpt: Path, seconds: float, out: Path) -> dict[str, Any]:
    """Whole-slide prediction from the Segment widget while a script pans and zooms.

    Returns the heartbeat stats with pan/zoom alone (floor) and during the run, seconds from
    the click to the first tile on screen and to completion (None when ``seconds`` ran out
    first; the run is then cancelled), and how many pan/zoom moves the script made.
    """
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    image, seg = open_with_segment(viewer, slide, ckpt)
    seg._device_combo.value = "cpu"
    pump(lambda: False, 2.0)
    res: dict[str, Any] = {"slide": slide.name, "shape": level0_shape_of(image)}
    probe = LatencyProbe()
    script = PanZoomScript(viewer, image)
    probe.start()
    script.start()
    pump(lambda: False, min(10.0, seconds / 3))
    script.stop()
    res["floor"] = probe.stop()
    viewer.reset_view()
    script = PanZoomScript(viewer, image)
    pump(lambda: False, 0.5)
    t_click = time.perf_counter()
    h = seg.run("whole slide")
    assert h is not None
    probe.start()
    script.start()
    # done = the worker closed its generator; "returned" = the GUI has shown the result
    pump(lambda: "returned" in seg.timings or (h.done and seg._run_button.enabled), seconds)
    script.stop()
    res["during"] = probe.stop()
    res["moves"] = script.moves
    t = seg.timings
    # the worst stalls, as (ms, seconds after the click at which they ended)
    worst = sorted(zip(probe.samples, probe.at, strict=True), reverse=True)[:5]
    res["worst"] = [(ms, at - t_click) for ms, at in worst]
    res["marks"] = {k: v - t_click for k, v in t.items()
                    if k in ("model_loaded", "layers_ready", "first_tile", "returned")}
    res["first_tile_s"] = t["first_tile"] - t_click if "first_tile" in t else None
    res["done_s"] = (t["returned"] - t_click) if "returned" in t else None
    res["redraws"] = dict(getattr(seg, "redraws", {}))
    res["multiscale"] = bool(seg._live is not None and seg._live.multiscale)
    res["tiles_done"] = int(seg._progress_bar.value)
    res["tiles_total"] = int(seg._progress_bar.max)
    if not h.done:
        seg.cancel()
    pump(lambda: h.done and seg._run_button.enabled, 300)
    pump(lambda: False, 1.0)
    viewer.close()
    return res


def level0_shape_of(image: Any) -> tuple[int, int]:
    from napari_histo.plugin._result_layers import level0_shape

    return level0_shape(image)


def _stall_row(name: str, s: dict[str, float]) -> str:
    return (f"{name:<34} p50 {s['p50']:7.1f} ms  p99 {s['p99']:7.1f} ms  "
            f"max {s['max']:8.1f} ms  (n={s['n']})")


def main_real_slide(args: argparse.Namespace) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_gui_slide_"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_HISTO_HOME", str(out / "home"))
    slide = _tiles_slide(args.slide, out) if args.slide.startswith("generated:") \
        else Path(args.slide)
    res = bench_real_slide(slide, Path(args.model), args.seconds, out)
    print(f"\nmachine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"slide {res['slide']} {res['shape'][1]} x {res['shape'][0]} px; whole-slide "
          f"prediction from the Segment widget while panning/zooming ({res['moves']} moves)")
    print("event-loop stalls (10 ms heartbeat lateness); targets p99 <= 50 ms, max <= 100 ms")
    print(_stall_row("pan/zoom only (floor)", res["floor"]))
    print(_stall_row("pan/zoom while predicting", res["during"]))
    ft, dn = res["first_tile_s"], res["done_s"]
    print(f"first visible tile: {'n/a' if ft is None else f'{ft:.2f} s'} after the click; "
          f"completion: {'not reached' if dn is None else f'{dn:.1f} s'} "
          f"[{res['tiles_done']}/{res['tiles_total']} tiles]")
    print("worst stalls (ms @ s after click): " + ", ".join(
        f"{ms:.0f} @ {at:.1f}" for ms, at in res["worst"]))
    print("widget marks (s after click): " + ", ".join(
        f"{k} {v:.1f}" for k, v in res["marks"].items()))
    if res["redraws"]:
        print(f"result layers: {'multiscale over the store' if res['multiscale'] else 'in memory'}"
              f"; live redraws {res['redraws'].get('done', 0)}, skipped (nothing landed in "
              f"view) {res['redraws'].get('skipped', 0)}")
    print(f"stall p50: {res['during']['p50']:.0f} ms")
    print(f"stall p99: {res['during']['p99']:.0f} ms")
    print(f"max stall: {res['during']['max']:.0f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16384, help="large slide side (px)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per latency phase")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--slide", default=None,
                   help="real-slide case: a slide file, or generated:SIDE (tissue tiles)")
    p.add_argument("--model", default=None, help="segmentation checkpoint for --slide")
    args = p.parse_args(argv)
    if args.slide:
        if not args.model:
            p.error("--slide needs --model CKPT")
        if args.seconds == 20.0:
            args.seconds = 240.0
        return main_real_slide(args)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_gui_"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_HISTO_HOME", str(out / "home"))
    import napari

    from napari_histo.io.synthetic import write_synthetic_slide

    slide = out / f"large_{args.size}.tif"
    if not slide.is_file():
        t0 = time.perf_counter()
        write_synthetic_slide(slide, shape=(args.size, args.size), levels=6, mpp=0.5,
                              compression="jpeg", with_mask=False)
        print(f"wrote {slide.name} in {time.perf_counter() - t0:.1f} s")
    ckpt = _checkpoint(out, "unet-tiny")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    pump(lambda: False, 1.0)
    probe = LatencyProbe()
    probe.start()
    pump(lambda: False, 3.0)
    idle = probe.stop()
    train = bench_training(viewer, args.seconds, out)
    pred = bench_predict(viewer, slide, ckpt, args.seconds)
    brush = bench_brush(viewer, pred["segment"], pred["image"])
    viewer.close()

    def row(name: str, s: dict[str, float]) -> str:
        return (f"{name:<28} p50 {s['p50']:6.1f} ms  p95 {s['p95']:6.1f} ms  max {s['max']:7.1f} ms"
                f"  (n={s['n']})  p95/target {s['p95'] / TARGET_LATENCY_MS:.2f}")

    print(f"\nmachine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print("Qt event-loop latency (10 ms timer lateness), target p95 < 50 ms")
    print(row("idle", idle))
    print(row(f"training ({train['epochs']} epochs)", train))
    print(row(f"predicting {args.size}^2 slide", pred["latency"])
          + f"  [{pred['tiles_done']}/{pred['tiles_total']} tiles]")
    print(f"first visible tile after model load: {pred['first_tile_s']:.3f} s "
          f"(target {TARGET_FIRST_TILE_S} s, ratio {pred['first_tile_s'] / TARGET_FIRST_TILE_S:.2f});"
          f" whole view {pred['whole_view_s']:.2f} s for {pred['view_px']} px "
          f"(first tile = {pred['first_tile_s'] / pred['whole_view_s']:.2f} of it)")
    print(f"click to first tile (incl. model load + warm-up): {pred.get('click_to_first_tile_s', float('nan')):.3f} s")
    if "first_tile_stages_s" in pred:
        print("  first tile, stages (median s): " + ", ".join(
            f"{k} {v:.3f}" for k, v in pred["first_tile_stages_s"].items()))
    print(f"brush dab (40 px) on a {brush['window_shape']} correction window: "
          f"p50 {brush['dab_p50_ms']:.1f} ms, p95 {brush['dab_p95_ms']:.1f} ms "
          f"(p95/frame {brush['dab_p95_ms'] / FRAME_MS:.2f}); autosave write-through of one "
          f"stroke {brush['autosave_ms']:.1f} ms (median of 10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
