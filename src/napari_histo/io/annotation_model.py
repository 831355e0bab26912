"""The annotation model shared by every annotation format: :class:`Annotation` and its labels.

:mod:`napari_histo.io.annotations` (ASAP XML, reading any annotation file, rasterizing) and
:mod:`napari_histo.io.geojson` (QuPath GeoJSON in and out) both build on this module; it
imports neither, so the two format modules never import each other. Everything here is
re-exported by :mod:`napari_histo.io.annotations`, the usual import.

Coordinates are level-0 pixels in (y, x) order; see :mod:`napari_histo.io.annotations` for
the full convention and the label rules.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError
from napari_histo.core.limits import MAX_COORD

__all__ = [
    "EXCLUSION_GROUPS",
    "TUMOR_GROUPS",
    "Annotation",
    "FloatArray",
    "Kind",
    "assign_unknown_labels",
    "clean_ring",
    "default_label",
]

Kind = Literal["tumor", "exclusion", "other"]
FloatArray = npt.NDArray[np.float64]

#: Group/class names (lower case) that mean "tumor" (label 1) and "cut out" (exclusion).
TUMOR_GROUPS = frozenset({"_0", "_1", "tumor", "tumour", "metastases", "metastasis", "none"})
EXCLUSION_GROUPS = frozenset(
    {"_2", "exclusion", "exclude", "excluded", "ignore", "ignore*", "non-tumor", "nontumor"}
)
#: QuPath's default classes after Tumor get fixed labels, so exports stay comparable.
_QUPATH_LABELS = {
    "tumor": 1,
    "stroma": 2,
    "immune cells": 3,
    "necrosis": 4,
    "other": 5,
    "region*": 6,
    "positive": 7,
    "negative": 8,
}


@dataclass(frozen=True, eq=False)
class Annotation:
    """One polygon region (exterior ring plus optional holes) in level-0 pixels, (y, x).

    Attributes
    ----------
    name : annotation name (ASAP ``Name``, QuPath ``properties.name``).
    group : ASAP ``PartOfGroup`` or QuPath classification name ("" when unclassified).
    label : integer class written by :func:`rasterize_annotations` (0 for exclusions).
    kind : "tumor", "exclusion" (cut out after filling) or "other" (another class).
    polygon : (N, 2) exterior ring, level-0 pixels (y, x), not repeated at the end.
    holes : interior rings, same convention.
    color : "#rrggbb" or None.
    object_type : QuPath objectType ("annotation", "detection", "cell"...); "annotation" for XML.
    """

    name: str
    group: str
    label: int
    kind: Kind
    polygon: FloatArray
    holes: tuple[FloatArray, ...] = ()
    color: str | None = None
    object_type: str = "annotation"
    properties: dict[str, Any] = field(default_factory=dict)
    _bbox: tuple[float, float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        poly = np.asarray(self.polygon, dtype=np.float64).reshape(-1, 2)
        object.__setattr__(self, "polygon", poly)
        if len(poly) == 0:
            msg = f"annotation {self.name!r} has no coordinates"
            raise DataError(msg)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        # cached: rasterizing many small windows tests every annotation's bbox each time
        object.__setattr__(self, "_bbox", (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))

    @property
    def xy(self) -> FloatArray:
        """Exterior ring in (x, y) order, as written in XML/GeoJSON files."""
        return self.polygon[:, ::-1]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(ymin, xmin, ymax, xmax) of the exterior ring in level-0 pixels."""
        return self._bbox

    @property
    def area(self) -> float:
        """Area in level-0 pixels^2 (exterior minus holes, shoelace formula)."""
        return _ring_area(self.polygon) - sum(_ring_area(h) for h in self.holes)

    def to_microns(self, mpp: float | tuple[float, float]) -> FloatArray:
        """Exterior ring in micrometres (y, x) for a slide of level-0 ``mpp`` (um/px)."""
        my, mx = (mpp, mpp) if np.isscalar(mpp) else mpp  # type: ignore[misc]
        return self.polygon * np.array([my, mx], dtype=np.float64)


def _ring_area(ring: FloatArray) -> float:
    y, x = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def default_label(group: str) -> tuple[int, Kind]:
    """Map a group/class name to ``(label, kind)``; unknown names get ``(-1, "other")``."""
    g = group.strip().lower()
    if g in EXCLUSION_GROUPS or g.startswith("ignore"):
        return 0, "exclusion"
    if g in TUMOR_GROUPS or g == "":
        return 1, "tumor"
    if g in _QUPATH_LABELS:
        return _QUPATH_LABELS[g], "other"
    for prefix in ("class ", "class_", "label ", "label_"):
        if g.startswith(prefix) and g[len(prefix) :].strip().isdigit():
            return int(g[len(prefix) :]), "other"
    if g.isdigit():
        return int(g), "other"
    return -1, "other"


def assign_unknown_labels(annotations: list[Annotation]) -> list[Annotation]:
    """Give groups with label -1 the next free labels, in order of first appearance."""
    used = {a.label for a in annotations}
    nxt = max([*used, 8]) + 1
    new: dict[str, int] = {}
    out = []
    for a in annotations:
        if a.label < 0:
            if a.group not in new:
                new[a.group] = nxt
                nxt += 1
            a = Annotation(
                a.name,
                a.group,
                new[a.group],
                a.kind,
                a.polygon,
                a.holes,
                a.color,
                a.object_type,
                a.properties,
            )
        out.append(a)
    return out


def clean_ring(ring: npt.ArrayLike, where: str) -> FloatArray | None:
    """Return a finite (N, 2) ring without the closing duplicate, or None (with a warning).

    Rings with NaN/inf coordinates, or coordinates beyond ``MAX_COORD`` level-0 px (four
    times the largest slide napari-histo opens), are skipped with a warning.
    """
    arr = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        warnings.warn(f"{where}: non-finite coordinates (NaN or infinity), polygon skipped",
                      stacklevel=3)
        return None
    if len(arr) and float(np.abs(arr).max()) > MAX_COORD:
        warnings.warn(f"{where}: coordinates up to {float(np.abs(arr).max()):.3g} px lie beyond "
                      f"any slide (|x|, |y| <= {MAX_COORD:.0f} px), polygon skipped",
                      stacklevel=3)
        return None
    if len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    if len(arr) < 3:
        warnings.warn(f"{where}: polygon with {len(arr)} point(s) (< 3) skipped", stacklevel=3)
        return None
    return arr
