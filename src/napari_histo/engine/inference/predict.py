"""Prediction entry points: arrays, slides and regions, segmentation and patch heatmaps.

``predict_array`` runs an in-memory image; ``predict_slide`` a slide (or a region of it) at
the model's resolution, in memory or streamed into an OME-Zarr store that can be resumed;
``predict_heatmap`` is ``predict_slide`` for patch classifiers with stride/context options.
All are generators (Task): they yield Progress/Message events and return the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Message, Progress, Task
from napari_histo.engine.checkpoints import LoadedModel
from napari_histo.engine.inference._model import Runner, as_loaded
from napari_histo.engine.inference._pipeline import RunStats, plan_jobs, run_blocks
from napari_histo.engine.inference._plan import HeatmapPlan, Plan, SegmentPlan
from napari_histo.engine.inference._source import (
    ArraySource,
    Resolution,
    SlideSource,
    resolve_resolution,
)
from napari_histo.engine.inference.config import InferenceConfig
from napari_histo.engine.inference.context import (
    ModelInput,
    PointOrBox,
    Region,
    SlideInput,
    SlideLike,
    SlideRun,
)
from napari_histo.engine.inference.failures import (
    segments_from_meta,
    segments_to_meta,
    summarise_failures,
)
from napari_histo.engine.inference.identity import run_identity
from napari_histo.engine.inference.writer import (
    MemorySink,
    StoreLock,
    ZarrSink,
    check_resume,
    discard_store,
    open_prediction,
    prepare_output,
)
from napari_histo.engine.tiling import order_blocks

if TYPE_CHECKING:
    from napari_histo.io.slide import Slide

__all__ = ["PredictionResult", "output_geometry", "predict_array", "predict_heatmap",
           "predict_slide"]

Box = tuple[int, int, int, int]
#: longest side of the thumbnail the tissue mask is computed on (>= 1024: a mask pixel is
#: at most ~1/100 of the slide, far finer than a tile; bounded, so memory stays flat)
TISSUE_MAX_SIDE = 1024


@dataclass
class PredictionResult:
    """A finished (or partial) prediction.

    ``probabilities``: (H, W) positive-class probability for binary models, (C, H, W)
    otherwise (numpy in memory, zarr arrays when streamed; uint8 stores hold 255 p).
    ``labels``: (H, W) uint8 (threshold or argmax). ``mpp``: output um/px (y, x) or None.
    ``origin_um``: top-left corner of the output in slide microns (level-0 px if no mpp).
    ``downsample``: level-0 px per output px; ``origin_px``: top-left in level-0 px.
    ``translate``: napari ``translate`` (pixel-centre convention) that overlays the output on
    a slide layer shown with ``scale = slide mpp`` (or 1 when no mpp).
    """

    path: Path | None
    probabilities: Any
    labels: Any
    mpp: tuple[float, float] | None
    origin_um: tuple[float, float]
    complete: bool
    skipped_tiles: int
    total_tiles: int = 0
    failed_tiles: int = 0
    failed_boxes: list[Box] = field(default_factory=list)
    task: str = "segment"
    class_names: list[str] = field(default_factory=list)
    downsample: tuple[float, float] = (1.0, 1.0)
    origin_px: tuple[float, float] = (0.0, 0.0)
    source: str | None = None
    stats: RunStats | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """napari ``scale`` of the output: um/px, or level-0 px per px without mpp."""
        return self.mpp if self.mpp else self.downsample

    @property
    def translate(self) -> tuple[float, float]:
        """napari ``translate`` aligning output pixel centres with the slide's."""
        unit = (self.mpp[0] / self.downsample[0], self.mpp[1] / self.downsample[1]) if self.mpp \
            else (1.0, 1.0)
        return ((self.origin_px[0] + (self.downsample[0] - 1) / 2) * unit[0],
                (self.origin_px[1] + (self.downsample[1] - 1) / 2) * unit[1])


# ------------------------------------------------------------------------------ planning


