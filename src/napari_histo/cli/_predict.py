"""``napari-histo predict INPUT [INPUT ...] --model CKPT --out OUT``: slides -> OME-Zarr heatmaps.

Each input becomes ``OUT/<name>.ome.zarr`` (probabilities + label map + pyramid), or ``OUT``
itself when it ends in ``.zarr`` and there is one input; ``--format`` adds pyramidal
OME-TIFF, QuPath GeoJSON or PNG next to it. An existing output is never overwritten unless
``--overwrite``; ``--resume`` finishes an interrupted run. ``--scheduler local:N|ADDRESS``
spreads slides and tile blocks over a dask cluster.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from napari_histo.cli._json import json_help, print_json
from napari_histo.core.errors import ConfigError, HistoError, one_line
from napari_histo.io.formats import describe_formats, missing_extra_message


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = sub.add_parser("predict", help="run a model over slides or images (OME-Zarr heatmaps)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"slide or image files: {describe_formats(probe=False)}")
    p.add_argument("--model", "--checkpoint", dest="model", required=True, help="checkpoint .pt")
    p.add_argument("--out", required=True, help="output folder (or NAME.ome.zarr for one input)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--mpp", type=float, help="working resolution um/px (default: the model's)")
    res.add_argument("--level", type=int, help="read this pyramid level as is")
    p.add_argument("--slide-mpp", type=float, help="level-0 um/px for slides without metadata")
    p.add_argument("--tile", type=int, help="model input size in px")
    p.add_argument("--overlap", type=int, help="overlap of neighbouring tiles in px (even)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--stride", type=int, help="patch classifiers: px per heatmap pixel")
    p.add_argument("--context", type=int, help="patch classifiers: context patch px")
    p.add_argument("--threshold", type=float, default=0.5, help="label-map threshold")
    p.add_argument("--all-tiles", action="store_true", help="also predict background tiles")
    p.add_argument("--prob-dtype", choices=("float16", "uint8"), default="float16")
    p.add_argument("--format", action="append", choices=("zarr", "tiff", "geojson", "png"),
                   help="output format(s), repeatable (default zarr)")
    p.add_argument("--ngff", choices=("0.4", "0.5"), default="0.4",
                   help="OME-Zarr version: 0.4 on zarr v2 (default) or 0.5 on zarr v3")
    p.add_argument("--region", help="y0,x0,y1,x1 in level-0 px (append 'um' for microns)")
    p.add_argument("--near", help="y,x level-0 px: predict blocks nearest to it first")
    p.add_argument("--readers", type=int, default=4, help="tile reader threads")
    p.add_argument("--scheduler", help="dask scheduler address, or local:N worker processes")
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over flips/rot90 (8x slower)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also store an uncertainty map and the review ranking in each "
                        "segmentation store (see napari-histo review)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="finish an interrupted output")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (with --json: only warnings and errors on stderr)")
    p.add_argument("--json", action="store_true",
                   help=json_help("the result (outputs: store, exported files, tile counts "
                                  "and timings per input; failures: input and error, exit 2 "
                                  "when any; warnings; timings)"))
    p.set_defaults(func=run)


def _region(text: str | None) -> tuple[Any, str]:
    if not text:
        return None, "px"
    units = "px"
    t = text.strip()
    if t.endswith("um"):
        units, t = "um", t[:-2]
    try:
        vals = [float(v) for v in t.split(",")]
    except ValueError:
        raise ConfigError(f"--region must be y0,x0,y1,x1, got {text!r}") from None
    if len(vals) != 4:
        raise ConfigError(f"--region must be y0,x0,y1,x1, got {text!r}")
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"--region must be 4 finite numbers (no nan/inf), got {text!r}")
    if vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise ConfigError(f"--region must have y1 > y0 and x1 > x0, got {text!r}")
    return tuple(vals), units


def _near(text: str | None) -> tuple[float, ...] | None:
    """``--near y,x`` (or a y0,x0,y1,x1 box): finite level-0 pixel coordinates."""
    if not text:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--near must be y,x in level-0 px, got {text!r}") from None
    if len(vals) not in (2, 4) or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"--near must be 2 (y,x) or 4 finite numbers, got {text!r}")
    return vals


def _outputs(inputs: list[Path], out: Path) -> list[Path]:
    if len(inputs) == 1 and out.name.endswith(".zarr"):
        return [out]
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the outputs")
    names = []
    for p in inputs:
        name = p.name
        for suf in (".ome.tiff", ".ome.tif", ".ome.zarr"):
            if name.lower().endswith(suf):
                name = name[: -len(suf)]
                break
        else:
            name = p.stem
        names.append(out / f"{name}.ome.zarr")
    if len(set(names)) != len(names):
        raise ConfigError("two inputs have the same name; predict them into separate --out folders")
    return names


class LazyBar:
    """A tqdm bar opened at the first progress event, so an early error stays one line.

    Informational messages go to stdout (stderr is kept for warnings and the error line),
    or to stderr with ``--json`` (stdout then holds only the JSON); warnings and errors are
    also kept in ``notes`` for the JSON.
    """

    def __init__(self, desc: str, quiet: bool, as_json: bool = False,
                 notes: list[tuple[str, str]] | None = None) -> None:
        self.desc = desc
        self.quiet = quiet
        self.as_json = as_json
        self.notes = notes if notes is not None else []
        self.bar: Any = None

    def show(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, unit="tile", file=sys.stderr, dynamic_ncols=True)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def say(self, text: str, level: str) -> None:
        if level != "info":
            self.notes.append((level, text))
        if level == "info" and self.quiet and self.as_json:
            return
        line = text if level == "info" else f"napari-histo: {level}: {text}"
        stream = sys.stdout if level == "info" and not self.as_json else sys.stderr
        if self.bar is not None:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Predict every input; one readable line per failed slide, exit 2 if any failed."""
    from napari_histo.core.progress import Message, Progress, run_task
    from napari_histo.engine.inference import InferenceConfig, predict_slide

    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        if not p.exists():
            raise ConfigError(f"{p}: no such file")
        missing = missing_extra_message(p)  # e.g. a .mrxs without the openslide extra
        if missing is not None:
            raise ConfigError(missing)
    model = Path(args.model)
    if not model.is_file():
        raise ConfigError(f"checkpoint not found: {model}")
    formats = tuple(dict.fromkeys(args.format or ["zarr"]))
    if "zarr" not in formats:
        formats = ("zarr", *formats)  # the streamed store is the source of every export
    cfg = InferenceConfig(
        mpp=args.mpp, level=args.level, slide_mpp=args.slide_mpp, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        stride=args.stride, context=args.context, threshold=args.threshold,
        tissue_only=not args.all_tiles, prob_dtype=args.prob_dtype, formats=formats,
        resume=args.resume, overwrite=args.overwrite, scheduler=args.scheduler,
        readers=args.readers, amp=args.amp, tta=args.tta, ngff_version=args.ngff)
    region, units = _region(args.region)
    near = _near(args.near)
    outs = _outputs(inputs, Path(args.out))
    quiet = args.quiet
    as_json = bool(getattr(args, "json", False))
    notes: list[tuple[str, str]] = []  # (level, text) of warning and error messages
    t0 = time.perf_counter()

    def render(bar: LazyBar) -> Any:
        def on_event(ev: Any) -> None:
            if isinstance(ev, Progress) and ev.desc != "tile":
                bar.show(ev.done, ev.total)
            elif isinstance(ev, Message):
                bar.say(ev.text, ev.level)
        return on_event

    if cfg.scheduler:
        from napari_histo.engine.distributed import predict_distributed

        with LazyBar("predict", quiet, as_json, notes) as bar:
            results = run_task(predict_distributed(inputs, model, cfg, outs, region=region,
                                                   region_units=units), render(bar))
            if args.uncertainty:
                for r in results:
                    if r is not None:
                        _rank_store(r, bar)
        failed = sum(r is None for r in results)
        if as_json:
            errors = [t for lv, t in notes if lv == "error"]
            done = [_output_json(src, r, formats) for src, r in zip(inputs, results, strict=False)
                    if r is not None]
            lost = [{"input": str(src), "store": str(out), "error": next(
                (t for t in errors if t.startswith(f"{src.name}: ")), "failed (see stderr)")}
                for src, out, r in zip(inputs, outs, results, strict=False) if r is None]
            print_json(_predict_json(model, done, lost, notes, time.perf_counter() - t0))
            return 2 if failed else 0
        for r in results:
            if r is not None:
                print(f"{r.path}: {r.total_tiles} tiles, {r.skipped_tiles} background, "
                      f"{r.failed_tiles} unreadable")
        return 2 if failed else 0
    failed = 0
    outputs: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for src, out in zip(inputs, outs, strict=False):
        try:
            with LazyBar(src.name, quiet, as_json, notes) as bar:
                res = run_task(predict_slide(src, model, cfg, region=region,
                                             region_units=units, order_near=near,
                                             out_path=out), render(bar))
                review = _rank_store(res, bar) if args.uncertainty else None
            if as_json:
                outputs.append({**_output_json(src, res, formats),
                                **({"review": review} if review is not None else {})})
            else:
                print(f"{out}: {res.total_tiles} tiles, {res.skipped_tiles} background, "
                      f"{res.failed_tiles} unreadable")
        except HistoError as err:
            if len(inputs) == 1:
                raise
            failed += 1
            failures.append({"input": str(src), "store": str(out), "error": one_line(str(err))})
            print(f"napari-histo predict: error: {src.name}: {err}", file=sys.stderr)
    if as_json:
        print_json(_predict_json(model, outputs, failures, notes, time.perf_counter() - t0))
    return 2 if failed else 0


