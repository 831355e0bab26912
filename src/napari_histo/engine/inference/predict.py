"""Prediction entry points: arrays, slides and regions, segmentation and patch heatmaps.

``predict_array`` runs an in-memory image; ``predict_slide`` a slide (or a region of it) at
the model's resolution, in memory or streamed into an OME-Zarr store that can be resumed;
``predict_heatmap`` is ``predict_slide`` for patch classifiers with stride/context options.
All are generators (Task): they yield Progress/Message events and return the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Message, Progress, Task
from napari_histo.engine.checkpoints import LoadedModel
from napari_histo.engine.distributed import predict_distributed
from napari_histo.engine.inference._model import Runner, as_loaded
from napari_histo.engine.inference._pipeline import RunStats, _Job, plan_jobs, run_blocks
from napari_histo.engine.inference._plan import Plan, SegmentPlan
from napari_histo.engine.inference._source import ArraySource, SlideSource
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
from napari_histo.engine.inference.slide_run import (
    Box,
    PredictionResult,
    create_store,
    plan_for,
    prepare_slide_run,
    result_from_store,
    run_fingerprint,
)
from napari_histo.engine.inference.writer import (
    MemorySink,
    StoreLock,
    ZarrSink,
    check_resume,
    discard_store,
    prepare_output,
)
from napari_histo.engine.tiling import order_blocks

if TYPE_CHECKING:
    from napari_histo.io._cache import FailureTracker
    from napari_histo.io.slide import Slide

# PredictionResult, prepare_slide_run and result_from_store live in slide_run (shared with
# the cluster run in engine.distributed) and are re-exported here.
__all__ = ["PredictionResult", "output_geometry", "predict_array", "predict_heatmap",
           "predict_slide", "prepare_slide_run", "result_from_store"]


# ------------------------------------------------------------------------------ planning


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
                  stride: int | None = None, context: int | None = None, tta: bool = False,
                  ) -> Task[npt.NDArray[np.float32]]:
    """Class probabilities of an in-memory RGB image, float32 (C, H, W).

    Segmentation tiles are blended (one block covering the whole image); a patch classifier
    gives its (C, ceil(H/stride), ceil(W/stride)) heatmap. The image is assumed to be at the
    model's resolution. Yields a Progress per batch. ``tta`` averages over flips/rot90.
    """
    loaded = as_loaded(model, device)
    runner = Runner(loaded, batch_size, tta=tta)
    src = ArraySource(image)
    cfg = InferenceConfig(tile=tile, overlap=overlap, batch_size=batch_size, stride=stride,
                          context=context, tissue_only=False)
    plan = plan_for(loaded.task, src.shape, loaded, cfg, runner.num_classes)
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
        plan, src, origin0 = ctx.plan, ctx.source, ctx.origin0
        if cfg.tissue_only:
            yield Message(f"{slide.name}: tissue covers {ctx.tissue_fraction:.0%} of the slide")
        if tracker.keys:
            yield Message(f"{slide.name}: {len(tracker.keys)} tile(s) could not be decoded while "
                          "detecting tissue; their area is predicted anyway", "warning")
        path = Path(out_path) if out_path is not None else None
        if path is None:
            dt = "float32" if cfg.prob_dtype == "float16" else cfg.prob_dtype
            sink: MemorySink | ZarrSink = MemorySink(plan.out_shape, plan.num_classes, cfg.threshold, dt)
            created = False
            done: set[tuple[int, int]] = set()
            prior: dict[tuple[int, int, int], Any] = {}
        else:
            opened = yield from _open_store(path, slide, loaded, cfg, ctx, lock_note)
            if opened is None:  # already complete
                return result_from_store(path)
            sink, created, done, prior = opened
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
        n, boxes = yield from _run_into(sink, plan, src, runner, jobs, stats, cfg, failures,
                                        tracker, discard=path if created else None)
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


def _open_store(path: Path, slide: SlideLike, loaded: LoadedModel, cfg: InferenceConfig,
                ctx: SlideRun, lock_note: str | None) -> Task[tuple[ZarrSink, bool, set[tuple[int, int]],
                                                    dict[tuple[int, int, int], Any]] | None]:
    """Create the output store, or reopen one to resume; None when it is already complete.

    Returns (sink, created here, blocks already written, failed segments recorded before).
    """
    plan, res, origin0 = ctx.plan, ctx.res, ctx.origin0
    done: set[tuple[int, int]] = set()
    prior: dict[tuple[int, int, int], Any] = {}
    created = False
    state = prepare_output(path, resume=cfg.resume, overwrite=cfg.overwrite,
                           inputs=[getattr(slide, "path", None), loaded.path])
    fp = run_fingerprint(plan, res, origin0, loaded, cfg)
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
            return None
        done = sink.done_blocks()
        prior = segments_from_meta(sink.meta.get("failed_segments"))
        yield Message(f"resuming {path.name}: {len(done)} block(s) already written")
    return sink, created, done, prior


def _run_into(sink: MemorySink | ZarrSink, plan: Plan, src: SlideSource, runner: Runner,
              jobs: list[_Job], stats: RunStats, cfg: InferenceConfig,
              failures: Callable[[], tuple[int, list[Box], dict[tuple[int, int, int], Any]]],
              tracker: FailureTracker, *, discard: Path | None,
              ) -> Task[tuple[int, list[Box]]]:
    """Run the blocks into ``sink``, keeping a store's failure record current; returns the
    failed tile count and boxes.

    ``discard``: a store created by this run, removed again when the run fails before
    writing any block (an interrupt or cancel keeps it resumable).
    """
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
        if discard is not None and isinstance(sink, ZarrSink) and not sink.done_blocks():
            discard_store(discard)
        raise
    finally:
        blocks.close()
    return n, boxes


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


def predict_heatmap(source: SlideInput, model: ModelInput, cfg: InferenceConfig | None = None, *,
                    stride: int | None = None, context: int | None = None,
                    **kwargs: Any) -> Task[PredictionResult]:
    """Patch-classifier heatmap of a slide: one output pixel per ``stride`` px cell.

    Same options and result as :func:`predict_slide`; ``stride``/``context`` override the
    checkpoint's ``center_size``/``context_size`` (CAMELYON rule: 128 and 299).
    """
    cfg = cfg or InferenceConfig()
    loaded = as_loaded(model, cfg.device)
    if loaded.task != "classify":
        raise ConfigError("predict_heatmap needs a patch classifier; use predict_slide for "
                          "segmentation models")
    if stride is not None or context is not None:
        cfg = cfg.replace(stride=stride or cfg.stride, context=context or cfg.context)
    return (yield from predict_slide(source, loaded, cfg, **kwargs))
