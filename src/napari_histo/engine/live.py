"""Live segmentation runs for a viewer: stream finished tiles while a slide is predicted.

The Segment and Patch heatmap dock widgets (and the Train widget's per-epoch preview) run
these jobs in a worker thread; nothing here knows napari. A :class:`SegmentRequest` (plain
data) goes in; :func:`segment_job` loads the model, drives ``predict_slide`` (or
``predict_array`` for an in-memory image) and, through :class:`TileReader`, turns the
engine's per-block ``Progress`` events into :class:`StoreReady` (the output store exists:
lay out the layers) and :class:`TileReady` (a finished tile's foreground probability, read
back from the store in the worker, or only its box when the viewer shows the store itself:
:func:`shown_from_store`, :class:`StoreLevel`) events; it returns a :class:`SegmentOutcome`.
:func:`display_probability` is what a heatmap shows once the run is done.

This module sits outside :mod:`napari_histo.engine.inference` so that importing it (the dock
widgets do, when napari lists them) does not import torch; a run imports the inference
engine when it starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_histo.core.progress import Event, Message, Progress
from napari_histo.engine.store_view import (
    StoreLevel,
    forget_box,
    put_chunks,
    read_block_chunks,
    start_streaming,
    stop_streaming,
    store_levels,
)

__all__ = [
    "LIVE_MAX_SIDE",
    "SegmentOutcome",
    "SegmentRequest",
    "StoreLevel",
    "StoreReady",
    "TileReader",
    "TileReady",
    "display_probability",
    "forget_box",
    "foreground",
    "put_chunks",
    "preview_job",
    "segment_job",
    "shown_from_store",
    "start_streaming",
    "stop_streaming",
    "store_geometry",
    "store_levels",
    "warm_up",
]

#: longest side (px) of a prediction a viewer holds in memory (tiles pasted in as they land);
#: a larger one is shown from the start from its store's pyramid (:func:`store_levels`)
LIVE_MAX_SIDE = 2048


@dataclass(frozen=True)
class TileReady:
    """A finished piece of the prediction: foreground probability at ``box`` (output px).

    ``data`` is None for a store shown from its pyramid (:func:`shown_from_store`): nothing
    needs pasting; ``chunks`` then holds the store chunks the block changed on every level
    (decoded here, in the worker) for the viewer's chunk cache
    (:func:`napari_histo.engine.store_view.put_chunks`).
    """

    box: tuple[int, int, int, int]
    data: np.ndarray | None
    done: int = 0
    total: int = 0
    chunks: Any = None


@dataclass(frozen=True)
class SegmentRequest:
    """Everything one segmentation run needs (plain data; no napari objects)."""

    checkpoint: str
    cfg: Any  # InferenceConfig
    source: str | None = None  # slide file; None -> ``image`` is predicted in memory
    image: np.ndarray | None = None
    region: tuple[int, int, int, int] | None = None  # level-0 px box
    order_near: tuple[float, float] | None = None
    out_path: str | None = None
    device: str = "auto"
    image_offset: tuple[float, float] = (0.0, 0.0)  # level-0 px of ``image``'s top-left


@dataclass
class SegmentOutcome:
    """What a run returns: probabilities, where they sit, the labels, and the store on disk."""

    probability: Any  # (H, W) foreground probability (numpy or lazy) or list of levels
    downsample: tuple[float, float]
    offset_px: tuple[float, float]
    class_names: list[str]
    path: str | None = None
    complete: bool = True
    model_load_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def foreground(prob: Any) -> np.ndarray:
    """Foreground probability (H, W) float32 of (H, W) or (C, H, W) class probabilities."""
    arr = np.asarray(prob)
    if arr.ndim == 3:
        arr = arr[1] if arr.shape[0] == 2 else 1.0 - arr[0]
    return arr.astype(np.float32, copy=False)


@dataclass(frozen=True)
class StoreReady:
    """The prediction store exists: its output shape and placement on the slide."""

    path: str
    shape: tuple[int, int]
    downsample: tuple[float, float]  # level-0 px per output px
    origin_px: tuple[float, float]  # top-left of the output in level-0 px
    class_names: tuple[str, ...] = ()


def store_geometry(ev: StoreReady) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """A store's placement, normalised so an early layout and the store compare equal."""
    return (tuple(int(v) for v in ev.shape), tuple(round(float(v), 9) for v in ev.downsample),
            tuple(round(float(v), 6) for v in ev.origin_px))


def segment_job(req: SegmentRequest) -> Any:
    """Load the model, predict, and yield finished tiles; return a :class:`SegmentOutcome`.

    Runs in a worker thread. ``Progress`` events from the engine that carry a finished tile
    box are turned into :class:`TileReady` events holding that tile's probabilities, read back
    from the engine's output store in this (worker) thread so the GUI thread only pastes.
    """
    # torch is imported by the first run, not when a dock widget imports this module
    from napari_histo.engine.checkpoints import load_checkpoint_cached
    from napari_histo.engine.inference.predict import predict_array, predict_slide

    t0 = time.perf_counter()
    model = load_checkpoint_cached(req.checkpoint, device=req.device)
    warm_up(model)
    load_s = time.perf_counter() - t0
    yield Message(f"model loaded in {load_s:.2f} s", level="info")
    if req.source is None:
        if req.image is None:
            raise ValueError("segment_job needs a source slide or an image array")
        probs = yield from predict_array(req.image, model, batch_size=req.cfg.batch_size,
                                             stride=req.cfg.stride, context=req.cfg.context)
        fg = foreground(probs)
        ds = (req.image.shape[0] / fg.shape[0], req.image.shape[1] / fg.shape[1])
        return SegmentOutcome(fg, ds, req.image_offset, list(model.class_names),
                              model_load_s=load_s)
    gen = predict_slide(req.source, model, req.cfg, region=req.region,
                            order_near=req.order_near, out_path=req.out_path)
    reader = TileReader(req.out_path)
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            extra = reader.events_for(ev)
            if extra:
                yield from extra
            else:
                yield ev
    finally:
        gen.close()
    return SegmentOutcome(
        result.probabilities, (float(result.downsample[0]), float(result.downsample[1])),
        (float(result.origin_px[0]), float(result.origin_px[1])),
        list(result.class_names or model.class_names),
        path=str(result.path) if result.path else None, complete=bool(result.complete),
        model_load_s=load_s, extra={"skipped_tiles": result.skipped_tiles,
                                    "failed_tiles": int(result.failed_tiles),
                                    "failed_boxes": [list(b) for b in result.failed_boxes]})


