"""Review regions: tiles or uncertain components of a prediction, scored and ranked.

:func:`score_regions` is the in-memory core (numpy, zarr or dask arrays, read block by
block); :class:`~napari_histo.engine.review.store.ReviewStore` wraps it for a prediction
store and the simulated-annotator benchmark calls it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_WEIGHTS", "Placement", "Region", "score_regions"]

Box = tuple[int, int, int, int]

#: score = uncertainty * mean_uncertainty * tissue_fraction + boundary * boundary_density
DEFAULT_WEIGHTS: dict[str, float] = {"uncertainty": 1.0, "boundary": 0.1}


@dataclass(frozen=True)
class Placement:
    """Where store pixels lie on the slide: level-0 px = origin_px + store px * downsample;
    um = origin_um + store px * mpp (no um without an mpp)."""

    origin_px: tuple[float, float] = (0.0, 0.0)
    downsample: tuple[float, float] = (1.0, 1.0)
    origin_um: tuple[float, float] | None = None
    mpp: tuple[float, float] | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Placement:
        """The placement recorded in a prediction store's ``napari_histo`` metadata."""
        mpp = meta.get("mpp")
        return cls(origin_px=_pair(meta.get("origin_px"), 0.0),
                   downsample=_pair(meta.get("downsample"), 1.0),
                   origin_um=_pair(meta.get("origin_um"), 0.0) if mpp else None,
                   mpp=_pair(mpp, 1.0) if mpp else None)

    def to_px(self, box: Box) -> Box:
        """A store box -> the same box in slide level-0 pixels (outer integer bounds)."""
        y0, x0, y1, x1 = box
        (oy, ox), (dy, dx) = self.origin_px, self.downsample
        return (int(np.floor(oy + y0 * dy)), int(np.floor(ox + x0 * dx)),
                int(np.ceil(oy + y1 * dy)), int(np.ceil(ox + x1 * dx)))

    def to_um(self, box: Box) -> tuple[float, float, float, float] | None:
        """A store box -> micrometres on the slide, None without a pixel size."""
        if self.mpp is None or self.origin_um is None:
            return None
        y0, x0, y1, x1 = box
        (oy, ox), (my, mx) = self.origin_um, self.mpp
        return (oy + y0 * my, ox + x0 * mx, oy + y1 * my, ox + x1 * mx)


def _pair(v: Any, default: float) -> tuple[float, float]:
    if not v:
        return (default, default)
    return (float(v[0]), float(v[1]))


@dataclass(frozen=True)
class Region:
    """One place to review, best first by ``rank`` (1 = review first)."""

    id: str  #: stable id: "t-ROW-COL" (tile grid) or "c-Y0-X0" (component, store px)
    rank: int
    score: float  #: the ranking score (higher = review first)
    uncertainty: float  #: mean uncertainty inside the region
    mean_prob: float  #: mean positive-class probability (1 - p(background) when multi-class)
    area_px: int  #: tissue pixels of the region, store pixels
    boundary_px: int  #: predicted-boundary pixels inside, store pixels
    bbox_store: Box  #: (y0, x0, y1, x1) in prediction-store level-0 pixels
    bbox_px: Box  #: the same box in slide level-0 pixels
    bbox_um: tuple[float, float, float, float] | None  #: micrometres; None without mpp
    kind: str  #: "tile" | "component"
    tta: float | None = None  #: TTA disagreement when computed

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (lists for boxes); has ``score``, ``bbox_um`` and ``bbox_px``."""
        d = asdict(self)
        for k in ("bbox_store", "bbox_px", "bbox_um"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Region:
        """Inverse of :meth:`to_dict` (the ranking stored in a review store)."""
        um = d.get("bbox_um")
        return cls(id=str(d["id"]), rank=int(d["rank"]), score=float(d["score"]),
                   uncertainty=float(d["uncertainty"]), mean_prob=float(d["mean_prob"]),
                   area_px=int(d["area_px"]), boundary_px=int(d["boundary_px"]),
                   bbox_store=_box(d["bbox_store"]), bbox_px=_box(d["bbox_px"]),
                   bbox_um=None if um is None else (float(um[0]), float(um[1]),
                                                    float(um[2]), float(um[3])),
                   kind=str(d["kind"]),
                   tta=None if d.get("tta") is None else float(d["tta"]))


def _box(v: Any) -> Box:
    return (int(v[0]), int(v[1]), int(v[2]), int(v[3]))


def score_regions(probabilities: Any, *, threshold: float = 0.5, unit: str = "tile",
                  size: int = 256, tissue: Any = None, uncertainty: Any = None,
                  weights: Mapping[str, float] | None = None, method: str = "entropy",
                  placement: Placement | None = None, min_tissue: float = 0.05,
                  band: float = 0.5, top: int | None = None) -> list[Region]:
    """Rank tiles (``unit="tile"``, squares of ``size`` store px) or connected components of
    the uncertain band (``unit="component"``, uncertainty >= ``band``) of a prediction.

    ``probabilities``: (H, W) positive class or (C, H, W) (float or uint8 = 255 p; numpy,
    zarr or dask; read block by block). ``tissue``: bool (H, W) or None (then tissue = any
    probability mass: a store's skipped background is exactly 0). ``uncertainty``: a
    precomputed (H, W) map in [0, 1] (float, or uint8 = 255 u) else ``method`` ("entropy" |
    "margin") of the probabilities. Tiles with less than ``min_tissue`` tissue are left out.

    Score (higher = review first)::

        score = w_u * mean_uncertainty * tissue_fraction + w_b * min(1, boundary_px / (2 * side))

    where tissue_fraction is tissue pixels / box pixels (for components: min(1, area /
    size**2), so a speck is not worth a tile) and boundary_px counts predicted-label edge
    pixels (threshold or argmax) inside the box; weights default to
    :data:`DEFAULT_WEIGHTS`. Ties keep position order (row-major), so the order is
    deterministic.
    """
    raise NotImplementedError
