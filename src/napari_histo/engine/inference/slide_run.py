"""One slide run's shared ground: planning, budgets, store creation and the result type.

Both the single-process run (:mod:`napari_histo.engine.inference.predict`) and the cluster
run (:mod:`napari_histo.engine.distributed`) build on these, so neither imports the other's
internals: :func:`prepare_slide_run` (resolution, plan, budgets, tissue test),
:func:`run_fingerprint` (the settings a resume must match), :func:`create_store`,
:func:`result_from_store` and :class:`PredictionResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_histo.core.errors import ConfigError
from napari_histo.engine.checkpoints import LoadedModel
from napari_histo.engine.inference._pipeline import RunStats
from napari_histo.engine.inference._plan import HeatmapPlan, Plan, SegmentPlan
from napari_histo.engine.inference._source import Resolution, SlideSource, resolve_resolution
from napari_histo.engine.inference.config import InferenceConfig
from napari_histo.engine.inference.context import PointOrBox, Region, SlideLike, SlideRun
from napari_histo.engine.inference.identity import run_identity
from napari_histo.engine.inference.writer import ZarrSink, open_prediction

__all__ = ["PredictionResult", "create_store", "plan_for", "prepare_slide_run",
           "result_from_store", "run_fingerprint"]

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


def plan_for(task: str, shape_work: tuple[int, int], loaded: LoadedModel, cfg: InferenceConfig,
             num_classes: int) -> Plan:
    """The tiling plan of a ``task`` ("segment": blended tiles; else patch heatmap cells)."""
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


def run_fingerprint(plan: Plan, res: Resolution, origin0: tuple[float, float],
                    loaded: LoadedModel, cfg: InferenceConfig) -> dict[str, Any]:
    """The settings a resumed store must share with the run resuming it (the store's
    ``fingerprint``): output geometry, resolution, region origin, tiling and the model."""
    return {
        "out_shape": list(plan.out_shape), "chunk": plan.chunk, "task": loaded.task,
        "num_classes": plan.num_classes, "level": res.level, "factor": list(res.factor),
        "origin_px": list(origin0), "tile": getattr(plan, "tile", None),
        "overlap": getattr(plan, "overlap", None), "stride": getattr(plan, "stride", None),
        "context": getattr(plan, "context", None), "prob_dtype": cfg.prob_dtype,
        "threshold": cfg.threshold, "tissue_only": cfg.tissue_only,
        "model": str(loaded.spec.get("name")),
    }


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
    pre = loaded.preprocessing or {}
    res = resolve_resolution(slide, mpp=cfg.mpp, level=cfg.level, slide_mpp=cfg.slide_mpp,
                             model_mpp=pre.get("mpp"))
    origin0, shape_work = _working_region(slide, res, region, region_units)
    src = SlideSource(slide, res, origin0, shape_work)
    plan = plan_for(loaded.task, shape_work, loaded, cfg, num_classes)
    # ---- budget: model inputs, one block's buffers, the output (before any allocation)
    _check_budget(slide, plan, cfg, shape_work, num_classes, in_memory)
    cell = plan.cell
    down = (res.factor[0] * cell, res.factor[1] * cell)
    smpp = slide.metadata.mpp or ((cfg.slide_mpp,) * 2 if cfg.slide_mpp else None)
    out_mpp = (res.mpp[0] * cell, res.mpp[1] * cell) if res.mpp else None
    unit = smpp if smpp else (1.0, 1.0)
    origin_um = (origin0[0] * unit[0], origin0[1] * unit[1])
    skip: Callable[[Box], bool] | None = None
    frac = 1.0
    if cfg.tissue_only:
        skip, frac = _tissue_skip(slide, src)
    if out_path is not None:
        _check_store_disk(slide, plan, cfg, num_classes, frac, Path(out_path))
    return SlideRun(res=res, origin0=origin0, source=src, plan=plan, skip=skip,
                    downsample=down, out_mpp=out_mpp, origin_um=origin_um,
                    to_out=_output_coords(origin0, down), tissue_fraction=float(frac),
                    slide_mpp=smpp)


def _working_region(slide: SlideLike, res: Resolution, region: Region | None, region_units: str,
                    ) -> tuple[tuple[float, float], tuple[int, int]]:
    """Level-0 origin of the region and its (h, w) at the working resolution."""
    from napari_histo.core.limits import number

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
    return origin0, shape_work


def _check_budget(slide: SlideLike, plan: Plan, cfg: InferenceConfig, shape_work: tuple[int, int],
                  num_classes: int, in_memory: bool) -> None:
    """Refuse a run feeding the model more than ``MAX_TILES`` inputs, whose blocks in flight
    do not fit in free memory, or (``in_memory``) whose whole output does not."""
    from napari_histo.core.limits import MAX_TILES, check_alloc

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
    if in_memory:
        out_px = plan.out_shape[0] * plan.out_shape[1]
        planes = 1 if num_classes == 2 else num_classes
        item = 1 if cfg.prob_dtype == "uint8" else 4
        check_alloc(out_px * (planes * item + 1), f"{slide.name}: the in-memory prediction "
                    f"({plan.out_shape[1]} x {plan.out_shape[0]} px)",
                    hint="write it to an output store, or predict a region")


def _tissue_skip(slide: SlideLike, src: SlideSource) -> tuple[Callable[[Box], bool], float]:
    """(skip(core box) -> True where a block holds no tissue, tissue fraction of the slide)."""
    from napari_histo.engine.inference.writer import release_memory
    from napari_histo.engine.tissue import tissue_map

    tmap = tissue_map(slide, max_side=TISSUE_MAX_SIDE)
    frac = tmap.fraction_total
    release_memory()  # the thumbnail's temporaries

    def skip(core: Box) -> bool:
        return tmap.fraction(src.to_level0(core)) <= 0.0

    return skip, frac


def _check_store_disk(slide: SlideLike, plan: Plan, cfg: InferenceConfig, num_classes: int,
                      frac: float, out_path: Path) -> None:
    """Refuse a store that cannot fit in the free space where it goes.

    A lower bound of the store: tissue blocks only (background chunks are never written),
    compressed ~3x, plus a third for the pyramid; refused only when even that cannot fit.
    """
    from napari_histo.core.limits import check_disk, human_bytes

    out_px = plan.out_shape[0] * plan.out_shape[1]
    planes = 1 if num_classes == 2 else num_classes
    item = 1 if cfg.prob_dtype == "uint8" else 2
    raw = out_px * (planes * item + 1) * max(float(frac), 0.0)
    check_disk(out_path.parent, raw * 4 / 3 / 3,
               f"{slide.name}: the prediction store ({plan.out_shape[1]} x "
               f"{plan.out_shape[0]} px, {human_bytes(raw)} before compression)")


def _output_coords(origin0: tuple[float, float], down: tuple[float, float],
                   ) -> Callable[[Sequence[float]], PointOrBox]:
    """``to_out(near)``: a level-0 point (y, x) or box (y0, x0, y1, x1) in output pixels."""
    from napari_histo.core.limits import number

    def to_out(near: Sequence[float]) -> PointOrBox:
        vals = [number("near", v) for v in near]
        if len(vals) == 2:
            return ((vals[0] - origin0[0]) / down[0], (vals[1] - origin0[1]) / down[1])
        if len(vals) != 4:
            raise ConfigError(f"near must be a point (y, x) or a box (y0, x0, y1, x1), got {near!r}")
        return ((vals[0] - origin0[0]) / down[0], (vals[1] - origin0[1]) / down[1],
                (vals[2] - origin0[0]) / down[0], (vals[3] - origin0[1]) / down[1])

    return to_out


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
                           origin_um=translate, name=getattr(slide, "name", "prediction"),
                           ngff_version=cfg.ngff_version)


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
