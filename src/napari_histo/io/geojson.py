"""QuPath GeoJSON: parse annotations, and export label masks as QuPath-compatible polygons.

Entry points
------------
* :func:`parse_geojson` (bytes/str/dict -> list of :class:`~napari_histo.io.annotations.Annotation`);
  use :func:`napari_histo.io.annotations.read_annotations` for files.
* :func:`mask_to_geojson` (label mask -> FeatureCollection dict) and :func:`write_geojson`
  (atomic file write of a mask or of annotations).

Accepted input: a ``FeatureCollection``, a single ``Feature``, a bare list of features (what
QuPath's "Export objects as GeoJSON" writes without "FeatureCollection"), or a bare geometry.
``Polygon`` and ``MultiPolygon`` (holes kept) become annotations; points and lines have no
area and are skipped with a warning. The class is ``properties.classification.name``; the
integer label is ``properties.label`` when present (our own exports), else derived from the
class name (see :func:`~napari_histo.io.annotations.default_label`).

Coordinates are level-0 pixels, (x, y) in the file, corners on integers (QuPath's convention);
annotations hold them as (y, x).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError
from napari_histo.core.limits import MAX_ANNOTATION_BYTES, MAX_NESTING, one_line
from napari_histo.io.annotation_model import (
    Annotation,
    assign_unknown_labels,
    clean_ring,
    default_label,
)

__all__ = [
    "annotations_to_geojson",
    "mask_to_geojson",
    "parse_geojson",
    "simplify_ring",
    "write_geojson",
]


# ----------------------------------------------------------------------------- parsing


def parse_geojson(source: str | bytes | Any, *, where: str = "<geojson>") -> list[Annotation]:
    """Parse QuPath GeoJSON (text, bytes or an already-decoded object) into annotations.

    Raises
    ------
    DataError
        Not valid JSON, not GeoJSON, coordinates that are not numbers, or nesting deeper
        than ``MAX_NESTING`` levels.
    """
    if isinstance(source, (str, bytes)):
        if len(source) > MAX_ANNOTATION_BYTES:
            msg = f"{where}: GeoJSON of {len(source)} bytes is larger than the {MAX_ANNOTATION_BYTES} read"
            raise DataError(msg)
        deep = f"{where}: GeoJSON is nested deeper than {MAX_NESTING} levels; it is not an annotation export"
        try:
            obj = json.loads(source)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            msg = f"{where}: malformed GeoJSON ({one_line(exc)}); re-export it from QuPath"
            raise DataError(msg) from None
        except RecursionError:  # json's C scanner stops at the interpreter's recursion limit
            raise DataError(deep) from None
        # a cheap upper bound on the text first; the exact (iterative) walk only when needed
        if _bracket_depth(source) > MAX_NESTING and _object_depth(obj) > MAX_NESTING:
            raise DataError(deep)
    else:
        obj = source
    features = _features(obj, where)
    out: list[Annotation] = []
    for i, feat in enumerate(features):
        out.extend(_feature_annotations(feat, i, where))
    return assign_unknown_labels(out)


def _object_depth(obj: Any) -> int:
    """Nesting depth of lists/dicts in a decoded JSON object, without recursion."""
    best = 0
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        elif not isinstance(o, list):
            continue
        best = max(best, d)
        if d > MAX_NESTING:
            return d
        stack.extend((v, d + 1) for v in o if isinstance(v, (list, dict)))
    return best


def _bracket_depth(text: str | bytes) -> int:
    """Deepest ``[``/``{`` nesting of JSON text (brackets inside strings count too: the
    result only bounds the real depth from above)."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= MAX_NESTING:
        return 0
    arr = np.frombuffer(data, dtype=np.uint8)
    step = np.zeros(256, dtype=np.int8)
    step[ord("[")] = step[ord("{")] = 1
    step[ord("]")] = step[ord("}")] = -1
    d = step[arr]
    nz = d[d != 0].astype(np.int64)
    return int(np.cumsum(nz).max()) if len(nz) else 0


def _features(obj: Any, where: str) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        t = obj.get("type")
        if t == "FeatureCollection":
            feats = obj.get("features")
            if not isinstance(feats, list):
                msg = f"{where}: FeatureCollection without a 'features' list"
                raise DataError(msg)
            return feats
        if t == "Feature":
            return [obj]
        if t in ("Polygon", "MultiPolygon", "GeometryCollection", "Point", "LineString"):
            return [{"type": "Feature", "geometry": obj, "properties": {}}]
    msg = f"{where}: not GeoJSON (expected a FeatureCollection, a Feature or a list of features)"
    raise DataError(msg)


def _color_hex(c: Any) -> str | None:
    """``#rrggbb`` of a QuPath colour (string, [r, g, b] or packed int), or None."""
    try:
        if isinstance(c, str):
            return c if len(c) <= 32 else None
        if isinstance(c, (list, tuple)) and len(c) >= 3:
            return "#{:02x}{:02x}{:02x}".format(*(int(v) & 255 for v in c[:3]))
        if isinstance(c, int):  # QuPath < 0.4 packed ARGB, possibly negative
            return f"#{(c >> 16) & 255:02x}{(c >> 8) & 255:02x}{c & 255:02x}"
    except (TypeError, ValueError, OverflowError):
        return None  # a colour is cosmetic: never refuse a file for it
    return None


def _feature_annotations(feat: Any, i: int, where: str) -> list[Annotation]:
    ctx = f"{where}: feature {i}"
    if not isinstance(feat, dict):
        msg = f"{ctx} is not an object"
        raise DataError(msg)
    if feat.get("type") != "Feature" and "geometry" not in feat:
        feat = {"type": "Feature", "geometry": feat, "properties": {}}
    props = feat.get("properties") or {}
    if not isinstance(props, dict):
        props = {}
    cls = props.get("classification") or {}
    if isinstance(cls, str):
        cls = {"name": cls}
    group = str(cls.get("name") or "") if isinstance(cls, dict) else ""
    color = _color_hex(cls.get("color", cls.get("colorRGB"))) if isinstance(cls, dict) else None
    name = str(props.get("name") or feat.get("id") or f"Feature {i}")
    label, kind = default_label(group)
    if isinstance(props.get("label"), int) and not isinstance(props.get("label"), bool):
        label = int(props["label"])
        if label == 0:
            kind = "exclusion"
    object_type = str(props.get("objectType") or "annotation")
    geom = feat.get("geometry")
    if geom is None:
        warnings.warn(f"{ctx}: no geometry, skipped", stacklevel=3)
        return []
    out = []
    for j, rings in enumerate(_polygons(geom, ctx)):
        ext = clean_ring(_yx(rings[0], ctx), f"{ctx} polygon {j}")
        if ext is None:
            continue
        holes = tuple(
            h for h in (clean_ring(_yx(r, ctx), f"{ctx} hole") for r in rings[1:]) if h is not None
        )
        out.append(
            Annotation(
                name=name,
                group=group,
                label=label,
                kind=kind,
                polygon=ext,
                holes=holes,
                color=color,
                object_type=object_type,
                properties={k: v for k, v in props.items() if k != "classification"},
            )
        )
    return out


def _polygons(geom: Any, ctx: str, depth: int = 0) -> list[list[Any]]:
    if not isinstance(geom, dict) or "type" not in geom:
        msg = f"{ctx}: geometry is not a GeoJSON geometry object"
        raise DataError(msg)
    if depth > MAX_NESTING:
        msg = f"{ctx}: geometry collections nested deeper than {MAX_NESTING} levels"
        raise DataError(msg)
    t = geom["type"]
    coords = geom.get("coordinates")
    polys: Any
    if t == "Polygon":
        polys = [coords]
    elif t == "MultiPolygon":
        polys = coords
    elif t == "GeometryCollection":
        geoms = geom.get("geometries") or []
        if not isinstance(geoms, list):
            msg = f"{ctx}: GeometryCollection 'geometries' must be a list"
            raise DataError(msg)
        return [p for g in geoms for p in _polygons(g, ctx, depth + 1)]
    else:
        warnings.warn(f"{ctx}: {t} geometry has no area, skipped", stacklevel=4)
        return []
    if not isinstance(polys, list) or not all(isinstance(p, list) and p for p in polys):
        msg = f"{ctx}: {t} coordinates must be lists of rings"
        raise DataError(msg)
    return polys


def _yx(ring: Any, ctx: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray([(float(p[1]), float(p[0])) for p in ring], dtype=np.float64)
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        msg = f"{ctx}: a ring has coordinates that are not [x, y] numbers"
        raise DataError(msg) from None
    return arr.reshape(-1, 2)


# ----------------------------------------------------------------------------- export

#: Colours for classes 1..n when none given (QuPath-like: tumor red first).
_PALETTE = [
    (200, 0, 0), (150, 200, 150), (160, 90, 160), (50, 50, 50), (255, 200, 0),
    (0, 0, 180), (112, 112, 225), (0, 160, 160), (230, 120, 0), (100, 60, 20),
]  # fmt: skip


def _ring_coords(ring_yx: npt.NDArray[np.float64], ccw: bool) -> list[list[float]]:
    """Closed (x, y) ring as lists, oriented counter-clockwise (exterior) or clockwise."""
    x, y = ring_yx[:, 1], ring_yx[:, 0]
    signed = float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    # in image axes (y down) a positive shoelace sum is clockwise on screen; RFC 7946 counts
    # orientation in (x, y) maths axes, which is what we follow
    if (signed > 0) != ccw:
        ring_yx = ring_yx[::-1]
    pts = [[round(float(px), 3), round(float(py), 3)] for py, px in ring_yx]
    pts.append(pts[0])
    return pts


def _feature(
    rings: Sequence[npt.NDArray[np.float64]],
    name: str,
    class_name: str,
    label: int,
    color: tuple[int, int, int],
    object_type: str = "annotation",
) -> dict[str, Any]:
    coords = [_ring_coords(rings[0], True)] + [_ring_coords(h, False) for h in rings[1:]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": {
            "objectType": object_type,
            "name": name,
            "classification": {"name": class_name, "color": list(color)},
            "isLocked": False,
            "label": int(label),
        },
    }


def annotations_to_geojson(annotations: Sequence[Annotation]) -> dict[str, Any]:
    """FeatureCollection with one Polygon feature per annotation (holes kept)."""
    feats = []
    for a in annotations:
        c = a.color or "#c80000"
        try:  # a colour read from a file may be anything: fall back to red
            rgb = (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16))
            if not c.startswith("#") or len(c) < 7:
                rgb = (200, 0, 0)
        except ValueError:
            rgb = (200, 0, 0)
        feats.append(_feature((a.polygon, *a.holes), a.name, a.group, a.label, rgb, a.object_type))
    return {"type": "FeatureCollection", "features": feats}


def mask_to_geojson(
    mask: npt.ArrayLike,
    *,
    downsample: float = 1.0,
    origin: tuple[float, float] = (0, 0),
    class_names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    simplify: float = 0.5,
    min_area: float = 0.0,
) -> dict[str, Any]:
    """Trace a label mask into a QuPath FeatureCollection: one feature per region per class.

    Parameters
    ----------
    mask : 2D integer labels (0 = background); numpy or dask (computed: pass a low level).
    downsample, origin : the mask's level-0 pixels per pixel and its level-0 (y, x) top-left,
        so coordinates come out in level-0 pixels whatever level was traced.
    class_names : label -> QuPath class name (default: 1 -> "Tumor", n -> "Class n").
    colors : label -> (r, g, b).
    simplify : Douglas-Peucker tolerance in mask pixels (0 keeps every contour vertex).
    min_area : drop regions smaller than this many mask pixels.

    Returns
    -------
    dict
        GeoJSON FeatureCollection; features carry ``objectType="annotation"``,
        ``classification {name, color}`` and ``label``. Holes are kept as interior rings.
    """
    from skimage.measure import find_contours, label, regionprops

    arr = np.asarray(mask)
    if arr.ndim != 2:
        msg = f"mask must be 2D labels, got shape {arr.shape}"
        raise DataError(msg)
    d = float(downsample)
    oy, ox = float(origin[0]), float(origin[1])
    feats: list[dict[str, Any]] = []
    for cls in (int(v) for v in np.unique(arr) if v != 0):
        cname = (class_names or {}).get(cls) or ("Tumor" if cls == 1 else f"Class {cls}")
        color = (colors or {}).get(cls) or _PALETTE[(cls - 1) % len(_PALETTE)]
        comps = label(arr == cls, connectivity=2)
        for k, rp in enumerate(regionprops(comps)):
            if rp.area < max(min_area, 1):
                continue
            r0, c0, r1, c1 = rp.bbox
            crop = np.pad(rp.image, 1).astype(np.float32)
            # 'high' joins diagonal neighbours like connectivity=2: one outer ring per region
            contours = find_contours(crop, 0.5, fully_connected="high")
            rings = []
            for cont in contours:
                ring = cont[:-1] if np.array_equal(cont[0], cont[-1]) else cont
                if len(ring) < 3:
                    continue
                ring = simplify_ring(ring, simplify)
                # crop index -> mask pixel centre -> level-0 corner-convention coordinates
                yx = (ring + (r0 - 1 + 0.5, c0 - 1 + 0.5)) * d + (oy, ox)
                rings.append(yx)
            if not rings:
                continue
            areas = [_area(r) for r in rings]
            outer = int(np.argmax(areas))
            ordered = [rings[outer]] + [r for i, r in enumerate(rings) if i != outer]
            feats.append(_feature(ordered, f"{cname} {k + 1}", cname, cls, color))
    return {"type": "FeatureCollection", "features": feats}


def simplify_ring(ring: npt.NDArray[np.float64], tolerance: float) -> npt.NDArray[np.float64]:
    """Drop collinear vertices, then (``tolerance > 0``) vertices within ``tolerance`` of the
    chord joining their neighbours, in a few vectorized passes.

    Marching-squares rings have a vertex every half pixel; this keeps their shape (each pass
    moves the outline by less than ``tolerance``) at a fraction of the size, and costs
    O(N) numpy work instead of a Python Douglas-Peucker recursion.
    """
    r = np.asarray(ring, dtype=np.float64)
    for tol in (1e-9, *([tolerance] * 4 if tolerance > 0 else [])):
        n = len(r)
        if n <= 4:
            break
        prev, nxt = np.roll(r, 1, axis=0), np.roll(r, -1, axis=0)
        chord = nxt - prev
        norm = np.hypot(chord[:, 0], chord[:, 1])
        cross = np.abs(chord[:, 0] * (r[:, 1] - prev[:, 1]) - chord[:, 1] * (r[:, 0] - prev[:, 0]))
        dist = np.where(norm > 0, cross / np.maximum(norm, 1e-12), np.inf)
        drop = dist <= tol
        if tol > 1e-9:
            drop[1::2] = False  # never two neighbours in one pass: each chord stays valid
        if not drop.any():
            break
        if n - drop.sum() < 3:
            break
        r = r[~drop]
    return r


def _area(ring: npt.NDArray[np.float64]) -> float:
    y, x = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def write_geojson(
    path: str | Path,
    data: npt.ArrayLike | Sequence[Annotation] | Mapping[str, Any],
    *,
    overwrite: bool = False,
    **mask_kwargs: Any,
) -> Path:
    """Write a mask (traced with :func:`mask_to_geojson`), annotations or a GeoJSON dict.

    The file appears atomically (temporary sibling, then rename); an existing file raises
    :class:`~napari_histo.core.errors.OutputExistsError` unless ``overwrite``.
    """
    from napari_histo.io._atomic import atomic_path

    if isinstance(data, Mapping):
        obj: Any = data
    elif isinstance(data, (list, tuple)) and (not data or isinstance(data[0], Annotation)):
        obj = annotations_to_geojson(data)
    else:
        obj = mask_to_geojson(data, **mask_kwargs)  # type: ignore[arg-type]
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f)
    return Path(path)
