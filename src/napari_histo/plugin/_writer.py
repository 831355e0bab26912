"""napari writer contributions: Image/Labels layers to OME-Zarr and pyramidal OME-TIFF, and
Labels layers to QuPath GeoJSON polygons.

napari calls each writer with ``(path, data, attributes)`` of one layer (``data`` is a list of
arrays for a multiscale layer, possibly dask-backed). The actual encoding, pyramid building and
atomic rename live in ``napari_histo.io``; this module only turns the layer's ``scale`` and
``units`` into microns per pixel and picks what to hand over.

Entry points: :func:`write_image_zarr`, :func:`write_labels_zarr`, :func:`write_image_ome_tiff`,
:func:`write_labels_ome_tiff`, :func:`write_labels_geojson`, :func:`write_shapes_geojson`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "layer_mpp",
    "write_image_ome_tiff",
    "write_image_zarr",
    "write_labels_geojson",
    "write_labels_ome_tiff",
    "write_labels_zarr",
    "write_shapes_geojson",
]

#: The largest level traced into GeoJSON polygons (pixels): finer multiscale levels are skipped
#: so a whole-slide mask is traced from a level that fits comfortably in memory.
MAX_TRACE_PIXELS = 4096 * 4096


def _levels(data: Any) -> list[Any]:
    """A layer's data as a list of arrays, largest first."""
    # napari's MultiScaleData is a Sequence of arrays (not a list); arrays are not Sequences
    if isinstance(data, Sequence) and not isinstance(data, str):
        return list(data)
    return [data]


