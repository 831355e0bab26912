"""Segment dock widget: run a checkpoint on the current view, a drawn box, or the whole slide.

The widget builds an :class:`~napari_histo.engine.inference.InferenceConfig` and a
:class:`~napari_histo.engine.live.SegmentRequest`, runs
:func:`~napari_histo.engine.live.segment_job` (a generator driving the engine's
``predict_slide`` / ``predict_array``) in a thread worker, and turns what comes back into a
heatmap Image + Labels pair (:mod:`napari_histo.plugin._result_layers`). Tiles land on screen
as they finish: the job reads each finished tile back from the prediction store and yields it;
the GUI pastes it into the layer. A whole-slide run larger than ``LIVE_MAX_SIDE`` streams into
OME-Zarr on disk and is shown lazily from there from the start: multiscale layers over every
level of the store being written (the writer downsamples each block into the lower levels),
refreshed (visible tiles only) when a finished block is in view, and kept as they are when
the run ends (issue 11). Entry point: :class:`SegmentWidget`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSlider,
    ProgressBar,
    PushButton,
)

from napari_histo.core import settings
from napari_histo.core.progress import Message, Progress
from napari_histo.engine.live import (
    LIVE_MAX_SIDE,
    SegmentOutcome,
    SegmentRequest,
    StoreReady,
    TileReady,
    display_probability,
    forget_box,
    put_chunks,
    segment_job,
    shown_from_store,
    start_streaming,
    stop_streaming,
    store_geometry,
    store_levels,
)
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._jobs import rgb_crop
from napari_histo.plugin._widget_base import DockWidget, StatusLine
from napari_histo.plugin._workers import TaskHandle

if TYPE_CHECKING:
    import napari

# The job and its events (SegmentRequest, segment_job, TileReady, StoreReady, ...) live in
# napari_histo.engine.live.
__all__ = [
    "SegmentWidget",
    "recent_checkpoints",
    "remember_checkpoint",
    "user_dir",
]

TARGETS = ("current view", "shapes region", "whole slide")
#: s; at most one redraw of the live layers per REDRAW_S (more when a redraw is slow: see
#: REDRAW_SHARE), and at most one progress/status text update per PROGRESS_S
REDRAW_S = 0.25
#: a redraw may take at most this share of the GUI thread's time while tiles stream in
REDRAW_SHARE = 0.15
PROGRESS_S = 0.1
_RECENT_FILE = "recent_checkpoints.json"
_MAX_RECENT = 8


# ------------------------------------------------------------------ user files


def user_dir() -> Path:
    """Per-user napari-histo folder (``NAPARI_HISTO_HOME`` or ``~/.cache/napari-histo``),
    created (:func:`napari_histo.core.settings.home_dir`)."""
    return settings.home_dir(create=True)


def recent_checkpoints() -> list[str]:
    """Recently used checkpoint files that still exist, newest first."""
    try:
        items = json.loads((user_dir() / _RECENT_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [p for p in items if isinstance(p, str) and Path(p).is_file()][:_MAX_RECENT]


def remember_checkpoint(path: str | Path) -> None:
    """Put ``path`` first in the recently-used list (atomic rewrite)."""
    p = str(Path(path).resolve())
    items = [p] + [q for q in recent_checkpoints() if q != p]
    target = user_dir() / _RECENT_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(items[:_MAX_RECENT]))
    os.replace(tmp, target)


# ------------------------------------------------------------------ the widget

#: modules the first result layers import on the GUI thread (napari's Labels pulls pandas
#: in for its features table; the store-backed layers read through zarr): ~1 s of imports
#: on a loaded 2-core machine, a stall when the first run lays out its layers (issue 11)
_WARM_MODULES = ("pandas", "zarr", "numcodecs.blosc", "napari.layers.labels.labels")
_warm_started = False


def _warm_imports() -> None:
    """Import :data:`_WARM_MODULES` in a background thread, once per process.

    Import work in a worker thread leaves the GUI thread free (the GIL switches every few
    ms), where importing them at the first layer would freeze it for the whole import.
    """
    global _warm_started
    if _warm_started:
        return
    _warm_started = True
    import importlib
    import sys
    import threading

    def _run() -> None:
        for name in _WARM_MODULES:
            if name not in sys.modules:
                try:
                    importlib.import_module(name)
                except Exception:  # an optional module missing: the layer imports it anyway
                    pass

    threading.Thread(target=_run, name="napari-histo-warm-imports", daemon=True).start()



#: what to say when a checkpoint of the other task is given to a widget
_WRONG_TASK = {
    "classify": ("{name} is a patch classifier checkpoint: run it in the Patch heatmap widget "
                 "(Plugins > napari-histo > Patch heatmap); Segment runs segmentation "
                 "checkpoints"),
    "segment": ("{name} is a segmentation checkpoint: run it in the Segment widget "
                "(Plugins > napari-histo > Segment); Patch heatmap runs patch classifier "
                "checkpoints"),
}


class SegmentWidget(DockWidget):
    """Dock widget: image layer + checkpoint + target -> heatmap and labels layers."""

    #: the checkpoint task this widget runs ("segment"; the Patch heatmap's is "classify")
    task = "segment"
    progress_unit = "tiles"
    #: tag of this widget's result layers (a rerun replaces them, see rl.drop_previous_results)
    result_owner = "segment"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self._image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._ckpt_edit = FileEdit(label="checkpoint", mode=FileDialogMode.EXISTING_FILE, filter="*.pt")
        self._recent_combo = ComboBox(label="recent", choices=self._recent_choices, nullable=True)
        self._target_combo = ComboBox(label="target", choices=TARGETS, value=TARGETS[0])
        self._shapes_combo = ComboBox(label="region", choices=self._shapes_choices, nullable=True)
        self._device_combo = ComboBox(label="device", choices=("auto", "cpu", "cuda"), value="auto")
        self._ngff_combo = ComboBox(label="OME-Zarr", choices=("0.4", "0.5"), value="0.4",
                                    tooltip="NGFF version of the prediction store: 0.4 (zarr "
                                            "v2, most viewers) or 0.5 (zarr v3)")
        self._threshold_slider = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01,
                                             value=0.5)
        self._opacity_slider = FloatSlider(label="heatmap opacity", min=0.0, max=1.0,
                                           step=0.05, value=0.5)
        self._run_button = PushButton(text="Segment")
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._progress_bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status_label = StatusLine()
        self.extend([
            self._image_combo, self._ckpt_edit, self._recent_combo, self._target_combo,
            self._shapes_combo, self._device_combo, self._ngff_combo, self._threshold_slider,
            self._opacity_slider, self._run_button, self._cancel_button, self._progress_bar,
            self._status_label,
        ])
        self.result: rl.PredictionLayers | None = None
        self.timings: dict[str, float] = {}
        self._live: rl.PredictionLayers | None = None
        self._live_geometry: tuple[Any, ...] | None = None
        #: output boxes landed since the last redraw of a store-backed (multiscale) layer
        self._landed: list[tuple[int, int, int, int]] = []
        self._live_store = ""  # the store the live layers read (store-backed layers)
        #: how many redraws re-read the store-backed layers / were skipped (nothing in view)
        self.redraws = {"done": 0, "skipped": 0}
        from qtpy.QtCore import QTimer

        self._last_redraw = 0.0
        self._redraw_interval = REDRAW_S
        self._redraw_timer = QTimer()
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._redraw_now)
        # progress text: the latest (done, total), shown at most every PROGRESS_S
        self._last_progress = 0.0
        self._pending_progress: tuple[int, int] | None = None
        self._progress_timer = QTimer()
        self._progress_timer.setSingleShot(True)
        self._progress_timer.timeout.connect(self._progress_now)
        #: how many times the progress bar/status text was updated during the last run
        self.progress_updates = 0
        self._pending_layers: dict[str, Any] = {}
        self._run_button.changed.connect(self._on_run)
        self._cancel_button.changed.connect(self.cancel)
        self._recent_combo.changed.connect(self._on_recent)
        self._threshold_slider.changed.connect(self._on_threshold)
        self._opacity_slider.changed.connect(self._on_opacity)
        self._dock_ready()
        _warm_imports()
        recent = recent_checkpoints()
        if recent:
            self._ckpt_edit.value = recent[0]  # type: ignore[assignment]  # magicgui takes str

    # ---------------------------------------------------------------- choices
    def _recent_choices(self, *_: Any) -> list[tuple[str, str]]:
        # "run-folder/best.pt": every run writes a best.pt, and a combo needs distinct labels
        return [(f"{Path(p).parent.name}/{Path(p).name}", p) for p in recent_checkpoints()]

    # ---------------------------------------------------------------- public API
    def set_checkpoint(self, path: str | Path) -> None:
        """Use ``path`` for the next run (e.g. "Use this model" from the Train widget)."""
        self._ckpt_edit.value = Path(path)
        remember_checkpoint(path)
        self._recent_combo.reset_choices()
        resolved = str(Path(path).resolve())
        if resolved in [v for _, v in self._recent_choices()]:
            try:
                self._recent_combo.value = resolved
            except ValueError:  # not offered (yet): the file field already holds it
                pass

    def cancel(self, *_: Any) -> None:
        """Stop the running prediction after its current tile batch."""
        self._cancel("cancelling...")

    def run(self, target: str | None = None) -> TaskHandle | None:
        """Start segmenting ``target`` (default: the target combo); returns the task."""
        if target is not None:
            self._target_combo.value = target
        if self._busy("a prediction is already running; cancel it first"):
            return None
        try:
            req, image_layer, placement = self._to_request()
        except ValueError as err:
            self._show_error(err)
            return None
        remember_checkpoint(req.checkpoint)
        self._start(req, image_layer, placement)
        return self.handle

    # ---------------------------------------------------------------- building the request
    def _to_request(self) -> tuple[SegmentRequest, Any, dict[str, Any]]:
        from napari_histo.engine.inference.config import InferenceConfig

        image_layer = self._image_combo.value
        if image_layer is None:
            raise ValueError("choose an image layer to segment (open a slide first)")
        ckpt = str(self._ckpt_edit.value or "")
        if not ckpt or not Path(ckpt).is_file():
            raise ValueError(f"choose a model checkpoint (.pt) file; {ckpt or 'none'} not found")
        self._check_task(ckpt)
        target = self._target_combo.value
        shape0 = rl.level0_shape(image_layer)
        if target == "current view":
            region = rl.visible_box(self._viewer, image_layer)
            if region is None:
                raise ValueError(f"{image_layer.name} is not in view; pan to it or zoom out")
        elif target == "shapes region":
            region = rl.shapes_box(self._shapes_combo.value, image_layer)
            if region is None:
                raise ValueError("draw a rectangle or polygon in a Shapes layer and pick it "
                                 "as the region")
        else:
            region = None
        source = rl.image_layer_source(image_layer)
        threshold = float(self._threshold_slider.value)
        whole = region is None
        if whole:
            region = (0, 0, shape0[0], shape0[1])
        assert region is not None
        order_near = ((region[0] + region[2]) / 2.0, (region[1] + region[3]) / 2.0)
        if whole:
            vb = rl.visible_box(self._viewer, image_layer)
            if vb is not None:
                order_near = ((vb[0] + vb[2]) / 2.0, (vb[1] + vb[3]) / 2.0)
        cfg_kw: dict[str, Any] = {"threshold": threshold, "device": self._device_combo.value}
        if source is not None:
            cfg_kw.update(self._resolution_for(source, image_layer))
            out_dir = settings.predictions_dir()
            out_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out_path = str(out_dir / f"{Path(source).stem}-{stamp}-{os.getpid()}-"
                                      f"{int(time.monotonic() * 1000) % 100000}.ome.zarr")
            cfg_kw["tissue_only"] = whole
            cfg_kw["ngff_version"] = self._ngff_combo.value
            if not whole:  # small blocks, small batches: the first tile shows up sooner
                cfg_kw.update(block_tiles=1, batch_size=2)
            cfg_kw.update(self._extra_cfg(whole))
            req = SegmentRequest(checkpoint=ckpt, cfg=InferenceConfig(**cfg_kw), source=source,
                                 region=None if whole else region, order_near=order_near,
                                 out_path=out_path, device=self._device_combo.value)
        else:
            y0, x0, y1, x1 = region
            cfg_kw.update(self._extra_cfg(whole))
            req = SegmentRequest(checkpoint=ckpt, cfg=InferenceConfig(**cfg_kw), source=None,
                                 image=rgb_crop(image_layer, region),
                                 device=self._device_combo.value,
                                 image_offset=(float(y0), float(x0)))
        placement = {"region": region, "whole": whole, "target": target}
        return req, image_layer, placement

    def _check_task(self, ckpt: str) -> None:
        """Refuse a checkpoint of the other task (read from its metadata, no model built)."""
        from napari_histo.engine.checkpoint_meta import checkpoint_task

        found = checkpoint_task(ckpt)
        if found is not None and found != self.task:
            raise ValueError(_WRONG_TASK[found].format(name=Path(ckpt).name))

    def _extra_cfg(self, whole: bool) -> dict[str, Any]:
        """More InferenceConfig options (the patch-heatmap widget adds stride/context)."""
        return {}

    @staticmethod
    def _resolution_for(source: str, image_layer: Any = None) -> dict[str, Any]:
        """Slides without a pixel size: the one set in the Pixel size widget (the layer's
        scale in um), else level 0 as is, said in one notification."""
        try:
            from napari_histo.io.slide import open_slide

            with open_slide(source) as slide:
                if slide.mpp is not None:
                    return {}
                name = slide.name
        except Exception:  # the engine reports unreadable files itself
            return {}
        from napari_histo.plugin._writer import layer_mpp

        mpp = None
        if image_layer is not None:
            mpp = layer_mpp({"scale": tuple(image_layer.scale),
                             "units": tuple(str(u) for u in image_layer.units)})
        if mpp is not None:
            return {"slide_mpp": float(mpp[1])}
        from napari.utils.notifications import show_warning

        show_warning(f"{name} has no pixel size: Segment runs on its level 0 as is, whatever "
                     "the model's resolution. Set its um per pixel in Plugins > napari-histo > "
                     "Pixel size to run at the model's resolution.")
        return {"level": 0}

    # ---------------------------------------------------------------- running
    def _start(self, req: SegmentRequest, image_layer: Any, placement: dict[str, Any]) -> None:
        _write_card(req)  # ~1 ms, before the worker starts: the run's timings are unchanged
        self._live = None
        self._live_geometry = None
        self._landed = []
        self._live_store = ""
        self.redraws = {"done": 0, "skipped": 0}
        self._last_redraw = 0.0
        self._redraw_interval = REDRAW_S
        self._last_progress = 0.0
        self._pending_progress = None
        self.progress_updates = 0
        self._pending_layers = {"image_layer": image_layer, "placement": placement, "req": req}
        self.timings = {"start": time.perf_counter()}
        self._run_button.enabled = False
        self._cancel_button.enabled = True
        self._progress_bar.max = 1
        self._progress_bar.value = 0
        self._status_label.value = "loading model..."
        self._run_task(segment_job, req, on_event=self._on_event,
                       on_returned=self._on_returned, on_finished=self._on_finished,
                       desc=f"segment {image_layer.name}")
        self._lay_out_early(req)

    def _lay_out_early(self, req: SegmentRequest) -> None:
        """Create the live layers now, while the worker starts, when the model is known.

        napari takes ~0.2-0.4 s to add two layers; done here it overlaps the model's first
        batch instead of following it. Needs the model already loaded once (its resolution
        fixes the output geometry); otherwise the layers follow the store as before.
        """
        from napari_histo.core.errors import HistoError
        from napari_histo.engine.checkpoints import cached_model
        from napari_histo.engine.inference import output_geometry

        if req.source is None or req.out_path is None:
            return
        model = cached_model(req.checkpoint, req.device)
        if model is None:
            return
        try:
            shape, down, origin = output_geometry(req.source, model, req.cfg, region=req.region)
        except (HistoError, OSError, ValueError):
            return  # the run itself reports what is wrong
        self._on_event(StoreReady(req.out_path, shape, down, origin, tuple(model.class_names)))

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Message):
            if ev.text.startswith("model loaded"):
                self.timings["model_loaded"] = time.perf_counter()
            self._status_label.value = ev.text
            return
        if isinstance(ev, StoreReady):
            geometry = store_geometry(ev)
            if self._live is not None and geometry == self._live_geometry:
                return  # laid out early, and the store agrees
            if self._live is not None:  # laid out early with another geometry: redo
                self._drop_live_layers()
            self.timings.setdefault("store_ready", time.perf_counter())
            self._make_live_layers(ev)
            self._live_geometry = geometry
            self.timings.setdefault("layers_ready", time.perf_counter())
            return
        if isinstance(ev, TileReady):
            if self._live is not None and ev.data is None:  # shown from the store
                if ev.chunks is not None:  # decoded by the worker: no read here
                    put_chunks(self._live_store, ev.chunks)
                else:
                    forget_box(self._live_store, ev.box)  # before any re-slice reads it
                self._landed.append(ev.box)
                self._request_redraw()
            elif self._live is not None and ev.data is not None:
                self._live.paste(ev.box, ev.data, redraw=False)
                self._request_redraw()
            done, total = ev.done, ev.total
        elif isinstance(ev, Progress):
            done, total = ev.done, ev.total
        else:
            return
        if total:
            self._request_progress(int(done), int(total))

    def _request_progress(self, done: int, total: int) -> None:
        """Show ``done/total`` now if the last update is old enough, else coalesce it.

        A whole slide yields hundreds of tile events a second; each progress bar or label
        change costs the GUI thread a repaint, so only the latest value is shown, at most
        once per ``PROGRESS_S`` (and the last one always, see :meth:`_progress_now`).
        """
        self._pending_progress = (done, total)
        now = time.perf_counter()
        if now - self._last_progress >= PROGRESS_S or done >= total:
            self._progress_timer.stop()
            self._progress_now()
        elif not self._progress_timer.isActive():
            self._progress_timer.start(int(1000 * (PROGRESS_S - (now - self._last_progress))) + 1)

    def _progress_now(self) -> None:
        if self._pending_progress is None:
            return
        done, total = self._pending_progress
        self._pending_progress = None
        self._last_progress = time.perf_counter()
        self.progress_updates += 1
        self._show_progress(done, total)
        self._status_label.value = f"{done}/{total} tiles"

    def _request_redraw(self) -> None:
        """Redraw now if the last redraw is old enough, else once the interval has passed.

        Every redraw re-slices the layers and re-uploads their textures (work proportional
        to the live buffer, not the slide: at most ``LIVE_MAX_SIDE`` px a side); coalescing
        tiles to at most one redraw per interval keeps the event loop free while a whole
        slide streams in. The interval grows when a redraw is slow (``REDRAW_SHARE``).
        """
        now = time.perf_counter()
        interval = self._redraw_interval
        if now - self._last_redraw >= interval:
            self._redraw_now()
        elif not self._redraw_timer.isActive():
            self._redraw_timer.start(int(1000 * (interval - (now - self._last_redraw))) + 1)

    def _redraw_now(self) -> None:
        if self._live is None:
            return
        if self._live.multiscale and not self._landed_in_view():
            self.redraws["skipped"] += 1
            return
        t0 = time.perf_counter()
        self.redraws["done"] += 1
        self._live.redraw()
        self._last_redraw = time.perf_counter()
        self._redraw_interval = max(REDRAW_S, (self._last_redraw - t0) / REDRAW_SHARE)
        self.timings.setdefault("first_tile", self._last_redraw)

    def _landed_in_view(self) -> bool:
        """Whether a block landed since the last redraw is on screen (then clear the list).

        A store-backed layer re-reads what it shows from the store when napari re-slices it
        (panning, zooming), so blocks landing off screen need no redraw at all.
        """
        landed, self._landed = self._landed, []
        if not landed or self._live is None:
            return False
        view = rl.visible_box(self._viewer, self._live.heatmap)
        if view is None:
            return False
        vy0, vx0, vy1, vx1 = view
        return any(y0 < vy1 and vy0 < y1 and x0 < vx1 and vx0 < x1
                   for y0, x0, y1, x1 in landed)

    def _make_live_layers(self, ev: StoreReady) -> None:
        """Layers over the store's extent, filled as blocks land.

        Up to ``LIVE_MAX_SIDE`` px a side: numpy arrays the tiles are pasted into (kept when
        the run ends). Larger: multiscale layers reading every level of the store on demand
        (:func:`~napari_histo.engine.live.store_levels`; the writer fills the lower levels
        block by block), so the GUI thread only ever reads the visible pixels at the shown
        level, and the same layers stay when the run ends (no swap).
        """
        image_layer = self._pending_layers["image_layer"]
        req: SegmentRequest = self._pending_layers["req"]
        data: Any
        self._live_store = ev.path
        if shown_from_store(ev.shape):
            start_streaming(ev.path)
            data = store_levels(ev.path, (int(ev.shape[0]), int(ev.shape[1])))
        else:
            data = np.zeros(tuple(int(v) for v in ev.shape), dtype=np.float32)
        self._live = rl.add_prediction_layers(
            self._viewer, image_layer, data,
            downsample=ev.downsample, offset_px=ev.origin_px,
            threshold=float(self._threshold_slider.value),
            opacity=float(self._opacity_slider.value), class_names=list(ev.class_names),
            owner=self.result_owner,
            metadata={"source": req.source, "checkpoint": req.checkpoint, "store": ev.path,
                      "live": True, "region": list(self._pending_layers["placement"]["region"]),
                      "downsample_px": list(ev.downsample), "origin_px": list(ev.origin_px)},
            live=True)
        self.result = self._live

    def _on_returned(self, out: SegmentOutcome) -> None:
        info = self._pending_layers
        image_layer = info["image_layer"]
        self.timings["returned"] = time.perf_counter()
        meta = {"source": info["req"].source, "checkpoint": info["req"].checkpoint,
                "store": out.path, "complete": out.complete,
                "region": list(info["placement"]["region"]),
                "downsample_px": list(out.downsample), "origin_px": list(out.offset_px),
                "failed_tiles": int(out.extra.get("failed_tiles") or 0),
                "failed_boxes": list(out.extra.get("failed_boxes") or [])}
        if meta["failed_tiles"]:
            from napari.utils.notifications import show_warning

            show_warning(f"{meta['failed_tiles']} slide tile(s) could not be decoded; their "
                         "area of the prediction is unreliable (layer metadata: failed_boxes)")
        self._progress_timer.stop()
        self._progress_now()
        if self._live is not None:
            self._redraw_timer.stop()
        if self._live is not None:
            # every tile is already on screen (pasted, or in the store the layers read)
            for layer in (self._live.heatmap, self._live.labels):
                layer.metadata["napari_histo"].update(meta, live=False)
            self._live.finish_live()
            self.timings.setdefault("first_tile", time.perf_counter())
            self.result = self._live
            return
        prob = display_probability(out, LIVE_MAX_SIDE)
        self.result = rl.add_prediction_layers(
            self._viewer, image_layer, prob, downsample=out.downsample,
            offset_px=out.offset_px, threshold=float(self._threshold_slider.value),
            opacity=float(self._opacity_slider.value), class_names=out.class_names,
            metadata=meta, owner=self.result_owner)
        self._live = self.result
        self.timings.setdefault("first_tile", time.perf_counter())

    def _drop_live_layers(self) -> None:
        """Remove this run's live layers (ours, never the user's) from the viewer."""
        if self._live is not None:
            for layer in (self._live.heatmap, self._live.labels):
                if layer in self._viewer.layers:
                    self._viewer.layers.remove(layer)
        self._live = None

    def _on_finished(self) -> None:
        """Buttons back; the base then sets the end state (done / cancelled / failed)."""
        if self._live_store:  # no more blocks: chunks not cached are read from the store
            stop_streaming(self._live_store)
        if self._redraw_timer.isActive():  # cancelled or failed: show the tiles that landed
            self._redraw_timer.stop()
            self._redraw_now()
        self._progress_timer.stop()
        self._pending_progress = None
        self._run_button.enabled = True
        self._cancel_button.enabled = False
        t = self.timings
        if self._outcome() == "done" and "first_tile" in t and "model_loaded" in t:
            self._status_label.value = (
                f"done; first tile {t['first_tile'] - t['model_loaded']:.2f} s after load")

    def _on_threshold(self, value: float) -> None:
        if self.result is not None:
            self.result.set_threshold(float(value))

    def _on_opacity(self, value: float) -> None:
        if self.result is not None:
            self.result.heatmap.opacity = float(value)

    def _on_run(self, *_: Any) -> None:
        self.run()

    def _on_recent(self, value: str | None) -> None:
        if value:
            self._ckpt_edit.value = Path(value)


def _write_card(req: SegmentRequest) -> None:
    """``NAME.run_card.yaml`` beside the prediction: its config and ``napari-histo predict``."""
    from napari_histo.engine.run_card import write_segment_card

    try:
        write_segment_card(req)
    except OSError as err:  # a card that cannot be written never stops the prediction
        import logging

        logging.getLogger(__name__).warning("could not write the run card: %s", err)
