"""``napari-histo info SLIDE [--json]``: format, levels, mpp and vendor of a slide."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``info`` subcommand."""
    p = sub.add_parser("info", help="print a slide's format, levels, mpp and vendor")
    p.add_argument("slide", help="slide or image file (SVS, TIFF, NDPI, OME-TIFF/Zarr, PNG...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the slide's metadata."""
    from napari_histo.io.slide import open_slide

    with open_slide(args.slide) as slide:
        meta = slide.metadata
        info = {
            "path": str(slide.path),
            "format": meta.format,
            "vendor": meta.vendor,
            "levels": [{"height": h, "width": w} for h, w in meta.level_shapes],
            "mpp": list(meta.mpp) if meta.mpp else None,
        }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>8}: {value}")
    return 0