def warm_up(model: Any) -> None:
    """One tiny forward pass so the first real tile does not pay the backend's setup cost."""
    pre = model.preprocessing or {}
    size = 64 if model.task == "segment" else int(pre.get("context_size") or
                                                   pre.get("patch_size") or 96)
    try:
        model.predict_proba(np.zeros((1, size, size, 3), dtype=np.uint8))
    except RuntimeError:  # an odd input size for this network: the real run reports problems
        pass


class TileReader:
    """Reads finished tiles back from the prediction store named in Progress events."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._prob: Any = None
        self._levels: list[Any] = []
        self._scale = 1.0

    def events_for(self, ev: Event) -> list[Any]:
        """What the GUI gets instead of ``ev``: StoreReady / TileReady events, or [] (pass
        ``ev`` on as it is)."""
        if not isinstance(ev, Progress) or self.path is None:
            return []
        if ev.store is not None:  # announced before the first batch: the GUI builds the layers
            return self._open() if self._prob is None else []
        box = ev.box
        if box is None:
            return []
        out: list[Any] = self._open() if self._prob is None else []
        if shown_from_store(self._prob.shape[-2:]):
            out.append(TileReady(box, None, ev.done, ev.total,
                                 chunks=read_block_chunks(self._levels, box)))
            return out
        data = np.asarray(self._prob[..., box[0]:box[2], box[1]:box[3]]).astype(np.float32)
        if self._scale != 1.0:
            data *= self._scale
        out.append(TileReady(box, foreground(data), ev.done, ev.total))
        return out

    def _open(self) -> list[Any]:
        """Open the store; one :class:`StoreReady` event describing it."""
        from napari_histo.engine.inference.writer import open_prediction

        assert self.path is not None  # events_for asks only with a store
        prob, _, meta = open_prediction(self.path)
        self._prob = prob
        import zarr

        group: Any = zarr.open_group(self.path, mode="r")  # members read as Any
        self._levels = []
        while str(len(self._levels)) in group:
            self._levels.append(group[str(len(self._levels))])
        self._scale = 1.0 / 255.0 if str(prob.dtype) == "uint8" else 1.0
        h, w = (int(s) for s in prob.shape[-2:])
        dy, dx = (float(v) for v in meta.get("downsample") or (1, 1))
        oy, ox = (float(v) for v in meta.get("origin_px") or (0, 0))
        return [StoreReady(self.path, (h, w), (dy, dx), (oy, ox),
                           tuple(meta.get("class_names") or ()))]


def shown_from_store(shape: tuple[int, ...] | Any) -> bool:
    """Whether a streamed prediction of ``shape`` (output px) is shown lazily from its store's
    pyramid (:func:`store_levels`) rather than pasted tile by tile into an in-memory array:
    anything larger than :data:`LIVE_MAX_SIDE` a side."""
    return max(int(v) for v in tuple(shape)[-2:]) > LIVE_MAX_SIDE


def display_probability(out: SegmentOutcome, max_side: int = LIVE_MAX_SIDE) -> Any:
    """What the heatmap layer shows: numpy for small results, the store's pyramid otherwise."""
    prob = out.probability
    if isinstance(prob, np.ndarray):
        return prob.astype(np.float32, copy=False)
    shape = tuple(int(s) for s in prob.shape[-2:])
    if shape[0] * shape[1] <= max_side * max_side or not out.path:
        arr = np.asarray(prob).astype(np.float32)
        if str(prob.dtype) == "uint8":
            arr /= 255.0
        return foreground(arr)
    import dask.array as da
    import zarr

    group: Any = zarr.open_group(out.path, mode="r")  # Array or Group members: read as Any
    levels = []
    k = 0
    while str(k) in group:
        lv = da.from_zarr(group[str(k)]).astype(np.float32)
        if str(group[str(k)].dtype) == "uint8":
            lv = lv / 255.0
        if lv.ndim == 3:
            lv = lv[1] if lv.shape[0] == 2 else 1.0 - lv[0]
        levels.append(lv)
        k += 1
    return levels if len(levels) > 1 else levels[0]


def preview_job(checkpoint: str, image: np.ndarray) -> Any:
    """Predict a small preview crop with a checkpoint; return the foreground probability."""
    from napari_histo.engine.checkpoints import load_checkpoint
    from napari_histo.engine.inference.predict import predict_array

    model = load_checkpoint(checkpoint, device="cpu")
    probs = yield from predict_array(image, model)
    arr = np.asarray(probs)
    if arr.ndim == 3:
        arr = arr[1] if arr.shape[0] == 2 else 1.0 - arr[0]
    return arr.astype(np.float32)
