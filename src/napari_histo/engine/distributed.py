"""Spread slides and tile blocks over a dask.distributed cluster.

The client process plans each slide (resolution, tissue, blocks), creates (or resumes) its
OME-Zarr store, and submits groups of blocks as tasks; every worker loads the checkpoint
once, reads its blocks and writes them straight into the shared store (one block = one
chunk, so writers never collide). When all groups of a slide are done the client builds
the pyramid, sets the completion flag and writes the exports. Only the client holds the
stores' locks (``.NAME.lock``): workers write blocks of a store their client locked; they
report the slide tiles they could not decode, which the client counts in the metadata. Because every forward pass is
padded to the same batch size, the result is identical to a single-process run.

``scheduler`` is a dask scheduler address (``tcp://host:8786``) or ``local:N`` for a
LocalCluster of N worker processes (one per GPU on a multi-GPU machine).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_histo.core.errors import ConfigError, HistoError
from napari_histo.core.progress import Message, Progress, Task

if TYPE_CHECKING:
    from napari_histo.engine.inference.config import InferenceConfig
    from napari_histo.engine.inference.context import ModelInput, Region
    from napari_histo.engine.inference.slide_run import PredictionResult

__all__ = ["cluster_client", "predict_distributed"]

_MODELS: dict[tuple[str, str], Any] = {}


@contextlib.contextmanager
def cluster_client(scheduler: str) -> Iterator[Any]:
    """A dask Client for ``scheduler`` (``local:N`` starts and stops a LocalCluster)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ConfigError("--scheduler needs the 'distributed' package") from err
    if scheduler.startswith("local"):
        _, _, n = scheduler.partition(":")
        try:
            workers = int(n) if n else max(1, (os.cpu_count() or 2) // 2)
        except ValueError:
            raise ConfigError(f"bad scheduler {scheduler!r}; use local:N or an address") from None
        if workers < 1:
            raise ConfigError("local:N needs N >= 1 workers")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise ConfigError(f"cannot reach the dask scheduler at {scheduler}: {err}") from err
        try:
            yield client
        finally:
            client.close()


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
               ) -> dict[str, Any]:
    """Worker side: compute ``jobs`` (block, tile offsets) of one slide into ``store``."""
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
                        ) -> Task[list[PredictionResult | None]]:
    """Predict ``sources`` into ``out_paths`` on the cluster named by ``cfg.scheduler``.

    Yields Progress (tiles done over all slides) and Messages; returns one
    PredictionResult per slide (None for a slide that failed with a reported error).
    """
    from napari_histo.engine.inference.writer import StoreLock

    if not cfg.scheduler:
        raise ConfigError("predict_distributed needs cfg.scheduler (an address or local:N)")
    if len(sources) != len(out_paths):
        raise ConfigError("give one output path per input slide")
    locks: list[StoreLock] = []
    try:
        for out in out_paths:  # this (coordinating) process holds every store's lock
            locks.append(StoreLock(out).acquire())
        return (yield from _predict_distributed(sources, model, cfg, out_paths, region,
                                                region_units, blocks_per_task,
                                                [lk.note for lk in locks if lk.note]))
    finally:
        for lock in locks:
            lock.release()


def _predict_distributed(sources: Sequence[str | Path], model: ModelInput, cfg: InferenceConfig,
                         out_paths: Sequence[str | Path], region: Region | None,
                         region_units: str, blocks_per_task: int, notes: list[str],
                         ) -> Task[list[PredictionResult | None]]:
    from napari_histo.engine.inference._model import as_loaded
    from napari_histo.engine.inference._pipeline import RunStats, plan_jobs
    from napari_histo.engine.inference.failures import segments_from_meta
    from napari_histo.engine.inference.identity import run_identity
    from napari_histo.engine.inference.slide_run import (
        create_store,
        prepare_slide_run,
        result_from_store,
        run_fingerprint,
    )
    from napari_histo.engine.inference.writer import ZarrSink, check_resume, prepare_output
    from napari_histo.io._cache import locate_failures
    from napari_histo.io.slide import open_slide

    if isinstance(model, (str, Path)):
        model = str(Path(model).resolve())
    loaded = as_loaded(model, "cpu")  # planning only (client side)
    from napari_histo.engine.inference._model import Runner

    ncls = Runner(loaded, 1).num_classes
    plans: list[dict[str, Any]] = []
    total = 0
    for src, out in zip(sources, out_paths, strict=False):
        out = Path(out)
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
        total += stats.total_tiles
        plans.append({"src": str(Path(src).resolve()), "out": out, "jobs": jobs, "stats": stats,
                      "state": state, "pending": 0, "segments": segments,
                      "geometry": (ctx.origin0, ctx.downsample, ctx.plan.out_shape)})
    for note in notes:  # stale locks taken over: said once every output is accepted
        yield Message(note, "warning")
    results: list[PredictionResult | None] = [None] * len(plans)
    done_tiles = sum(p["stats"].skipped_tiles + p["stats"].resumed_tiles for p in plans)
    yield Progress(done_tiles, total, "predict")
    assert cfg.scheduler  # checked by predict_distributed
    with cluster_client(cfg.scheduler) as client:
        from distributed import as_completed

        futures = {}
        model_arg = model if isinstance(model, str) else loaded
        for i, p in enumerate(plans):
            jobs = p["jobs"]
            for k in range(0, len(jobs), blocks_per_task):
                group = [(j.block, j.offsets) for j in jobs[k : k + blocks_per_task]]
                fut = client.submit(_run_group, p["src"], model_arg, cfg.to_dict(), region,
                                    region_units, str(p["out"]), group, pure=False)
                futures[fut] = (i, sum(len(o) for _, o in group))
                p["pending"] += 1
        for i, p in enumerate(plans):
            if p["pending"] == 0:
                yield from _finish(p, cfg, result_from_store)
                results[i] = result_from_store(p["out"])
        try:
            for fut in as_completed(list(futures)):
                i, n = futures[fut]
                p = plans[i]
                try:
                    info = fut.result()
                except HistoError as err:
                    yield Message(f"{Path(p['src']).name}: {err}", "error")
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
                    yield from _finish(p, cfg, result_from_store)
                    results[i] = result_from_store(p["out"])
        finally:
            for fut in futures:
                fut.cancel()
    return results


def _finish(p: dict[str, Any], cfg: Any, result_from_store: Any) -> Task[None]:
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
