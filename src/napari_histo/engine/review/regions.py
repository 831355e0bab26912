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

__all__ = ["DEFAULT_DIVERSITY", "DEFAULT_WEIGHTS", "Placement", "Region", "diversify",
           "rescale_regions", "score_regions"]

Box = tuple[int, int, int, int]

#: score = uncertainty * mean_uncertainty * tissue_fraction + boundary * boundary_density
DEFAULT_WEIGHTS: dict[str, float] = {"uncertainty": 1.0, "boundary": 0.1}
#: soft non-maximum suppression of the tile order (:func:`diversify`): each tile already
#: placed next to a tile multiplies that tile's effective score by ``1 - DEFAULT_DIVERSITY``
DEFAULT_DIVERSITY = 0.5


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
                  band: float = 0.5, top: int | None = None,
                  diversity: float = DEFAULT_DIVERSITY) -> list[Region]:
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
    deterministic. Tiles are then ordered by :func:`diversify` (``diversity`` > 0, the
    default): one uncertain structure spanning neighbouring tiles does not take the whole
    top of the list; ``score`` stays each tile's own score, ``rank`` is the order.
    ``diversity=0`` gives the plain score order.
    """
    from napari_histo.core.errors import ConfigError

    if unit not in ("tile", "component"):
        raise ConfigError(f"unit must be 'tile' or 'component', got {unit!r}")
    if method not in ("entropy", "margin"):
        raise ConfigError(f"method must be 'entropy' or 'margin', got {method!r}")
    size = int(size)
    if size < 2:
        raise ConfigError(f"region size must be at least 2 store pixels, got {size}")
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    place = placement or Placement()
    if unit == "tile":
        stats = _tile_stats(probabilities, threshold, size, tissue, uncertainty, method,
                            min_tissue)
    else:
        stats = _component_stats(probabilities, threshold, size, tissue, uncertainty, method,
                                 band)
    scored = []
    for st in stats:
        y0, x0, y1, x1 = st["box"]
        side = max(y1 - y0, x1 - x0)
        bdens = min(1.0, st["boundary"] / (2.0 * side))
        score = w["uncertainty"] * st["u"] * st["frac"] + w["boundary"] * bdens
        scored.append((score, st))
    scored.sort(key=lambda t: (-t[0], t[1]["box"][0], t[1]["box"][1]))
    regions = [Region(id=st["id"], rank=i + 1, score=float(score), uncertainty=float(st["u"]),
                      mean_prob=float(st["p"]), area_px=int(st["area"]),
                      boundary_px=int(st["boundary"]), bbox_store=st["box"],
                      bbox_px=place.to_px(st["box"]), bbox_um=place.to_um(st["box"]),
                      kind=unit)
               for i, (score, st) in enumerate(scored)]
    if unit == "tile":
        regions = diversify(regions, diversity)
    if top is not None:
        regions = regions[:max(0, int(top))]
    return regions


def diversify(regions: list[Region], factor: float = DEFAULT_DIVERSITY) -> list[Region]:
    """Order tiles by a greedy soft non-maximum suppression of their scores (Soft-NMS,
    Bodla et al. 2017): repeatedly take the tile of highest effective score; each tile
    touching it (8-neighbourhood on the tile grid) has its effective score multiplied by
    ``1 - factor``.

    Why: an uncertain structure usually spans several neighbouring tiles of nearly equal
    score. Reviewing all of them first spends a round's corrections on one place and gives
    fine-tuning near-duplicate examples; suppressing neighbours spreads the top of the list
    over distinct uncertain places, while a neighbour much more uncertain than the next
    place still comes early (soft, not hard, suppression). Components and ``factor <= 0``
    keep the given order. ``score`` is left as it is; ``rank`` is renumbered.
    """
    import heapq

    from napari_histo.core.errors import ConfigError

    if not isinstance(factor, (int, float)) or not 0.0 <= float(factor) <= 1.0:
        raise ConfigError(f"diversity must be a number from 0 to 1, got {factor!r}")
    tiles = [r for r in regions if r.kind == "tile"]
    if factor <= 0 or len(tiles) < 2 or len(tiles) != len(regions):
        return [r if r.rank == i + 1 else _with_rank(r, i + 1) for i, r in enumerate(regions)]
    keep = 1.0 - float(factor)
    side_y = max(1, max(r.bbox_store[2] - r.bbox_store[0] for r in tiles))
    side_x = max(1, max(r.bbox_store[3] - r.bbox_store[1] for r in tiles))
    cell = {(r.bbox_store[0] // side_y, r.bbox_store[1] // side_x): i
            for i, r in enumerate(tiles)}
    eff = [max(0.0, r.score) for r in tiles]
    # heap of (-effective score, y0, x0, index): ties keep position order, like the scores
    heap = [(-e, r.bbox_store[0], r.bbox_store[1], i) for i, (e, r) in
            enumerate(zip(eff, tiles, strict=True))]
    heapq.heapify(heap)
    done = [False] * len(tiles)
    out: list[Region] = []
    while heap:
        neg, y0, x0, i = heapq.heappop(heap)
        if done[i] or -neg != eff[i]:
            continue  # taken already, or a stale entry of a suppressed tile
        done[i] = True
        out.append(_with_rank(tiles[i], len(out) + 1))
        gy, gx = y0 // side_y, x0 // side_x
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                j = cell.get((gy + dy, gx + dx))
                if j is None or done[j]:
                    continue
                eff[j] *= keep
                r = tiles[j]
                heapq.heappush(heap, (-eff[j], r.bbox_store[0], r.bbox_store[1], j))
    return out


def _with_rank(r: Region, rank: int) -> Region:
    from dataclasses import replace

    return replace(r, rank=rank)


def _hw(probabilities: Any) -> tuple[int, int]:
    shape = tuple(int(s) for s in probabilities.shape)
    return (shape[-2], shape[-1])


def _read(arr: Any, box: Box) -> np.ndarray:
    y0, x0, y1, x1 = box
    return np.asarray(arr[..., y0:y1, x0:x1])


def block_maps(probabilities: Any, box: Box, threshold: float, tissue: Any, uncertainty: Any,
               method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uncertainty float32, positive prob float32, tissue bool, predicted labels) of a box."""
    from napari_histo.engine.review.uncertainty import as_class_probs, entropy_map, margin_map

    raw = _read(probabilities, box)
    cp = as_class_probs(raw)
    if uncertainty is not None:
        u = _read(uncertainty, box)
        u = u.astype(np.float32) / 255.0 if u.dtype == np.uint8 else u.astype(np.float32)
    else:
        u = entropy_map(raw) if method == "entropy" else margin_map(raw)
    mass = cp.sum(axis=0)
    if cp.shape[0] == 2:
        pos = cp[1]
        lab = (pos >= threshold).astype(np.uint8)
        mass = cp[1] if raw.ndim == 2 else mass
    else:
        pos = 1.0 - cp[0]
        lab = np.argmax(cp, axis=0).astype(np.uint8)
    t = _read(tissue, box).astype(bool) if tissue is not None else mass > 0
    return u, pos, t, lab


