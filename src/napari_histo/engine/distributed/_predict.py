"""Spread slides and tile blocks over a dask.distributed cluster.

The client process plans each slide (resolution, tissue, blocks), creates (or resumes) its
OME-Zarr store, and submits groups of blocks as tasks; every worker loads the checkpoint
once, reads its blocks and writes them straight into the shared store (one block = one
chunk, so writers never collide). When all groups of a slide are done the client builds
the pyramid, sets the completion flag and writes the exports. Only the client holds the
stores' locks (``.NAME.lock``): workers write blocks of a store their client locked; they
report the slide tiles they could not decode, which the client counts in the metadata.
Because every forward pass is padded to the same batch size, the result is identical to a
single-process run.

A cohort resumes slide by slide (``resume``): complete stores are skipped, partial ones
continue from their block markers. A worker that dies mid-task (killed, out of memory) is
replaced by its nanny and dask reruns its tasks elsewhere (a block is rewritten whole, its
marker last); a slide whose tasks keep killing workers fails alone, with one message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_histo.core.errors import ConfigError, HistoError, one_line
from napari_histo.core.progress import Message, Progress, Task
from napari_histo.engine.distributed._cluster import DEFAULT_TIMEOUT_S, make_plan, open_cluster
from napari_histo.engine.distributed._plan import ClusterPlan

if TYPE_CHECKING:
    from napari_histo.engine.inference.config import InferenceConfig
    from napari_histo.engine.inference.context import ModelInput, Region
    from napari_histo.engine.inference.slide_run import PredictionResult

__all__ = ["predict_distributed"]

_MODELS: dict[tuple[str, str], Any] = {}


def _worker_model(model: Any, device: str) -> Any:
    from napari_histo.engine.inference._model import as_loaded

    if isinstance(model, (str, Path)):
        key = (str(model), device)
        if key not in _MODELS:
            _MODELS[key] = as_loaded(model, device)
        return _MODELS[key]
    return as_loaded(model, device)


def _run_group(source: str, model: Any, cfg_dict: dict[str, Any], region: Any,
               region_units: str, store: str, jobs: list[tuple[tuple[int, int],
                                                               list[tuple[int, int]]]],
               device: str | None = None) -> dict[str, Any]:
    """Worker side: compute ``jobs`` (block, tile offsets) of one slide into ``store``.

    ``device`` replaces ``cfg.device`` (``cuda`` on a worker pinned to its own GPU).
    """
    from napari_histo.core.progress import run_task
    from napari_histo.engine.inference._model import Runner
    from napari_histo.engine.inference._pipeline import RunStats, _Job, run_blocks
    from napari_histo.engine.inference.config import InferenceConfig
    from napari_histo.engine.inference.failures import segments_to_meta
    from napari_histo.engine.inference.slide_run import prepare_slide_run
    from napari_histo.engine.inference.writer import ZarrSink
    from napari_histo.io._cache import locate_failures
    from napari_histo.io.slide import open_slide

    cfg = InferenceConfig.from_dict(cfg_dict).replace(tissue_only=False)
    if device is not None:
        cfg = cfg.replace(device=device)
    loaded = _worker_model(model, cfg.device)
    runner = Runner(loaded, cfg.batch_size, pad_batches=True, amp=cfg.amp, tta=cfg.tta)
    with open_slide(source) as slide:
        ctx = prepare_slide_run(slide, loaded, cfg, region=region, region_units=region_units,
                                num_classes=runner.num_classes)
        sink = ZarrSink.open(store)
        todo = [_Job((b[0], b[1]), [(o[0], o[1]) for o in offs], remaining=len(offs))
                for b, offs in jobs]
        stats = RunStats(total_tiles=sum(len(j.offsets) for j in todo))
        with slide.track_failures() as tracker:
            run_task(run_blocks(ctx.plan, ctx.source, runner, sink, todo, stats,
                                readers=cfg.readers))
        segments = segments_to_meta(locate_failures(slide, tracker.keys))
    return {"computed": stats.computed_tiles, "failed": stats.failed_tiles,
            "failed_block_tiles": stats.failed_block_tiles,
            "failed_boxes": [list(b) for b in stats.failed_boxes], "segments": segments,
            "warnings": stats.read_warnings, "model_s": stats.model_s}


def predict_distributed(sources: Sequence[str | Path], model: ModelInput,
                        cfg: InferenceConfig, out_paths: Sequence[str | Path], *,
                        region: Region | None = None,
                        region_units: str = "px", blocks_per_task: int = 4,
                        gpus: str | int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                        ) -> Task[list[PredictionResult | None]]:
    """Predict ``sources`` into ``out_paths`` on the cluster named by ``cfg.scheduler``.

    ``cfg.scheduler``: ``local``, ``local:N`` or an address (``tcp://HOST:8786``); ``gpus``
    (``N``, ``all``, ``none``; default all visible when ``cfg.device`` is auto/cuda) pins
    the workers of a local cluster one per GPU (see :mod:`._plan`); ``timeout``: seconds to
    reach an existing scheduler and to see its first worker.

    Yields Progress (tiles done over all slides) and Messages; returns one
    PredictionResult per slide (None for a slide that failed with a reported error; with
    one slide its error is raised instead).
    """
    from napari_histo.engine.inference.writer import StoreLock

    if not cfg.scheduler:
        raise ConfigError("predict_distributed needs cfg.scheduler (an address or local:N)")
    if len(sources) != len(out_paths):
        raise ConfigError("give one output path per input slide")
    plan = make_plan(cfg.scheduler, gpus, cfg.device)  # bad --scheduler/--gpus: before any I/O
    locks: list[StoreLock] = []
    try:
        for out in out_paths:  # this (coordinating) process holds every store's lock
            locks.append(StoreLock(out).acquire())
        return (yield from _predict_distributed(
            plan, timeout, sources, model, cfg, out_paths, region, region_units,
            blocks_per_task, [lk.note for lk in locks if lk.note]))
    finally:
        for lock in locks:
            lock.release()


def _predict_distributed(cluster: ClusterPlan, timeout: float,
                         sources: Sequence[str | Path], model: ModelInput, cfg: InferenceConfig,
                         out_paths: Sequence[str | Path], region: Region | None,
                         region_units: str, blocks_per_task: int, notes: list[str],
                         ) -> Task[list[PredictionResult | None]]:
    from napari_histo.engine.inference._model import as_loaded

    if isinstance(model, (str, Path)):
        model = str(Path(model).resolve())
    loaded = as_loaded(model, "cpu")  # planning only (client side)
    from napari_histo.engine.inference._model import Runner

    ncls = Runner(loaded, 1).num_classes
    with contextlib.ExitStack() as stack:
        # an existing cluster is joined first: unreachable or empty, nothing is written
        client = stack.enter_context(open_cluster(cluster, timeout)) if cluster.address else None
        plans = yield from _plan_slides(sources, out_paths, loaded, ncls, cfg, region,
                                        region_units, notes)
        done_tiles = sum(p["stats"].skipped_tiles + p["stats"].resumed_tiles
                         for p in plans if p)
        total = sum(p["stats"].total_tiles for p in plans if p)
        yield Progress(done_tiles, total, "predict")
        if client is None:  # a local cluster starts once every output is accepted
            client = stack.enter_context(open_cluster(cluster, timeout))
        return (yield from _run_cohort(client, cluster.worker_device if cluster.pinned else None,
                                       plans, model if isinstance(model, str) else loaded,
                                       cfg, region, region_units, blocks_per_task,
                                       done_tiles, total))


def _plan_slides(sources: Sequence[str | Path], out_paths: Sequence[str | Path], loaded: Any,
                 ncls: int, cfg: InferenceConfig, region: Region | None, region_units: str,
                 notes: list[str]) -> Task[list[dict[str, Any] | None]]:
    """Plan every slide; in a cohort a slide that cannot run is one error message, not the
    end of the run (None in its place)."""
    plans: list[dict[str, Any] | None] = []
    for src, out in zip(sources, out_paths, strict=False):
        try:
            p = _plan_slide(src, Path(out), loaded, ncls, cfg, region, region_units)
        except HistoError as err:
            if len(sources) == 1:
                raise
            yield Message(f"{Path(src).name}: {one_line(str(err))}", "error")
            plans.append(None)
            continue
        plans.append(p)
    for note in notes:  # stale locks taken over: said once every output is accepted
        yield Message(note, "warning")
    return plans


def _run_cohort(client: Any, device: str | None, plans: list[dict[str, Any] | None],
                model_arg: Any, cfg: InferenceConfig, region: Region | None,
                region_units: str, blocks_per_task: int, done_tiles: int, total: int,
                ) -> Task[list[PredictionResult | None]]:
    """Submit every slide's block groups, follow them, finish each slide when it is done."""
    from distributed import KilledWorker, as_completed

    from napari_histo.engine.inference.failures import segments_from_meta
    from napari_histo.engine.inference.slide_run import result_from_store

    results: list[PredictionResult | None] = [None] * len(plans)
    futures = {}
    cfg_dict = cfg.to_dict()
    for i, p in enumerate(plans):
        if p is None:
            continue
        jobs = p["jobs"]
        for k in range(0, len(jobs), blocks_per_task):
            group = [(j.block, j.offsets) for j in jobs[k : k + blocks_per_task]]
            fut = client.submit(_run_group, p["src"], model_arg, cfg_dict, region,
                                region_units, str(p["out"]), group, device, pure=False)
            futures[fut] = (i, sum(len(o) for _, o in group))
            p["pending"] += 1
    for i, p in enumerate(plans):
        if p is not None and p["pending"] == 0:
            if p["state"] == "done":
                yield Message(f"{Path(p['out']).name}: already complete, skipped")
            yield from _finish(p, cfg)
            results[i] = result_from_store(p["out"])
    try:
        for fut in as_completed(list(futures)):
            i, n = futures[fut]
            p = plans[i]
            assert p is not None
            try:
                info = fut.result()
            except (HistoError, KilledWorker) as err:
                why = (f"its tasks kept killing workers ({one_line(str(err), 120)})"
                       if isinstance(err, KilledWorker) else str(err))
                if not p.get("error"):
                    yield Message(f"{Path(p['src']).name}: {why}", "error")
                p["error"] = True
                info = {"failed": n, "failed_block_tiles": n, "failed_boxes": [],
                        "warnings": []}
            p["stats"].computed_tiles += info.get("computed", 0)
            p["stats"].failed_tiles += info["failed"]
            p["stats"].failed_block_tiles += info.get("failed_block_tiles", 0)
            p["stats"].failed_boxes.extend(tuple(b) for b in info["failed_boxes"])
            p["segments"].update(segments_from_meta(info.get("segments")))
            for w in info["warnings"]:
                yield Message(w, "warning")
            done_tiles += n
            yield Progress(done_tiles, total, "predict")
            p["pending"] -= 1
            if p["pending"] == 0 and not p.get("error"):
                yield from _finish(p, cfg)
                results[i] = result_from_store(p["out"])
    finally:
        for fut in futures:
            fut.cancel()
    return results


def _plan_slide(src: str | Path, out: Path, loaded: Any, ncls: int, cfg: InferenceConfig,
                region: Region | None, region_units: str) -> dict[str, Any]:
    """Client side: plan one slide and create, resume or skip (complete) its store."""
    from napari_histo.engine.inference._pipeline import RunStats, plan_jobs
    from napari_histo.engine.inference.failures import segments_from_meta
    from napari_histo.engine.inference.identity import run_identity
    from napari_histo.engine.inference.slide_run import (
        create_store,
        prepare_slide_run,
        run_fingerprint,
    )
    from napari_histo.engine.inference.writer import ZarrSink, check_resume, prepare_output
    from napari_histo.io._cache import locate_failures
    from napari_histo.io.slide import open_slide

    with open_slide(src) as slide, slide.track_failures() as tracker:
        ctx = prepare_slide_run(slide, loaded, cfg, region=region, region_units=region_units,
                                num_classes=ncls, out_path=out)
        state = prepare_output(out, resume=cfg.resume, overwrite=cfg.overwrite,
                               inputs=[slide.path, loaded.path])
        fp = run_fingerprint(ctx.plan, ctx.res, ctx.origin0, loaded, cfg)
        ident = run_identity(slide, loaded)
        done: set[tuple[int, int]] = set()
        segments: dict[tuple[int, int, int], Any] = {}
        if state == "new":
            create_store(out, ctx.plan, cfg, fp, ctx, slide, loaded, ident=ident)
        else:
            sink = ZarrSink.open(out)
            check_resume(out, sink.meta, fingerprint=fp, **ident)
            done = sink.done_blocks()
            segments = segments_from_meta(sink.meta.get("failed_segments"))
        segments.update(locate_failures(slide, tracker.keys))  # met in tissue detection
        stats = RunStats()
        jobs = [] if state == "done" else plan_jobs(
            ctx.plan, list(range(len(ctx.plan.blocks()))), ctx.skip, done, stats)
    return {"src": str(Path(src).resolve()), "out": out, "jobs": jobs, "stats": stats,
            "state": state, "pending": 0, "segments": segments,
            "geometry": (ctx.origin0, ctx.downsample, ctx.plan.out_shape)}


def _finish(p: dict[str, Any], cfg: Any) -> Task[None]:
    from napari_histo.engine.inference.failures import segments_to_meta, summarise_failures
    from napari_histo.engine.inference.writer import ZarrSink

    if p["state"] == "done":
        return
    st = p["stats"]
    n, boxes, segs = summarise_failures(st, p["segments"], *p["geometry"])
    sink = ZarrSink.open(p["out"])
    sink.finish(skipped_tiles=st.skipped_tiles, total_tiles=st.total_tiles,
                failed_tiles=n, failed_boxes=[list(b) for b in boxes],
                failed_segments=segments_to_meta(segs))
    if set(cfg.formats) - {"zarr"}:
        from napari_histo.engine.inference.export import export_outputs

        yield from export_outputs(p["out"], cfg.formats)
    yield Message(f"wrote {p['out']}")
