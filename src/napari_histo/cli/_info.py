"""``napari-histo info SLIDE [--json]``: format, levels, mpp, vendor and associated images.

Given a prediction store written by ``napari-histo predict`` it prints the run instead:
complete or unfinished (with the blocks written so far), slide, checkpoint, output size and
the tiles that could not be read.

Widths and heights are printed explicitly (``width x height``) because pathology tools
disagree on the order; JSON levels carry ``width``, ``height``, ``downsample``, ``mpp`` and
``native`` (False for levels napari-histo computes because the file has no such level).
"""

from __future__ import annotations

import argparse
from typing import Any

from napari_histo.cli._json import json_help, print_json
from napari_histo.io.formats import describe_formats


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    p = sub.add_parser(
        "info",
        help="print a slide's format, levels, mpp, vendor and associated images",
        description="Print what napari-histo reads from a slide (nothing is decoded).",
    )
    p.add_argument("slide", help=f"slide or image file: {describe_formats(probe=False)}")
    p.add_argument("--json", action="store_true", help=json_help("the metadata"))
    p.set_defaults(func=run)


def prediction_info(path: str) -> dict[str, Any] | None:
    """What a napari-histo prediction store holds, or None when ``path`` is not one.

    Read from the store's JSON, zarr v2 or v3 (no torch, no zarr import): completion, blocks
    written by an unfinished run, the slide and checkpoint it was made from, and its failures.
    """
    from pathlib import Path

    p = Path(path)
    from napari_histo.io.ome_zarr import ATTR, read_attrs

    meta = (read_attrs(p) or {}).get(ATTR)
    if not isinstance(meta, dict) or not meta or "kind" in meta:  # io.ome_zarr stores: kind
        return None
    fp = meta.get("fingerprint") or {}
    shape = list(fp.get("out_shape") or [])
    info: dict[str, Any] = {
        "path": str(p), "kind": "prediction", "complete": bool(meta.get("complete")),
        "task": meta.get("task"), "class_names": meta.get("class_names"),
        "slide": meta.get("source"), "checkpoint": meta.get("checkpoint"),
        "checkpoint_sha256": meta.get("checkpoint_sha256"), "shape": shape,
        "mpp": meta.get("mpp"), "prob_dtype": meta.get("prob_dtype"),
        "threshold": meta.get("threshold"), "total_tiles": meta.get("total_tiles"),
        "skipped_tiles": meta.get("skipped_tiles"),
        "failed_tiles": int(meta.get("failed_tiles") or 0),
        "failed_boxes": meta.get("failed_boxes") or [],
    }
    from napari_histo.io.prediction_status import block_progress

    done, info["blocks_total"] = block_progress(p, meta)
    if not info["complete"]:
        info["blocks_done"] = done
    return info


def _prediction_table(info: dict[str, Any]) -> str:
    if info["complete"]:
        state = "complete"
    else:
        of = f" of {info['blocks_total']}" if info.get("blocks_total") else ""
        state = (f"UNFINISHED ({info['blocks_done']}{of} blocks written); finish it with "
                 "napari-histo predict ... --resume")
    shape = info["shape"]
    size = f"{shape[-1]} x {shape[-2]} px (width x height)" if len(shape) >= 2 else "unknown"
    sha = info.get("checkpoint_sha256")
    lines = [
        f"path:            {info['path']}",
        "format:          napari-histo prediction (OME-Zarr)",
        f"state:           {state}",
        f"task:            {info['task']}  (classes: {', '.join(info['class_names'] or [])})",
        f"slide:           {info['slide'] or 'unknown'}",
        f"checkpoint:      {info['checkpoint'] or 'in-memory model'}"
        + (f"  (sha256 {sha[:12]})" if sha else ""),
        f"size:            {size}",
        f"tiles:           {info['total_tiles'] or 0} in all, {info['skipped_tiles'] or 0} "
        f"background, {info['failed_tiles']} unreadable",
    ]
    return "\n".join(lines)


def slide_info(path: str) -> dict[str, Any]:
    """Metadata of the slide at ``path`` as a JSON-serialisable dict."""
    from napari_histo.io.slide import open_slide

    with open_slide(path) as slide:
        meta = slide.metadata
        mpps = meta.level_mpps
        levels = []
        for i, (h, w) in enumerate(meta.level_shapes):
            dy, dx = slide.level_downsample_yx(i)
            levels.append({
                "level": i,
                "width": int(w),
                "height": int(h),
                "downsample": round((dy + dx) / 2, 4),
                "mpp": [round(v, 6) for v in mpps[i]] if mpps else None,
                "tile": {"width": int(meta.tile_shapes[i][1]), "height": int(meta.tile_shapes[i][0])}
                if meta.tile_shapes else None,
                "native": bool(meta.level_native[i]) if meta.level_native else True,
            })
        props = {k: v for k, v in meta.properties.items() if isinstance(v, (str, int, float, bool))}
        return {
            "path": str(slide.path),
            "name": slide.name,
            "format": meta.format,
            "vendor": meta.vendor,
            "width": int(meta.level_shapes[0][1]),
            "height": int(meta.level_shapes[0][0]),
            "mpp": {"y": meta.mpp[0], "x": meta.mpp[1]} if meta.mpp else None,
            "objective_power": meta.objective_power,
            "compression": meta.compression,
            "source_dtype": meta.source_dtype,
            "source_samples": meta.source_samples,
            "native_level_count": meta.native_level_count,
            "level_count": len(meta.level_shapes),
            "levels": levels,
            "associated_images": list(meta.associated),
            "properties": props,
        }


def _table(info: dict[str, Any]) -> str:
    mpp = info["mpp"]
    mpp_text = f"{mpp['x']:.4g} x {mpp['y']:.4g} um/px (x, y)" if mpp else "unknown"
    lines = [
        f"path:            {info['path']}",
        f"format:          {info['format']}  (vendor: {info['vendor'] or 'unknown'})",
        f"size:            {info['width']} x {info['height']} px (width x height)",
        f"mpp:             {mpp_text}",
        f"objective power: {info['objective_power'] or 'unknown'}",
        f"compression:     {info['compression'] or 'unknown'}  "
        f"(source pixels: {info['source_dtype']}, {info['source_samples']} samples)",
        f"levels:          {info['native_level_count']} in file, "
        f"{info['level_count']} in total (computed levels marked)",
    ]
    for lv in info["levels"]:
        m = lv["mpp"]
        tile = lv["tile"]
        lines.append(
            f"  [{lv['level']}] {lv['width']:>7} x {lv['height']:<7} downsample {lv['downsample']:<8g}"
            + (f" {m[1]:.4g} um/px" if m else "")
            + (f"  chunks {tile['width']}x{tile['height']}" if tile else "")
            + ("" if lv["native"] else "  (computed)")
        )
    lines.append(f"associated:      {', '.join(info['associated_images']) or 'none'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the slide's metadata (or the prediction store's state)."""
    pred = prediction_info(args.slide)
    if pred is not None:
        if args.json:
            print_json(pred, indent=2)
        else:
            print(_prediction_table(pred))
        return 0
    info = slide_info(args.slide)
    if args.json:
        print_json(info, indent=2)
    else:
        print(_table(info))
    return 0