def _unit_to_um(unit: Any) -> float | None:
    """Micrometres per ``unit`` (a pint unit or a string), or None when it is not a length."""
    if unit is None:
        return None
    text = str(unit).strip().lower()
    if text in ("", "pixel", "pixels", "px", "none"):
        return None
    try:
        import pint

        reg = getattr(unit, "_REGISTRY", None) or pint.get_application_registry()
        q = reg.Quantity(1.0, unit if not isinstance(unit, str) else text)
        return float(q.to("micrometer").magnitude)
    except Exception:
        table = {"um": 1.0, "µm": 1.0, "micrometer": 1.0, "micron": 1.0, "nm": 1e-3,
                 "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3}  # fmt: skip
        return table.get(text)


def layer_mpp(attributes: Mapping[str, Any]) -> tuple[float, float] | None:
    """Level-0 microns per pixel (y, x) of a 2D layer from its ``scale`` and ``units``.

    Layers in pixels (units ``pixel``) have no mpp; a layer without units but with a
    non-unit scale is taken to be in microns (older napari, or layers built by hand).
    """
    scale = attributes.get("scale")
    if scale is None:
        return None
    sy, sx = (float(v) for v in list(scale)[-2:])
    units = attributes.get("units")
    if units is None or (isinstance(units, (list, tuple)) and not units):
        if sy == 1.0 and sx == 1.0:
            return None
        factors: list[float | None] = [1.0, 1.0]
    else:
        ulist = list(units) if isinstance(units, (list, tuple)) else [units, units]
        factors = [_unit_to_um(u) for u in ulist[-2:]]
    if factors[0] is None or factors[1] is None:
        return None
    my, mx = sy * factors[0], sx * factors[1]
    if not (math.isfinite(my) and math.isfinite(mx) and my > 0 and mx > 0):
        return None
    return (my, mx)


def _halving(levels: Sequence[Any]) -> bool:
    """True when every level is exactly half (ceil) the previous one, as io writers need."""
    for a, b in zip(levels, levels[1:], strict=False):
        ha, wa = a.shape[:2]
        hb, wb = b.shape[:2]
        if (hb, wb) != (math.ceil(ha / 2), math.ceil(wa / 2)):
            return False
    return True


def _pyramid_for_io(data: Any, *, labels: bool) -> Any:
    """What to hand to the io writers: level 0, or the layer's own in-memory pyramid.

    io rebuilds lower levels from level 0 chunk by chunk (labels by striding, images by
    2x2 means), which is cheap next to writing level 0, so a lazy (dask) multiscale only
    passes its level 0 and nothing is materialised. An in-memory pyramid whose levels halve
    exactly is passed whole.
    """
    levels = [_prepare(a, labels=labels) for a in _levels(data)]
    if len(levels) > 1 and _halving(levels) and all(isinstance(a, np.ndarray) for a in levels):
        return levels
    return levels[0]


def _prepare(arr: Any, *, labels: bool) -> Any:
    """Labels as an unsigned integer type io writes losslessly (lazily for dask)."""
    if not labels:
        return arr
    dt = np.dtype(arr.dtype)
    if dt == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(dt, np.signedinteger):
        # napari labels are often int32/int64 with small non-negative values
        return arr.astype(np.dtype(f"u{dt.itemsize}"))
    return arr


def _name(attributes: Mapping[str, Any], path: str) -> str:
    return str(attributes.get("name") or Path(path).name.split(".")[0])


def _write_zarr(path: str, data: Any, attributes: Mapping[str, Any], kind: str) -> list[str]:
    from napari_histo.io.ome_zarr import write_ome_zarr

    labels = kind == "labels"
    meta = attributes.get("metadata") or {}
    histo = meta.get("napari_histo") if isinstance(meta, Mapping) else None
    extra: dict[str, Any] = {"layer_name": _name(attributes, path)}
    if isinstance(histo, Mapping) and histo.get("source"):
        extra["source"] = str(histo["source"])
    out = write_ome_zarr(
        path,
        _pyramid_for_io(data, labels=labels),
        mpp=layer_mpp(attributes),
        kind="labels" if labels else "image",
        name=_name(attributes, path),
        overwrite=True,  # napari's save dialog already confirmed replacing the file
        attrs=extra,
    )
    return [str(out)]


def _write_tiff(path: str, data: Any, attributes: Mapping[str, Any], kind: str) -> list[str]:
    from napari_histo.io.writers import write_ome_tiff

    labels = kind == "labels"
    out = write_ome_tiff(
        path,
        _pyramid_for_io(data, labels=labels),
        mpp=layer_mpp(attributes),
        kind="labels" if labels else "image",
        name=_name(attributes, path),
        overwrite=True,
    )
    return [str(out)]


def write_image_zarr(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save an Image layer (RGB, grayscale or heatmap; multiscale or dask) as OME-Zarr."""
    return _write_zarr(path, data, attributes, "image")


def write_labels_zarr(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save a Labels layer as an OME-Zarr label pyramid (NGFF image-label metadata)."""
    return _write_zarr(path, data, attributes, "labels")


def write_image_ome_tiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save an Image layer as a tiled, compressed, pyramidal OME-TIFF."""
    return _write_tiff(path, data, attributes, "image")


def write_labels_ome_tiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save a Labels layer as a tiled, losslessly compressed, pyramidal OME-TIFF."""
    return _write_tiff(path, data, attributes, "labels")


def geojson_geometry(
    attributes: Mapping[str, Any], level_shape: Sequence[int], level0_shape: Sequence[int]
) -> tuple[float, tuple[float, float]]:
    """``(downsample, origin)`` mapping a traced level to level-0 pixel coordinates.

    GeoJSON (QuPath) coordinates are level-0 pixels of the *slide* with pixel corners on
    integers. When the layer metadata tells the slide's scale (``slide_scale`` of ground truth
    from the reader, ``downsample`` of predictions), a mask pixel spans
    ``layer_scale / slide_scale`` slide pixels;
    otherwise the layer's own pixels are the level-0 pixels. The layer's ``translate`` is
    kept: napari centres layer pixel ``i`` at ``i * s + t`` and slide pixel ``j`` at ``j * S``.
    """
    scale = [float(v) for v in list(attributes.get("scale") or (1.0, 1.0))[-2:]]
    translate = [float(v) for v in list(attributes.get("translate") or (0.0, 0.0))[-2:]]
    meta = attributes.get("metadata") or {}
    histo = meta.get("napari_histo") if isinstance(meta, Mapping) else None
    slide_scale = None
    if isinstance(histo, Mapping) and histo.get("slide_scale") is not None:
        # ground truth opened by the reader
        slide_scale = [float(v) for v in histo["slide_scale"]][-2:]
    elif isinstance(histo, Mapping) and histo.get("downsample") is not None:
        # predictions (plugin._result_layers): output pixel = ``downsample`` slide pixels
        ds = [float(v) for v in histo["downsample"]][-2:]
        slide_scale = [scale[i] / ds[i] for i in range(2)]
    if slide_scale is None:
        slide_scale = scale
    # level k of a multiscale layer: one of its pixels spans f level-0 layer pixels
    f = [level0_shape[i] / level_shape[i] for i in range(2)]
    d = [scale[i] * f[i] / slide_scale[i] for i in range(2)]
    # world of level-k pixel i (napari multiscale: level-0 transform of a scaled pixel):
    # centre at (i + 0.5) * f * s - 0.5 * s + t; slide corner coord c = world / S + 0.5
    origin = [(translate[i] - 0.5 * scale[i]) / slide_scale[i] + 0.5 for i in range(2)]
    # io traces pixel centres at (i + 0.5) * d + origin
    return float(np.mean(d)), (origin[0], origin[1])


def write_labels_geojson(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save a Labels layer as QuPath GeoJSON polygons (one feature per region and class).

    Coordinates are level-0 slide pixels; a multiscale layer is traced from its finest
    level that fits in :data:`MAX_TRACE_PIXELS`.
    """
    from napari_histo.io.geojson import write_geojson

    levels = _levels(data)
    level0 = levels[0]
    pick = levels[-1]
    for lv in levels:
        if int(np.prod(lv.shape[:2])) <= MAX_TRACE_PIXELS:
            pick = lv
            break
    arr = np.asarray(pick)
    if arr.ndim == 3:
        arr = arr[..., 0]
    downsample, origin = geojson_geometry(attributes, arr.shape[:2], level0.shape[:2])
    out = write_geojson(
        path, _prepare(arr, labels=True), downsample=downsample, origin=origin, overwrite=True
    )
    return [str(out)]


def _shapes_slide_scale(attributes: Mapping[str, Any]) -> tuple[float, float]:
    """World units per level-0 slide pixel of a Shapes layer (y, x).

    Annotations read by the plugin carry their slide's mpp; a layer in pixels is in level-0
    pixels; a layer drawn in microns uses the pixel size of the slide the current viewer
    shows in microns.
    """
    meta = attributes.get("metadata") or {}
    histo = meta.get("napari_histo") if isinstance(meta, Mapping) else None
    if isinstance(histo, Mapping) and histo.get("kind") == "annotations":
        mpp = histo.get("mpp")
        if mpp:
            return float(mpp[0]), float(mpp[1])
        return 1.0, 1.0
    units = attributes.get("units")
    ulist = list(units)[-2:] if isinstance(units, (list, tuple)) else [units, units]
    if units is None or _unit_to_um(ulist[-1]) is None:
        return 1.0, 1.0
    factor = _unit_to_um(ulist[-1]) or 1.0
    try:
        import napari

        from napari_histo.plugin._units import slide_in_um

        viewer = napari.current_viewer()
        ref = slide_in_um(viewer) if viewer is not None else None
    except Exception:
        ref = None
    if ref is None:
        raise ValueError("this Shapes layer is in microns but no slide in microns is open: "
                         "open its slide to save the shapes in its pixels")
    mpp_ref = layer_mpp({"scale": tuple(ref.scale), "units": [str(u) for u in ref.units]})
    if mpp_ref is None:
        raise ValueError("the slide's pixel size is unknown")
    return mpp_ref[0] / factor, mpp_ref[1] / factor


def _ellipse(corners: np.ndarray, n: int = 64) -> np.ndarray:
    centre = corners.mean(axis=0)
    half = (corners.max(axis=0) - corners.min(axis=0)) / 2.0
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + half[0] * np.sin(t), centre[1] + half[1] * np.cos(t)], axis=1)


def write_shapes_geojson(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save a Shapes layer's polygons, rectangles and ellipses as QuPath GeoJSON.

    Coordinates are level-0 slide pixels with pixel corners on integers (QuPath, ASAP), so
    the file reopens on the same tissue: world = data * scale + translate, slide pixel
    corner = world / slide scale + 0.5. Lines and paths (no area) are skipped.
    """
    from napari_histo.io.annotation_model import Annotation
    from napari_histo.io.geojson import write_geojson

    scale = np.asarray(list(attributes.get("scale") or (1.0, 1.0))[-2:], dtype=float)
    translate = np.asarray(list(attributes.get("translate") or (0.0, 0.0))[-2:], dtype=float)
    slide_scale = np.asarray(_shapes_slide_scale(attributes), dtype=float)
    types = list(attributes.get("shape_type") or ["polygon"] * len(data))
    feats = attributes.get("features")
    columns: dict[str, list[Any]] = {}
    if feats is not None and len(feats):
        columns = {str(k): list(feats[k]) for k in getattr(feats, "columns", [])}
    records = []
    for i, poly in enumerate(data):
        kind = str(types[i]) if i < len(types) else "polygon"
        if kind in ("line", "path"):
            continue
        yx = np.asarray(poly, dtype=float)[:, -2:]
        if kind == "ellipse":
            yx = _ellipse(yx)
        if len(yx) < 3:
            continue
        px = (yx * scale + translate) / slide_scale + 0.5
        group = str(columns.get("group", [""] * (i + 1))[i]) if "group" in columns else ""
        ann_kind = str(columns["kind"][i]) if "kind" in columns else "tumor"
        if ann_kind not in ("tumor", "exclusion", "other"):
            ann_kind = "other"
        records.append(Annotation(
            name=str(columns["name"][i]) if "name" in columns else f"{_name(attributes, path)} {i}",
            group=group or ("Tumor" if ann_kind == "tumor" else ""),
            label=int(columns["label"][i]) if "label" in columns else 1,
            kind=ann_kind,  # type: ignore[arg-type]
            polygon=px,
        ))
    out = write_geojson(path, records, overwrite=True)
    return [str(out)]