def _plan_for(task: str, shape_work: tuple[int, int], loaded: LoadedModel, cfg: InferenceConfig,
              num_classes: int) -> Plan:
    pre = loaded.preprocessing or {}
    if task == "segment":
        tile = int(cfg.tile or max(int(pre.get("patch_size") or 256), 256))
        overlap = cfg.overlap if cfg.overlap is not None else (tile // 4) // 2 * 2
        if overlap >= tile:
            raise ConfigError(f"overlap {overlap} must be smaller than tile {tile}")
        return SegmentPlan(shape_work, 0, num_classes, tile=tile, overlap=overlap,
                           block_tiles=cfg.block_tiles)
    context = int(cfg.context or pre.get("context_size") or pre.get("patch_size") or 96)
    stride = int(cfg.stride or pre.get("center_size") or context)
    out = (math.ceil(shape_work[0] / stride), math.ceil(shape_work[1] / stride))
    cells = max(4, min(64, 2048 // stride))
    return HeatmapPlan(out, 0, num_classes, stride=stride, context=context, block_cells=cells)


def _order(plan: Plan, near: Sequence[float] | None,
           to_out: Callable[[Sequence[float]], PointOrBox]) -> list[int]:
    blocks = plan.blocks()
    if near is None:
        return list(range(len(blocks)))
    q = to_out(near)
    return order_blocks(blocks, [plan.block_box(b) for b in blocks], q)


# ------------------------------------------------------------------------------ arrays


def predict_array(image: npt.NDArray[np.uint8], model: ModelInput, *, tile: int | None = None,
                  overlap: int | None = None, batch_size: int = 8, device: str = "auto",
                  stride: int | None = None, context: int | None = None,
                  ) -> Task[npt.NDArray[np.float32]]:
    """Class probabilities of an in-memory RGB image, float32 (C, H, W).

    Segmentation tiles are blended (one block covering the whole image); a patch classifier
    gives its (C, ceil(H/stride), ceil(W/stride)) heatmap. The image is assumed to be at the
    model's resolution. Yields a Progress per batch.
    """
    loaded = as_loaded(model, device)
    runner = Runner(loaded, batch_size)
    src = ArraySource(image)
    cfg = InferenceConfig(tile=tile, overlap=overlap, batch_size=batch_size, stride=stride,
                          context=context, tissue_only=False)
    plan = _plan_for(loaded.task, src.shape, loaded, cfg, runner.num_classes)
    if isinstance(plan, SegmentPlan):  # one block: exact global blending, no block seams
        n = math.ceil(max(src.shape) / plan.layout.stride)
        plan = SegmentPlan(src.shape, 0, runner.num_classes, tile=plan.tile,
                           overlap=plan.overlap, block_tiles=n)
    c = runner.num_classes
    out = np.zeros((c, *plan.out_shape), dtype=np.float32)

    class _Sink:
        def write(self, b: Any, box: Box, probs: npt.NDArray[np.float32]) -> None:
            y0, x0, y1, x1 = box
            out[:, y0:y1, x0:x1] = probs

    stats = RunStats()
    jobs = plan_jobs(plan, list(range(len(plan.blocks()))), None, set(), stats)
    yield from run_blocks(plan, src, runner, _Sink(), jobs, stats, readers=1)
    return out


# ------------------------------------------------------------------------------ slides


def _open(source: SlideInput) -> tuple[SlideLike, Slide | None]:
    """The slide, and the same slide again when it was opened here (the caller closes it)."""
    if isinstance(source, (str, Path)):
        from napari_histo.io.slide import open_slide

        opened = open_slide(source)
        return opened, opened
    if isinstance(source, np.ndarray):
        raise ConfigError("predict_slide takes a slide or a path; use predict_array for arrays")
    return source, None


def _region_level0(slide: SlideLike, region: Region | None,
                   units: str) -> tuple[float, float, float, float]:
    h0, w0 = slide.shape
    if region is None:
        return (0.0, 0.0, float(h0), float(w0))
    y0, x0, y1, x1 = (float(v) for v in region)
    if units == "um":
        mpp = slide.metadata.mpp
        if mpp is None:
            raise ConfigError(f"{slide.name} has no mpp: give the region in level-0 pixels")
        y0, y1, x0, x1 = y0 / mpp[0], y1 / mpp[0], x0 / mpp[1], x1 / mpp[1]
    elif units != "px":
        raise ConfigError(f"region units must be 'px' or 'um', got {units!r}")
    y0, x0 = max(0.0, y0), max(0.0, x0)
    y1, x1 = min(float(h0), y1), min(float(w0), x1)
    if y1 <= y0 or x1 <= x0:
        raise ConfigError(f"region {region} does not overlap the slide ({h0} x {w0} px)")
    return (y0, x0, y1, x1)


def _fingerprint(plan: Plan, res: Resolution, origin0: tuple[float, float], loaded: LoadedModel,
                 cfg: InferenceConfig) -> dict[str, Any]:
    return {
        "out_shape": list(plan.out_shape), "chunk": plan.chunk, "task": loaded.task,
        "num_classes": plan.num_classes, "level": res.level, "factor": list(res.factor),
        "origin_px": list(origin0), "tile": getattr(plan, "tile", None),
        "overlap": getattr(plan, "overlap", None), "stride": getattr(plan, "stride", None),
        "context": getattr(plan, "context", None), "prob_dtype": cfg.prob_dtype,
        "threshold": cfg.threshold, "tissue_only": cfg.tissue_only,
        "model": str(loaded.spec.get("name")),
    }


def predict_slide(source: SlideInput, model: ModelInput, cfg: InferenceConfig | None = None, *,
                  region: Region | None = None, region_units: str = "px",
                  order_near: Sequence[float] | None = None,
                  out_path: str | Path | None = None) -> Task[PredictionResult]:
    """Predict a slide (or ``region`` = (y0, x0, y1, x1) of it) at the model's resolution.

    Parameters
    ----------
    source : path or Slide
    model : checkpoint path, LoadedModel or nn.Module
    cfg : InferenceConfig
    region, region_units : a level-0 pixel ('px') or micron ('um') box
    order_near : (y, x) point or (y0, x0, y1, x1) box in level-0 px: blocks nearest to it
        are predicted first (the GUI's visible region)
    out_path : OME-Zarr store to stream into; None keeps the result in memory

    A store is written under its lock (``.NAME.lock``; a second writer is refused), replaces
    only a store napari-histo wrote (``overwrite``), resumes only the same checkpoint, slide
    and settings (``resume``), and is removed again when the run fails before writing any
    block. Slide tiles that cannot be decoded, wherever they are met (tissue detection, the
    tile cache, prediction), are counted in ``failed_tiles``/``failed_boxes``.

    Raises
    ------
    ConfigError, OutputExistsError, SlideOpenError, CheckpointError
    """
    cfg = cfg or InferenceConfig()
    if cfg.scheduler and out_path is not None and isinstance(source, (str, Path)):
        from napari_histo.engine.distributed import predict_distributed

        results = yield from predict_distributed([source], model, cfg, [out_path],
                                                 region=region, region_units=region_units)
        if results[0] is None:
            raise ConfigError(f"distributed prediction of {source} failed (see messages)")
        return results[0]
    loaded = as_loaded(model, cfg.device)
    runner = Runner(loaded, cfg.batch_size, pad_batches=out_path is not None, amp=cfg.amp,
                    tta=cfg.tta)
    slide, own = _open(source)
    lock = StoreLock(out_path) if out_path is not None else None
    try:
        if lock is not None:
            lock.acquire()  # before anything at the output is looked at or removed
        return (yield from _predict_slide(slide, loaded, runner, cfg, region, region_units,
                                          order_near, out_path,
                                          lock.note if lock is not None else None))
    finally:
        if lock is not None:
            lock.release()
        if own is not None:
            own.close()


def _predict_slide(slide: SlideLike, loaded: LoadedModel, runner: Runner, cfg: InferenceConfig,
                   region: Region | None, region_units: str, order_near: Sequence[float] | None,
                   out_path: str | Path | None,
                   lock_note: str | None = None) -> Task[PredictionResult]:
    from napari_histo.io._cache import FailureTracker, locate_failures

    cache: Any = getattr(slide, "cache", None)
    tracker = cache.track_failures() if hasattr(cache, "track_failures") else FailureTracker(None)
    with tracker:
        ctx = prepare_slide_run(slide, loaded, cfg, region=region, region_units=region_units,
                                num_classes=runner.num_classes, out_path=out_path,
                                in_memory=out_path is None)
        plan, src, res, origin0 = ctx.plan, ctx.source, ctx.res, ctx.origin0
        if cfg.tissue_only:
            yield Message(f"{slide.name}: tissue covers {ctx.tissue_fraction:.0%} of the slide")
        if tracker.keys:
            yield Message(f"{slide.name}: {len(tracker.keys)} tile(s) could not be decoded while "
                          "detecting tissue; their area is predicted anyway", "warning")
        done: set[tuple[int, int]] = set()
        prior: dict[tuple[int, int, int], Any] = {}
        created = False
        path = Path(out_path) if out_path is not None else None
        if path is None:
            dt = "float32" if cfg.prob_dtype == "float16" else cfg.prob_dtype
            sink: MemorySink | ZarrSink = MemorySink(plan.out_shape, plan.num_classes, cfg.threshold, dt)
        else:
            state = prepare_output(path, resume=cfg.resume, overwrite=cfg.overwrite,
                                   inputs=[getattr(slide, "path", None), loaded.path])
            fp = _fingerprint(plan, res, origin0, loaded, cfg)
            ident = run_identity(slide, loaded)
            if state == "new":
                sink = create_store(path, plan, cfg, fp, ctx, slide, loaded, ident=ident)
                created = True
            else:
                sink = ZarrSink.open(path)
                check_resume(path, sink.meta, fingerprint=fp, **ident)
            if lock_note:  # said once the run goes ahead (a refusal stays one line)
                yield Message(lock_note, "warning")
            if state != "new":
                if state == "done":
                    yield Message(f"{path.name} is already complete; nothing to do")
                    return result_from_store(path)
                done = sink.done_blocks()
                prior = segments_from_meta(sink.meta.get("failed_segments"))
                yield Message(f"resuming {path.name}: {len(done)} block(s) already written")
        order = _order(plan, order_near, ctx.to_out)
        stats = RunStats()
        jobs = plan_jobs(plan, order, ctx.skip, done, stats)

        def failures() -> tuple[int, list[Box], dict[tuple[int, int, int], Any]]:
            segs = {**prior, **locate_failures(slide, tracker.keys)}
            return summarise_failures(stats, segs, origin0, ctx.downsample, plan.out_shape)

        if path is not None:
            # the store exists: a viewer can lay out its layers while the first batch runs
            yield Progress(stats.skipped_tiles + stats.resumed_tiles, stats.total_tiles,
                           "predict", store=str(path))
        blocks = run_blocks(plan, src, runner, sink, jobs, stats, readers=cfg.readers)
        seen = (0, 0)
        try:
            for ev in blocks:
                now = (stats.failed_tiles, len(tracker.keys))
                if isinstance(sink, ZarrSink) and now != seen:  # kept even if the run is killed
                    seen = now
                    n, boxes, segs = failures()
                    sink.update_meta(failed_tiles=n, failed_boxes=[list(b) for b in boxes],
                                     failed_segments=segments_to_meta(segs))
                yield ev
            n, boxes, segs = failures()
            if isinstance(sink, ZarrSink):
                sink.finish(skipped_tiles=stats.skipped_tiles, total_tiles=stats.total_tiles,
                            failed_tiles=n, failed_boxes=[list(b) for b in boxes],
                            failed_segments=segments_to_meta(segs))
        except Exception:
            # a new store that never got a block is ours and worthless: do not leave it
            # behind looking like a result (an interrupt or cancel keeps it resumable)
            if created and path is not None and isinstance(sink, ZarrSink) \
                    and not sink.done_blocks():
                discard_store(path)
            raise
        finally:
            blocks.close()
    if isinstance(sink, ZarrSink):
        if path is not None and set(cfg.formats) - {"zarr"}:
            from napari_histo.engine.inference.export import export_outputs

            yield from export_outputs(path, cfg.formats)
        assert path is not None  # a ZarrSink writes into a store
        res_obj = result_from_store(path)
        res_obj.stats = stats
        res_obj.skipped_tiles = stats.skipped_tiles
        return res_obj
    return PredictionResult(
        path=None, probabilities=sink.probabilities, labels=sink.labels, mpp=ctx.out_mpp,
        origin_um=ctx.origin_um, complete=True, skipped_tiles=stats.skipped_tiles,
        total_tiles=stats.total_tiles, failed_tiles=n, failed_boxes=boxes, task=loaded.task,
        class_names=list(loaded.class_names), downsample=ctx.downsample,
        origin_px=origin0, source=str(getattr(slide, "path", "")), stats=stats)


def output_geometry(source: SlideInput, model: ModelInput, cfg: InferenceConfig | None = None,
                    *, region: Region | None = None, region_units: str = "px",
                    ) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """What :func:`predict_slide` will write: output shape (px), downsample (level-0 px per
    output px) and origin (level-0 px), computed without tissue detection or a model call.

    Cheap (it opens the slide and plans the tiles), so a viewer can lay out its result
    layers while the run starts instead of after its first batch.
    """
    cfg = (cfg or InferenceConfig()).replace(tissue_only=False)
    loaded = as_loaded(model, cfg.device)
    slide, own = _open(source)
    try:
        ctx = prepare_slide_run(slide, loaded, cfg, region=region, region_units=region_units)
        shape = tuple(int(v) for v in ctx.plan.out_shape[-2:])
        return (shape[0], shape[1]), ctx.downsample, ctx.origin0
    finally:
        if own is not None:
            own.close()


def prepare_slide_run(slide: SlideLike, loaded: LoadedModel, cfg: InferenceConfig, *,
                      region: Region | None = None, region_units: str = "px",
                      num_classes: int = 2, out_path: str | Path | None = None,
                      in_memory: bool = False) -> SlideRun:
    """Resolution, geometry, plan, tissue test and coordinate helpers of one slide run.

    Everything the run will allocate is budgeted here, from the slide's header and the
    settings, before any of it is: the working resolution (at most ``MAX_UPSAMPLE`` times
    finer than level 0), the number of model inputs (``MAX_TILES``), one block's buffers
    against free memory, the whole output when ``in_memory``, and, when ``out_path`` is
    given, an estimate of the store's size against the free disk space there. Each refusal
    is one :class:`~napari_histo.core.errors.ConfigError` line.
    """
    from napari_histo.core.limits import (
        MAX_TILES,
        check_alloc,
        check_disk,
        human_bytes,
        number,
    )

    pre = loaded.preprocessing or {}
    res = resolve_resolution(slide, mpp=cfg.mpp, level=cfg.level, slide_mpp=cfg.slide_mpp,
                             model_mpp=pre.get("mpp"))
    if region is not None:
        if isinstance(region, (str, bytes)) or not hasattr(region, "__len__") or len(region) != 4:
            raise ConfigError(f"region must be 4 numbers (y0, x0, y1, x1), got {region!r}")
        region = tuple(number(f"region {k}", v) for k, v in zip(("y0", "x0", "y1", "x1"),
                                                                region, strict=True))
    ry0, rx0, ry1, rx1 = _region_level0(slide, region, region_units)
    origin0 = (ry0, rx0)
    shape_work = (max(1, math.ceil((ry1 - ry0) / res.factor[0] - 1e-6)),
                  max(1, math.ceil((rx1 - rx0) / res.factor[1] - 1e-6)))
    if not res.resample:  # never run past the level's own pixels
        lh, lw = slide.metadata.level_shapes[res.level]
        shape_work = (max(1, min(shape_work[0], lh - int(ry0 // res.factor[0]))),
                      max(1, min(shape_work[1], lw - int(rx0 // res.factor[1]))))
    src = SlideSource(slide, res, origin0, shape_work)
    plan = _plan_for(loaded.task, shape_work, loaded, cfg, num_classes)
    # ---- budget: model inputs, one block's buffers, the output (before any allocation)
    if isinstance(plan, SegmentPlan):
        step = plan.tile - plan.overlap
        n_inputs = math.ceil(shape_work[0] / step) * math.ceil(shape_work[1] / step)
    else:
        n_inputs = plan.out_shape[0] * plan.out_shape[1]
    if n_inputs > MAX_TILES:
        raise ConfigError(
            f"{slide.name}: this run would feed the model {n_inputs:,} tiles (working image "
            f"{shape_work[1]} x {shape_work[0]} px), more than the {MAX_TILES:,} one run may "
            "plan; choose a coarser --mpp, a --region or a larger tile/stride")
    side = plan.input_size()
    rb = plan.read_box((0, 0))
    block_px = (rb[2] - rb[0]) * (rb[3] - rb[1])
    # read region (uint8 RGB), blend accumulator + weights (float32), model inputs
    block_bytes = block_px * (3 + 4 * (num_classes + 1)) + cfg.batch_size * side * side * 16
    check_alloc(block_bytes * (cfg.readers + 2), f"{slide.name}: the blocks in flight",
                hint="lower --readers, --batch-size or the tile size")
    out_px = plan.out_shape[0] * plan.out_shape[1]
    planes = 1 if num_classes == 2 else num_classes
    if in_memory:
        item = 1 if cfg.prob_dtype == "uint8" else 4
        check_alloc(out_px * (planes * item + 1), f"{slide.name}: the in-memory prediction "
                    f"({plan.out_shape[1]} x {plan.out_shape[0]} px)",
                    hint="write it to an output store, or predict a region")
    cell = plan.cell
    down = (res.factor[0] * cell, res.factor[1] * cell)
    smpp = slide.metadata.mpp or ((cfg.slide_mpp,) * 2 if cfg.slide_mpp else None)
    out_mpp = (res.mpp[0] * cell, res.mpp[1] * cell) if res.mpp else None
    unit = smpp if smpp else (1.0, 1.0)
    origin_um = (origin0[0] * unit[0], origin0[1] * unit[1])
    skip: Callable[[Box], bool] | None = None
    frac = 1.0
    if cfg.tissue_only:
        from napari_histo.engine.tissue import tissue_map

        tmap = tissue_map(slide, max_side=TISSUE_MAX_SIDE)
        frac = tmap.fraction_total
        from napari_histo.engine.inference.writer import release_memory

        release_memory()  # the thumbnail's temporaries

        def tissue_skip(core: Box) -> bool:
            return tmap.fraction(src.to_level0(core)) <= 0.0

        skip = tissue_skip

    if out_path is not None:
        # a lower bound of the store: tissue blocks only (background chunks are never
        # written), compressed ~3x, plus a third for the pyramid; refused only when even
        # that cannot fit
        item = 1 if cfg.prob_dtype == "uint8" else 2
        raw = out_px * (planes * item + 1) * max(float(frac), 0.0)
        check_disk(Path(out_path).parent, raw * 4 / 3 / 3,
                   f"{slide.name}: the prediction store ({plan.out_shape[1]} x "
                   f"{plan.out_shape[0]} px, {human_bytes(raw)} before compression)")

    def to_out(near: Sequence[float]) -> PointOrBox:
        vals = [number("near", v) for v in near]
        if len(vals) == 2:
            return ((vals[0] - origin0[0]) / down[0], (vals[1] - origin0[1]) / down[1])
        if len(vals) != 4:
            raise ConfigError(f"near must be a point (y, x) or a box (y0, x0, y1, x1), got {near!r}")
        return ((vals[0] - origin0[0]) / down[0], (vals[1] - origin0[1]) / down[1],
                (vals[2] - origin0[0]) / down[0], (vals[3] - origin0[1]) / down[1])

    return SlideRun(res=res, origin0=origin0, source=src, plan=plan, skip=skip,
                    downsample=down, out_mpp=out_mpp, origin_um=origin_um, to_out=to_out,
                    tissue_fraction=float(frac), slide_mpp=smpp)


def create_store(path: Path, plan: Plan, cfg: InferenceConfig, fp: dict[str, Any],
                 ctx: SlideRun, slide: SlideLike, loaded: LoadedModel, *,
                 ident: dict[str, Any] | None = None) -> ZarrSink:
    """A fresh prediction store with all metadata a reader needs to place it.

    ``ident`` (:func:`run_identity`) records the checkpoint's sha256 and the slide's
    fingerprint, which a resume must match.
    """
    down = ctx.downsample
    smpp = ctx.slide_mpp
    origin0 = ctx.origin0
    unit = (smpp[0], smpp[1]) if smpp else (1.0, 1.0)
    translate = ((origin0[0] + (down[0] - 1) / 2) * unit[0], (origin0[1] + (down[1] - 1) / 2) * unit[1])
    meta = {
        "fingerprint": fp, "task": loaded.task, "class_names": list(loaded.class_names),
        "mpp": list(ctx.out_mpp) if ctx.out_mpp else None,
        "origin_um": list(ctx.origin_um), "origin_px": list(origin0),
        "downsample": list(down), "threshold": cfg.threshold, "prob_dtype": cfg.prob_dtype,
        "source": str(getattr(slide, "path", "")), "slide_name": getattr(slide, "name", ""),
        "slide_shape": list(slide.shape), "config": cfg.to_dict(),
        "checkpoint": str(loaded.path) if loaded.path else None,
        **(ident if ident is not None else run_identity(slide, loaded)),
        "failed_tiles": 0, "failed_boxes": [], "failed_segments": [],
    }
    scale = ctx.out_mpp or down
    return ZarrSink.create(path, shape=plan.out_shape, chunk=plan.chunk,
                           num_classes=plan.num_classes, prob_dtype=cfg.prob_dtype,
                           threshold=cfg.threshold, meta=meta, mpp=(scale[0], scale[1]),
                           origin_um=translate, name=getattr(slide, "name", "prediction"))


def result_from_store(path: str | Path) -> PredictionResult:
    """A PredictionResult backed by the zarr arrays of a written store."""
    prob, lab, meta = open_prediction(path)
    return PredictionResult(
        path=Path(path), probabilities=prob, labels=lab,
        mpp=tuple(meta["mpp"]) if meta.get("mpp") else None,
        origin_um=tuple(meta.get("origin_um") or (0.0, 0.0)),
        complete=bool(meta.get("complete")), skipped_tiles=int(meta.get("skipped_tiles") or 0),
        total_tiles=int(meta.get("total_tiles") or 0),
        failed_tiles=int(meta.get("failed_tiles") or 0),
        failed_boxes=[tuple(b) for b in meta.get("failed_boxes") or []],
        task=str(meta.get("task")), class_names=list(meta.get("class_names") or []),
        downsample=tuple(meta.get("downsample") or (1.0, 1.0)),
        origin_px=tuple(meta.get("origin_px") or (0.0, 0.0)),
        source=meta.get("source"))


def predict_heatmap(source: SlideInput, model: ModelInput, cfg: InferenceConfig | None = None, *,
                    stride: int | None = None, context: int | None = None,
                    **kwargs: Any) -> Task[PredictionResult]:
    """Patch-classifier heatmap of a slide: one output pixel per ``stride`` px cell.

    Same options and result as :func:`predict_slide`; ``stride``/``context`` override the
    checkpoint's ``center_size``/``context_size`` (seed 004: 128 and 299).
    """
    cfg = cfg or InferenceConfig()
    loaded = as_loaded(model, cfg.device)
    if loaded.task != "classify":
        raise ConfigError("predict_heatmap needs a patch classifier; use predict_slide for "
                          "segmentation models")
    if stride is not None or context is not None:
        cfg = cfg.replace(stride=stride or cfg.stride, context=context or cfg.context)
    return (yield from predict_slide(source, loaded, cfg, **kwargs))