def _edges(lab: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label (the predicted boundary)."""
    e = np.zeros(lab.shape, bool)
    e[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    e[:-1, :] |= lab[:-1, :] != lab[1:, :]
    return e


def _tile_stats(probabilities: Any, threshold: float, size: int, tissue: Any,
                uncertainty: Any, method: str, min_tissue: float) -> list[dict[str, Any]]:
    """Per-tile sums, reading bands of tiles (about 2048 px tall) so memory stays flat."""
    h, w = _hw(probabilities)
    k = max(1, 2048 // size)
    out: list[dict[str, Any]] = []
    for by in range(0, h, size * k):
        for bx in range(0, w, size * k):
            box = (by, bx, min(h, by + size * k), min(w, bx + size * k))
            u, pos, t, lab = block_maps(probabilities, box, threshold, tissue, uncertainty,
                                        method)
            e = _edges(lab) & t
            for ty in range(0, box[2] - by, size):
                for tx in range(0, box[3] - bx, size):
                    sl = (slice(ty, ty + size), slice(tx, tx + size))
                    tt = t[sl]
                    n = int(tt.sum())
                    frac = n / tt.size
                    if n == 0 or frac < min_tissue:
                        continue
                    y0, x0 = by + ty, bx + tx
                    out.append({"id": f"t-{y0 // size}-{x0 // size}",
                                "box": (y0, x0, min(h, y0 + size), min(w, x0 + size)),
                                "u": float(u[sl][tt].mean()), "p": float(pos[sl][tt].mean()),
                                "area": n, "frac": frac, "boundary": int(e[sl].sum())})
    out.sort(key=lambda d: (d["box"][0], d["box"][1]))
    return out


def _component_stats(probabilities: Any, threshold: float, size: int, tissue: Any,
                     uncertainty: Any, method: str, band: float) -> list[dict[str, Any]]:
    """Connected components of ``uncertainty >= band`` on a map at most ~2048 px a side
    (block means of the full map, so a big store is never loaded whole); boxes scaled back."""
    from scipy import ndimage

    h, w = _hw(probabilities)
    f = 1
    while max(h, w) / f > 2048:
        f *= 2
    sh, sw = -(-h // f), -(-w // f)
    us = np.zeros((sh, sw), np.float32)
    ps = np.zeros((sh, sw), np.float32)
    ts = np.zeros((sh, sw), np.float32)
    es = np.zeros((sh, sw), np.float32)
    step = max(f, (2048 // f) * f)
    for by in range(0, h, step):
        for bx in range(0, w, step):
            box = (by, bx, min(h, by + step), min(w, bx + step))
            u, pos, t, lab = block_maps(probabilities, box, threshold, tissue, uncertainty,
                                        method)
            e = (_edges(lab) & t).astype(np.float32)
            tf = t.astype(np.float32)
            oy, ox = by // f, bx // f
            for dst, src in ((us, u * tf), (ps, pos * tf), (ts, tf), (es, e)):
                s = _sum_pool(src, f)
                dst[oy:oy + s.shape[0], ox:ox + s.shape[1]] = s
    with np.errstate(invalid="ignore", divide="ignore"):
        umean = np.where(ts > 0, us / np.maximum(ts, 1e-9), 0.0)
    lab_c, n = ndimage.label(umean >= band)
    out: list[dict[str, Any]] = []
    for i, sl in enumerate(ndimage.find_objects(lab_c), start=1):
        if sl is None:
            continue
        m = lab_c[sl] == i
        area = float(ts[sl][m].sum())
        if area <= 0:
            continue
        y0, x0 = sl[0].start * f, sl[1].start * f
        y1, x1 = min(h, sl[0].stop * f), min(w, sl[1].stop * f)
        out.append({"id": f"c-{y0}-{x0}", "box": (y0, x0, y1, x1),
                    "u": float(us[sl][m].sum() / area), "p": float(ps[sl][m].sum() / area),
                    "area": int(round(area)), "frac": min(1.0, area / float(size * size)),
                    "boundary": int(round(float(es[sl][m].sum())))})
    out.sort(key=lambda d: (d["box"][0], d["box"][1]))
    return out


def _sum_pool(a: np.ndarray, f: int) -> np.ndarray:
    """Sums over f x f blocks (edges padded with zeros)."""
    if f == 1:
        return a.astype(np.float32)
    h, w = a.shape
    ph, pw = -(-h // f) * f, -(-w // f) * f
    p = np.zeros((ph, pw), np.float32)
    p[:h, :w] = a
    return p.reshape(ph // f, f, pw // f, f).sum(axis=(1, 3))


def rescale_regions(regions: list[Region], factor: int, shape: tuple[int, int],
                    placement: Placement) -> list[Region]:
    """Regions scored on a pyramid level ``factor`` times smaller, back on level 0 (ids,
    boxes, areas and boundaries scaled; boxes clipped to ``shape``; order and scores kept)."""
    from dataclasses import replace

    if factor == 1:
        return [replace(r, bbox_px=placement.to_px(r.bbox_store),
                        bbox_um=placement.to_um(r.bbox_store)) for r in regions]
    h, w = shape
    out = []
    for r in regions:
        y0, x0, y1, x1 = (v * factor for v in r.bbox_store)
        box = (y0, x0, min(h, y1), min(w, x1))
        rid = f"c-{y0}-{x0}" if r.kind == "component" else r.id
        out.append(replace(r, id=rid, bbox_store=box, bbox_px=placement.to_px(box),
                           bbox_um=placement.to_um(box), area_px=r.area_px * factor * factor,
                           boundary_px=r.boundary_px * factor))
    return out