def _rank_store(res: Any, bar: LazyBar) -> dict[str, Any] | None:
    """``--uncertainty``: the review ranking and uncertainty map of a finished segmentation
    store (a warning, not an error, for a patch heatmap or an unfinished store)."""
    from napari_histo.core.progress import Message, Progress, run_task
    from napari_histo.engine.review import ReviewStore

    if res.path is None or not res.complete or res.task != "segment":
        bar.say(f"{res.path}: no review ranking (only finished segmentation stores are "
                "ranked)", "warning")
        return None
    store = ReviewStore.open(res.path)

    def on_event(ev: Any) -> None:
        if isinstance(ev, Progress):
            bar.show(ev.done, ev.total)
        elif isinstance(ev, Message):
            bar.say(ev.text, ev.level)

    regions = run_task(store.rank(), on_event)
    if not bar.as_json:
        print(f"{res.path}: {len(regions)} regions ranked for review "
              f"(napari-histo review {res.path} --top 10)")
    return {"regions": len(regions), "uncertainty": str(store.uncertainty_path),
            "seconds": store.settings.get("seconds")}


def _output_json(src: Path, res: Any, formats: tuple[str, ...]) -> dict[str, Any]:
    """One finished input of ``predict --json``."""
    from napari_histo.engine.inference.export import export_paths

    files: dict[str, str] = {}
    if res.path is not None:
        paths = export_paths(res.path)
        keys = {"tiff": ("tiff",), "geojson": ("geojson",), "png": ("png", "png_labels")}
        files = {k: str(paths[k]) for f in formats for k in keys.get(f, ())
                 if paths[k].exists()}
    stats = res.stats
    return {
        "input": str(src), "store": str(res.path) if res.path is not None else None,
        "complete": bool(res.complete), "files": files,
        "total_tiles": int(res.total_tiles), "skipped_tiles": int(res.skipped_tiles),
        "failed_tiles": int(res.failed_tiles),
        "failed_boxes": [list(b) for b in res.failed_boxes],
        "timings": None if stats is None else {
            "wall_s": round(stats.wall_s, 3), "model_s": round(stats.model_s, 3),
            "wait_read_s": round(stats.wait_read_s, 3)},
    }


def _predict_json(model: Path, outputs: list[dict[str, Any]], failures: list[dict[str, str]],
                  notes: list[tuple[str, str]], wall_s: float) -> dict[str, Any]:
    """``predict --json``: every output, every failed input, warnings and the total time."""
    return {
        "command": "predict", "ok": not failures, "model": str(model),
        "outputs": outputs, "failures": failures,
        "warnings": list(dict.fromkeys(t for lv, t in notes if lv == "warning")),
        "timings": {"total_s": round(wall_s, 3)},
    }
