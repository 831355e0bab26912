"""``napari-histo info SLIDE [--json]``: format, levels, mpp, vendor and associated images.

Widths and heights are printed explicitly (``width x height``) because pathology tools
disagree on the order; JSON levels carry ``width``, ``height``, ``downsample``, ``mpp`` and
``native`` (False for levels napari-histo computes because the file has no such level).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``info`` subcommand."""
    p = sub.add_parser(
        "info",
        help="print a slide's format, levels, mpp, vendor and associated images",
        description="Print what napari-histo reads from a slide (nothing is decoded).",
    )
    p.add_argument("slide", help="slide or image file (SVS, NDPI, TIFF, OME-TIFF, OME-Zarr, PNG...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


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
    """Print the slide's metadata."""
    info = slide_info(args.slide)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_table(info))
    return 0
