"""Polygon annotations: read CAMELYON16/ASAP XML and QuPath GeoJSON, rasterize at any level.

Entry points: :func:`read_annotations` (path -> list of :class:`Annotation`),
:func:`parse_asap_xml`, :func:`rasterize_annotations`, :func:`annotations_to_shapes`.
QuPath GeoJSON parsing lives in :mod:`napari_histo.io.geojson` (with the mask -> GeoJSON export);
the :class:`Annotation` model and label rules in :mod:`napari_histo.io.annotation_model`, both
formats' common ground (re-exported here).

Coordinate convention (used by every function here)
---------------------------------------------------
* Polygons are ``(N, 2)`` float64 arrays of **level-0 pixel coordinates in (y, x) order**, the
  numpy/napari order (``Annotation.xy`` gives (x, y), the order of ASAP XML and GeoJSON files).
* Coordinates are continuous with pixel *corners* on integers, as in QuPath, ASAP and
  OpenSlide's ``read_region``: level-0 pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and its
  centre is ``(i + 0.5, j + 0.5)``. A pixel belongs to a polygon when its centre is inside
  (top-left fill rule on edges), at any downsample.
* ``to_microns(mpp)`` multiplies by microns per pixel, giving napari ``Shapes`` data for a layer
  whose ``scale`` is 1 um (the slide layer carries ``scale=mpp``).

Labels: CAMELYON16 groups ``_0``/``_1`` (and ``Tumor``, ``metastases``, ungrouped ``None``) are
tumor (label 1); group ``_2`` (and ``Exclusion``, QuPath ``Ignore*``) are exclusions, cut out
after all other polygons are filled, exactly as CAMELYON16's evaluation masks were made.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError
from napari_histo.core.limits import MAX_ANNOTATION_BYTES, check_regular_file, one_line
from napari_histo.io.annotation_model import (
    EXCLUSION_GROUPS,
    TUMOR_GROUPS,
    Annotation,
    FloatArray,
    Kind,
    assign_unknown_labels,
    clean_ring,
    default_label,
)
from napari_histo.io.geojson import parse_geojson

# The model (Annotation, labels, ring cleaning) lives in io.annotation_model, re-exported here.
__all__ = [
    "EXCLUSION_GROUPS",
    "TUMOR_GROUPS",
    "Annotation",
    "Kind",
    "annotations_to_shapes",
    "assign_unknown_labels",
    "clean_ring",
    "default_label",
    "drop_outside",
    "fill_rings",
    "parse_asap_xml",
    "rasterize_annotations",
    "read_annotations",
]


# ----------------------------------------------------------------------------- ASAP XML


def parse_asap_xml(source: str | Path | bytes, *, where: str | None = None) -> list[Annotation]:
    """Parse CAMELYON16/ASAP XML (``<ASAP_Annotations>``) into annotations.

    Parameters
    ----------
    source : path to the file, or its bytes.
    where : name used in messages (defaults to the path).

    Raises
    ------
    DataError
        The file is not well-formed XML or not an ASAP annotation file.
    """
    if where is None:
        where = str(source) if not isinstance(source, bytes) else "<bytes>"
    if not isinstance(source, bytes):
        check_regular_file(source, what=str(source), error=DataError,
                           max_bytes=MAX_ANNOTATION_BYTES)
        source = Path(source).read_bytes()
    if b"<!ENTITY" in source:  # ASAP never declares entities; refuse expansion bombs outright
        msg = f"{where}: annotation XML declares entities (<!ENTITY>), which are not read"
        raise DataError(msg)
    try:
        root = ET.fromstring(source)
    except ET.ParseError as exc:
        msg = f"{where}: malformed annotation XML ({one_line(exc)}); re-export it from ASAP/QuPath"
        raise DataError(msg) from None
    except (RecursionError, MemoryError):
        msg = f"{where}: annotation XML is too large or nested too deeply to read"
        raise DataError(msg) from None
    if root.tag != "ASAP_Annotations":
        msg = f"{where}: XML root is <{root.tag}>, expected <ASAP_Annotations> (CAMELYON16/ASAP)"
        raise DataError(msg)
    colors = {
        g.get("Name", ""): g.get("Color") for g in root.iter("Group") if g.get("Name") is not None
    }
    out: list[Annotation] = []
    for i, node in enumerate(root.iter("Annotation")):
        name = node.get("Name") or f"Annotation {i}"
        group = node.get("PartOfGroup") or "None"
        kind_attr = (node.get("Type") or "Polygon").lower()
        ctx = f"{where}: annotation {name!r}"
        if kind_attr in ("dot", "pointset", "point"):
            warnings.warn(f"{ctx}: {kind_attr} annotation has no area, skipped", stacklevel=2)
            continue
        pts: list[tuple[int, float, float]] = []
        for c in node.iter("Coordinate"):
            try:
                order = int(float(c.get("Order", len(pts))))
                # some ASAP versions write the locale's decimal comma
                x = float(str(c.get("X")).replace(",", "."))
                y = float(str(c.get("Y")).replace(",", "."))
            except (TypeError, ValueError, OverflowError):
                msg = f"{ctx}: bad coordinate {ET.tostring(c, encoding='unicode').strip()!r}"
                raise DataError(msg) from None
            pts.append((order, y, x))
        pts.sort(key=lambda p: p[0])
        ring = clean_ring([(y, x) for _, y, x in pts], ctx)
        if ring is None:
            continue
        label, kind = default_label(group)
        out.append(
            Annotation(
                name=name,
                group=group,
                label=label,
                kind=kind,
                polygon=ring,
                color=node.get("Color") or colors.get(group),
            )
        )
    return assign_unknown_labels(out)


def read_annotations(
    path: str | Path, *, extent: tuple[float, float] | None = None
) -> list[Annotation]:
    """Read an ASAP/CAMELYON16 XML or QuPath GeoJSON annotation file.

    The format is chosen by content (``<`` -> XML, ``{``/``[`` -> JSON), so a wrong
    extension still works. An empty file gives a :class:`DataError`.

    Parameters
    ----------
    path : the file (at most ``MAX_ANNOTATION_BYTES``; pipes and devices are refused).
    extent : level-0 (height, width) of the slide the annotations belong to, when known:
        polygons lying wholly or far outside it are skipped with one warning
        (see :func:`drop_outside`).
    """
    p = Path(path)
    if not p.exists():
        msg = f"annotation file not found: {p}"
        raise DataError(msg)
    check_regular_file(p, what=str(p), error=DataError, max_bytes=MAX_ANNOTATION_BYTES)
    data = p.read_bytes()
    head = data.lstrip()[:1]
    if not head:
        msg = f"{p}: annotation file is empty"
        raise DataError(msg)
    if head == b"<":
        out = parse_asap_xml(data, where=str(p))
    elif head in (b"{", b"["):
        out = parse_geojson(data, where=str(p))
    else:
        msg = f"{p}: not an annotation file (expected ASAP XML or QuPath GeoJSON)"
        raise DataError(msg)
    if extent is not None:
        out = drop_outside(out, extent, where=str(p))
    return out


#: a polygon reaching further outside the slide than this fraction of its size is skipped
OUTSIDE_MARGIN = 0.5


def drop_outside(
    annotations: Sequence[Annotation], extent: tuple[float, float], *, where: str = "annotations"
) -> list[Annotation]:
    """Keep the annotations that belong on a slide of level-0 ``extent`` (height, width).

    A polygon is skipped when it lies wholly outside the slide, or when a vertex lies more
    than ``OUTSIDE_MARGIN`` (half) of the slide's size beyond its edges: it was drawn on
    another slide, or its coordinates are corrupt. One warning counts the skipped polygons;
    a polygon slightly overhanging the edge (a normal tracing) is kept.
    """
    h, w = float(extent[0]), float(extent[1])
    if not (math.isfinite(h) and math.isfinite(w)) or h <= 0 or w <= 0:
        return list(annotations)
    my, mx = OUTSIDE_MARGIN * h, OUTSIDE_MARGIN * w
    kept: list[Annotation] = []
    far = outside = 0
    for a in annotations:
        ymin, xmin, ymax, xmax = a.bbox
        for hole in a.holes:
            if len(hole):
                lo, hi = hole.min(axis=0), hole.max(axis=0)
                ymin, xmin = min(ymin, float(lo[0])), min(xmin, float(lo[1]))
                ymax, xmax = max(ymax, float(hi[0])), max(xmax, float(hi[1]))
        if ymin < -my or xmin < -mx or ymax > h + my or xmax > w + mx:
            far += 1
        elif ymax <= 0 or xmax <= 0 or ymin >= h or xmin >= w:
            outside += 1
        else:
            kept.append(a)
    if far or outside:
        parts = []
        if far:
            parts.append(f"{far} reach far outside it")
        if outside:
            parts.append(f"{outside} lie wholly outside it")
        warnings.warn(
            f"{where}: skipped {far + outside} of {len(annotations)} polygon(s) that do not fit "
            f"the slide ({w:.0f} x {h:.0f} px): {' and '.join(parts)}; are these the "
            "annotations of this slide?",
            stacklevel=2,
        )
    return kept


# ----------------------------------------------------------------------------- rasterize


def rasterize_annotations(
    annotations: Sequence[Annotation],
    shape: tuple[int, int],
    *,
    downsample: float = 1.0,
    origin: tuple[float, float] = (0, 0),
    group_labels: Mapping[str, int] | None = None,
) -> npt.NDArray[np.uint8]:
    """Rasterize annotations into a uint8 label window of any pyramid level.

    Parameters
    ----------
    annotations : polygons in level-0 pixels (y, x).
    shape : (height, width) of the output, in pixels *at this downsample*.
    downsample : level-0 pixels per output pixel (e.g. 2**level).
    origin : level-0 (y, x) of the window's top-left corner.
    group_labels : overrides ``group -> label``; a group mapped to 0 is treated as an
        exclusion, and groups not listed keep their annotation's own label.

    Returns
    -------
    Array of ``shape``: non-exclusion polygons filled with their label in file order (later
    ones win), then exclusion polygons set to 0, as CAMELYON16's evaluation masks.
    Only polygons whose bounding box meets the window are drawn, so a small window of a
    huge slide costs only its own polygons.
    """
    h, w = (int(shape[0]), int(shape[1]))
    out = np.zeros((h, w), dtype=np.uint8)
    if h <= 0 or w <= 0 or not annotations:
        return out
    d = float(downsample)
    if d <= 0:
        msg = f"downsample must be > 0, got {downsample}"
        raise ValueError(msg)
    oy, ox = float(origin[0]), float(origin[1])
    # window in level-0 pixels, for the bbox test
    wy0, wx0, wy1, wx1 = oy, ox, oy + h * d, ox + w * d
    fills: list[tuple[Annotation, int]] = []
    cuts: list[Annotation] = []
    for a in annotations:
        label = a.label
        if group_labels is not None and a.group in group_labels:
            label = int(group_labels[a.group])
        excl = (
            label == 0
            if group_labels is not None and a.group in group_labels
            else (a.kind == "exclusion")
        )
        ymin, xmin, ymax, xmax = a.bbox
        if ymax < wy0 or ymin > wy1 or xmax < wx0 or xmin > wx1:
            continue
        if excl:
            cuts.append(a)
        else:
            if not 0 < label <= 255:
                msg = f"annotation {a.name!r} (group {a.group!r}) has label {label}, not in 1..255"
                raise DataError(msg)
            fills.append((a, label))
    for a, label in fills:
        _fill(out, a, d, oy, ox, label)
    for a in cuts:
        _fill(out, a, d, oy, ox, 0)
    return out


def _fill(out: np.ndarray, a: Annotation, d: float, oy: float, ox: float, value: int) -> None:
    rings = [(r - (oy, ox)) / d for r in (a.polygon, *a.holes)]
    rows, ca, cb = ring_spans(rings, out.shape)
    # one memset per span: O(spans + area), far cheaper than a cumsum over the bbox
    for r, c0, c1 in zip(rows.tolist(), ca.tolist(), cb.tolist(), strict=True):
        out[r, c0:c1] = value


def ring_spans(
    rings: Iterable[FloatArray], shape: tuple[int, int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Scanline-fill rings (even-odd, so holes cut out) given in output pixel units (y, x).

    Pixel ``(i, j)`` is inside when its centre ``(i+.5, j+.5)`` is (top-left rule). Cost is
    O(rows x crossings), not O(pixels x vertices) as a point-in-polygon test. Returns the
    horizontal spans ``(row, col_start, col_stop)`` clipped to ``shape``.
    """
    h, w = shape
    empty = np.zeros(0, dtype=np.int64)
    edges = []
    for ring in rings:
        if len(ring) < 3:
            continue
        nxt = np.roll(ring, -1, axis=0)
        edges.append(np.concatenate([ring, nxt], axis=1))  # y1, x1, y2, x2
    if not edges:
        return empty, empty, empty
    e = np.concatenate(edges)
    e = e[e[:, 0] != e[:, 2]]  # horizontal edges never cross a row centre
    ylo = np.minimum(e[:, 0], e[:, 2])
    yhi = np.maximum(e[:, 0], e[:, 2])
    # rows whose centre lies in [ylo, yhi)
    r_start = np.clip(np.ceil(ylo - 0.5), 0, h).astype(np.int64)
    r_stop = np.clip(np.ceil(yhi - 0.5), 0, h).astype(np.int64)
    keep = r_stop > r_start
    if not keep.any():
        return empty, empty, empty
    e, r_start, r_stop = e[keep], r_start[keep], r_stop[keep]
    counts = r_stop - r_start
    rows = np.repeat(r_start, counts) + (
        np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    ee = np.repeat(e, counts, axis=0)
    yc = rows + 0.5
    xs = ee[:, 1] + (yc - ee[:, 0]) * (ee[:, 3] - ee[:, 1]) / (ee[:, 2] - ee[:, 0])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # even-odd: crossings pair up within each row (each closed ring crosses a row evenly)
    ra, xa, xb = rows[0::2], xs[0::2], xs[1::2]
    ca = np.clip(np.ceil(xa - 0.5), 0, w).astype(np.int64)
    cb = np.clip(np.ceil(xb - 0.5), 0, w).astype(np.int64)
    ok = cb > ca
    return ra[ok], ca[ok], cb[ok]


def fill_rings(rings: Iterable[FloatArray], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Boolean mask of ``shape`` inside the rings (output pixel units, (y, x), even-odd)."""
    mask = np.zeros(shape, dtype=bool)
    for r, c0, c1 in zip(*(x.tolist() for x in ring_spans(rings, shape)), strict=True):
        mask[r, c0:c1] = True
    return mask


# ----------------------------------------------------------------------------- napari helpers


def annotations_to_shapes(
    annotations: Sequence[Annotation], mpp: float | tuple[float, float] | None = None
) -> tuple[list[FloatArray], dict[str, list[Any]]]:
    """Shapes-layer data: exterior rings (in um when ``mpp`` given, else level-0 px) and properties.

    Holes are not representable as napari shapes; exclusions stay separate polygons whose
    ``kind`` property is "exclusion", so the plugin can colour them apart.
    """
    data = [a.to_microns(mpp) if mpp is not None else a.polygon.copy() for a in annotations]
    props: dict[str, list[Any]] = {
        "name": [a.name for a in annotations],
        "group": [a.group for a in annotations],
        "label": [a.label for a in annotations],
        "kind": [a.kind for a in annotations],
    }
    return data, props
