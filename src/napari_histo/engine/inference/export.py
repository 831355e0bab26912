"""Exports of a finished prediction store: pyramidal OME-TIFF, QuPath GeoJSON, PNG.

Everything reads the zarr store lazily (dask for the TIFF, a pyramid level of at most
``GEOJSON_MAX_SIDE`` px for contours), so exports of whole slides stay in flat memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Message, Task

__all__ = ["export_outputs", "export_paths"]

GEOJSON_MAX_SIDE = 8192
PNG_MAX_PIXELS = 100_000_000


def export_paths(store: str | Path) -> dict[str, Path]:
    """Where each format of a store ``DIR/NAME.ome.zarr`` goes (siblings named NAME.*)."""
    store = Path(store)
    name = store.name
    for suf in (".ome.zarr", ".zarr"):
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    d = store.parent
    return {"tiff": d / f"{name}.ome.tif", "geojson": d / f"{name}.geojson",
            "png": d / f"{name}_probability.png", "png_labels": d / f"{name}_labels.png"}


def export_outputs(store: str | Path, formats: Sequence[str], *,
                   overwrite: bool = True) -> Task[dict[str, Path]]:
    """Write the requested non-zarr formats next to ``store``; return their paths."""
    import dask.array as da
    import zarr

    group: Any = zarr.open_group(str(store), mode="r")  # zarr types a member as Array | Group
    meta = dict(group.attrs["napari_histo"])
    paths = export_paths(store)
    written: dict[str, Path] = {}
    prob = group["0"]
    mpp = meta.get("mpp")
    if "tiff" in formats:
        from napari_histo.io.writers import write_ome_tiff

        p = da.from_zarr(prob)
        if p.ndim == 3:
            p = p.max(axis=0)
        if p.dtype != np.uint8:
            p = (da.clip(p.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
        write_ome_tiff(paths["tiff"], p, mpp=tuple(mpp) if mpp else None, kind="image",
                       compression="zlib", overwrite=overwrite,
                       name=meta.get("slide_name") or "prediction")
        written["tiff"] = paths["tiff"]
        yield Message(f"wrote {paths['tiff']}")
    if "geojson" in formats:
        from napari_histo.io.geojson import write_geojson

        lab_group = group["labels/prediction"]
        k = 0
        while str(k + 1) in lab_group and max(lab_group[str(k)].shape) > GEOJSON_MAX_SIDE:
            k += 1
        lab = np.asarray(lab_group[str(k)][...])
        down = meta.get("downsample") or [1.0, 1.0]
        origin = meta.get("origin_px") or [0.0, 0.0]
        names = meta.get("class_names") or []
        cmap = {i: str(n) for i, n in enumerate(names) if i > 0}
        if len(names) == 2:
            cmap = {1: str(names[1]).capitalize() if names[1] else "Tumor"}
        write_geojson(paths["geojson"], lab, overwrite=overwrite, downsample=float(down[0]) * 2**k,
                      origin=(float(origin[0]), float(origin[1])), class_names=cmap)
        written["geojson"] = paths["geojson"]
        yield Message(f"wrote {paths['geojson']}")
    if "png" in formats:

        if int(np.prod(prob.shape[-2:])) > PNG_MAX_PIXELS:
            raise ConfigError(f"{store} is too large for PNG; use --format zarr or tiff")
        p = np.asarray(prob[...])
        if p.ndim == 3:
            p = p.max(axis=0)
        if p.dtype != np.uint8:
            p = np.round(np.clip(p.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        lab = np.asarray(group["labels/prediction/0"][...])
        scale = 255 if lab.max(initial=0) <= 1 else max(1, 255 // max(int(lab.max()), 1))
        _save_png(paths["png"], p)
        _save_png(paths["png_labels"], (lab * scale).astype(np.uint8))
        written["png"] = paths["png"]
        written["png_labels"] = paths["png_labels"]
        yield Message(f"wrote {paths['png']} and {paths['png_labels'].name}")
    return written


def _save_png(path: Path, arr: Any) -> None:
    import os

    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(arr).save(tmp)
    os.replace(tmp, path)
