"""Pure conversions from io objects to napari ``LayerDataTuple``s (no viewer, no Qt).

Everything the reader, the sample data and the widgets hand to napari goes through here, so the
physical placement rules live in one place:

* an image layer's ``scale`` is its level-0 microns per pixel (``units`` ``um``), or 1 with
  units ``pixel`` when the file has no mpp;
* a mask is stretched over the slide's physical extent whatever its own resolution, so a
  low-resolution CAMELYON mask or a GlaS label PNG overlays its image exactly;
* annotation polygons are placed in microns using the slide's mpp.

Entry points: :func:`slide_layer_data`, :func:`mask_layer_data`,
:func:`annotations_layer_data`, :func:`layer_placement`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GROUND_TRUTH_COLORS",
    "LayerDataTuple",
    "annotations_layer_data",
    "extent_aligned_placement",
    "layer_placement",
    "mask_layer_data",
    "slide_layer_data",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]

UM = "um"
PIXEL = "pixel"

# Label value -> RGBA. 1 is tumor (CAMELYON/ours), 2 a second class (e.g. exclusion/normal
# tissue), 255 the foreground of binary 0/255 masks such as GlaS; anything else falls back to
# a warm orange so it is still visible over H&E.
GROUND_TRUTH_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (1.0, 0.6, 0.1, 1.0),
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.92, 0.12, 0.12, 1.0),
    2: (0.12, 0.45, 0.95, 1.0),
    3: (0.1, 0.8, 0.3, 1.0),
    255: (0.92, 0.12, 0.12, 1.0),
}

# Annotation group styles: tumor in red, exclusions (ASAP ``_2``) in cyan.
_GROUP_EDGE = {"tumor": (0.95, 0.1, 0.1, 1.0), "exclusion": (0.0, 0.85, 0.95, 1.0)}
_GROUP_FACE = {"tumor": (0.95, 0.1, 0.1, 0.15), "exclusion": (0.0, 0.85, 0.95, 0.15)}
_OTHER_EDGE = (1.0, 0.8, 0.0, 1.0)
_OTHER_FACE = (1.0, 0.8, 0.0, 0.15)


def layer_placement(
    mpp: Sequence[float] | None,
) -> tuple[tuple[float, float], tuple[str, str]]:
    """Return ``(scale, units)`` for a level-0 pixel size ``mpp`` (y, x) in um, or None.

    Without mpp the layer lives in pixels (scale 1, units ``pixel``) so it still overlays
    other pixel-space layers of the same image.
    """
    if mpp is None:
        return (1.0, 1.0), (PIXEL, PIXEL)
    my, mx = (float(mpp[0]), float(mpp[1]))
    if not (np.isfinite(my) and np.isfinite(mx) and my > 0 and mx > 0):
        return (1.0, 1.0), (PIXEL, PIXEL)
    return (my, mx), (UM, UM)


def extent_aligned_placement(
    target_shape: Sequence[int],
    target_scale: Sequence[float],
    shape: Sequence[int],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Scale and translate that stretch an array of ``shape`` over a target's extent.

    napari centres pixel ``i`` at ``i * scale + translate``, so a pixel covers
    ``[(i - 0.5) * s, (i + 0.5) * s]``. Matching the outer edges of both arrays
    (``-0.5 * S .. (H - 0.5) * S``) gives ``s = H * S / h`` and ``t = (s - S) / 2``.

    Parameters
    ----------
    target_shape, target_scale
        Level-0 (height, width) and scale of the layer to align to (e.g. the slide).
    shape
        Level-0 (height, width) of the array to place (e.g. the mask).

    Returns
    -------
    scale, translate
        Per axis (y, x), in the target's units.
    """
    scale = []
    translate = []
    for big, big_scale, small in zip(target_shape[:2], target_scale[:2], shape[:2], strict=False):
        s = float(big) * float(big_scale) / float(small)
        scale.append(s)
        translate.append((s - float(big_scale)) / 2.0)
    return (scale[0], scale[1]), (translate[0], translate[1])


def _levels_of(obj: Any) -> list[Any]:
    """The pyramid (largest first) of a Slide/Mask-like object or a bare array/list."""
    levels = getattr(obj, "levels", None)
    if levels is None:
        levels = obj if isinstance(obj, (list, tuple)) else [obj]
    return list(levels)


def _jsonable(value: Any) -> Any:
    """Tuples/paths/numpy scalars to plain Python so metadata survives saving and printing."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def slide_layer_data(slide: Any, *, name: str | None = None,
                     user_mpp: float | None = None) -> LayerDataTuple:
    """Image ``LayerDataTuple`` for an opened ``io.slide.Slide``.

    Multiscale when the slide has more than one level, ``rgb``, fixed ``contrast_limits`` so
    napari never computes statistics on level 0, ``scale``/``units`` from the level-0 mpp,
    and metadata naming the source file (widgets reopen the slide from it).
    ``user_mpp`` (um/px set by the user in the Pixel size widget) places a slide whose file
    has no pixel size; metadata ``mpp_source`` says where the mpp came from.
    """
    levels = _levels_of(slide)
    meta = slide.metadata
    mpp = meta.mpp
    mpp_source = "file" if mpp is not None else None
    if mpp is None and user_mpp is not None:
        mpp = (float(user_mpp), float(user_mpp))
        mpp_source = "user"
    scale, units = layer_placement(mpp)
    path = Path(slide.path)
    layer_name = name or slide.name
    rgb = levels[0].ndim == 3 and levels[0].shape[-1] in (3, 4)
    histo = {
        "kind": "slide",
        "source": str(path),
        "name": slide.name,
        "format": meta.format,
        "vendor": meta.vendor,
        "mpp": _jsonable(mpp),
        "mpp_source": mpp_source,
        "level_mpps": _jsonable(meta.level_mpps),
        "level_shapes": _jsonable(meta.level_shapes),
        "level_downsamples": _jsonable(meta.level_downsamples),
        "objective_power": meta.objective_power,
        "associated": _jsonable(tuple(meta.associated)),
        "units": units[0],
    }
    kwargs: dict[str, Any] = {
        "name": layer_name,
        "rgb": rgb,
        "multiscale": len(levels) > 1,
        "scale": scale,
        "units": units,
        "axis_labels": ("y", "x"),
        "metadata": {
            "source": str(path),
            "path": str(path),
            "mpp": _jsonable(mpp),
            "vendor": meta.vendor,
            "napari_histo": histo,
        },
    }
    if rgb:
        # uint8 RGB: napari must not scan level 0 for min/max.
        kwargs["contrast_limits"] = (0, 255)
    else:
        kwargs["contrast_limits"] = _dtype_limits(levels[0].dtype)
    data = levels if len(levels) > 1 else levels[0]
    return (data, kwargs, "image")


def _dtype_limits(dtype: Any) -> tuple[float, float]:
    """Full range of an integer dtype, (0, 1) for floats (avoids a stats pass on level 0)."""
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return (float(info.min), float(info.max))
    if dt == np.bool_:
        return (0.0, 1.0)
    return (0.0, 1.0)


def mask_layer_data(
    mask: Any,
    *,
    slide_shape: Sequence[int],
    slide_scale: Sequence[float],
    slide_units: Sequence[str] = (UM, UM),
    name: str,
    source: str | Path | None = None,
    slide_source: str | Path | None = None,
    opacity: float = 0.4,
) -> LayerDataTuple:
    """Labels ``LayerDataTuple`` of a mask stretched over the slide's physical extent.

    Parameters
    ----------
    mask
        A mask object with ``.levels`` (largest first) or an array / list of arrays of
        integer labels (Y, X).
    slide_shape, slide_scale, slide_units
        Level-0 (height, width), layer scale and units of the slide it belongs to.
    name
        Layer name, e.g. ``"tumor_064 ground truth"``.
    source, slide_source
        Files of the mask and of its slide, kept in the metadata.
    """
    levels = _levels_of(mask)
    levels = [_as_label_array(lv) for lv in levels]
    shape = tuple(int(s) for s in levels[0].shape[:2])
    scale, translate = extent_aligned_placement(slide_shape, slide_scale, shape)
    src = getattr(mask, "path", None) or source
    histo = {
        "kind": "ground_truth",
        "source": str(src) if src is not None else None,
        "slide_source": str(slide_source) if slide_source is not None else None,
        # the slide's layer scale: writers map mask pixels back to slide level-0 pixels
        "slide_scale": [float(v) for v in slide_scale[:2]],
        "slide_shape": [int(v) for v in slide_shape[:2]],
        "level_shapes": [list(map(int, lv.shape[:2])) for lv in levels],
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "multiscale": len(levels) > 1,
        "scale": scale,
        "translate": translate,
        "units": tuple(slide_units),
        "axis_labels": ("y", "x"),
        "opacity": opacity,
        "colormap": dict(GROUND_TRUTH_COLORS),
        "blending": "translucent",
        "metadata": {
            "source": histo["source"],
            "path": histo["source"],
            "napari_histo": histo,
        },
    }
    data = levels if len(levels) > 1 else levels[0]
    return (data, kwargs, "labels")


def _as_label_array(arr: Any) -> Any:
    """Drop a trailing channel axis and make sure labels are an integer type (lazily)."""
    if arr.ndim == 3:
        arr = arr[..., 0]
    dt = np.dtype(arr.dtype)
    if dt == np.bool_:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(dt, np.integer):
        arr = arr.astype(np.int32)
    return arr


# --------------------------------------------------------------------------- annotations


def annotations_layer_data(
    annotations: Sequence[Any],
    *,
    mpp: Sequence[float] | None,
    name: str,
    source: str | Path | None = None,
    slide_source: str | Path | None = None,
    simplify: float = 0.0,
) -> LayerDataTuple:
    """Shapes ``LayerDataTuple`` of annotation polygons, in um when ``mpp`` is known.

    Parameters
    ----------
    annotations
        ``io.annotations.Annotation`` records: ``polygon`` (N, 2) level-0 pixels (y, x) with
        pixel corners on integers, ``holes``, ``name``, ``group``, ``label`` and ``kind``
        (``tumor``/``exclusion``/``other``).
    mpp
        Level-0 microns per pixel (y, x) of the slide the coordinates refer to, or None to
        keep pixels.
    name
        Layer name.
    simplify
        Douglas-Peucker tolerance in level-0 pixels for display (0 keeps every vertex).
        napari triangulates polygons in pure Python unless a compiled backend (bermuda) is
        installed: ~1 min for CAMELYON's 25k-vertex tumor_064, so the reader simplifies then.

    Notes
    -----
    napari shapes have no holes, so a polygon's holes become separate polygons styled like
    exclusions (``hole`` is True in the features table). The layer is translated by half a
    pixel because annotation files put pixel corners on integers and napari pixel centres.
    """
    scale, units = layer_placement(mpp)
    factor = np.asarray(scale, dtype=float)
    polys: list[np.ndarray] = []
    feats: dict[str, list[Any]] = {"name": [], "group": [], "label": [], "kind": [], "hole": []}
    for i, ann in enumerate(annotations):
        rings = [(ann.polygon, False)]
        rings += [(h, True) for h in getattr(ann, "holes", ()) or ()]
        for ring, is_hole in rings:
            yx = np.asarray(ring, dtype=float).reshape(-1, 2)
            if simplify > 0 and yx.shape[0] > 8:
                yx = _simplify(yx, simplify)
            if yx.shape[0] < 3:
                continue
            polys.append(yx * factor)
            feats["name"].append(str(getattr(ann, "name", f"annotation {i}")))
            feats["group"].append(str(getattr(ann, "group", "")))
            feats["label"].append(int(getattr(ann, "label", 1)))
            kind = str(getattr(ann, "kind", "other"))
            feats["kind"].append("exclusion" if is_hole else kind)
            feats["hole"].append(is_hole)
    edge = [_GROUP_EDGE.get(k, _OTHER_EDGE) for k in feats["kind"]]
    face = [_GROUP_FACE.get(k, _OTHER_FACE) for k in feats["kind"]]
    units_name = units[0]
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "translate": (-0.5 * scale[0], -0.5 * scale[1]),
        "units": units,
        "axis_labels": ("y", "x"),
        "edge_color": np.asarray(edge, dtype=float).reshape(-1, 4),
        "face_color": np.asarray(face, dtype=float).reshape(-1, 4),
        # world units: ~a few screen pixels at an overview zoom of a slide
        "edge_width": 8.0 if units_name == UM else 8.0 * float(scale[0]),
        "features": feats,
        "metadata": {
            "source": str(source) if source is not None else None,
            "path": str(source) if source is not None else None,
            "napari_histo": {
                "kind": "annotations",
                "source": str(source) if source is not None else None,
                "slide_source": str(slide_source) if slide_source is not None else None,
                "mpp": _jsonable(mpp),
                "units": units_name,
                "groups": sorted(set(feats["group"])),
                "simplified_px": float(simplify),
            },
        },
    }
    return (polys, kwargs, "shapes")


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of a closed ring (kept open: no repeated end point)."""
    from skimage.measure import approximate_polygon

    closed = np.vstack([ring, ring[:1]])
    out = approximate_polygon(closed, tolerance=tolerance)
    if len(out) > 1 and np.array_equal(out[0], out[-1]):
        out = out[:-1]
    return out if len(out) >= 3 else ring
