"""A review session persisted inside a prediction's OME-Zarr store (group ``review``).

Layout added to ``NAME.ome.zarr`` (the prediction's own arrays and metadata are left as
they are, so completeness, resume checks, ``info``, the napari reader and the Past
predictions list see the same prediction; only fine-tuning on reviewed regions rewrites the
boxes it re-predicts, and records them under ``refined``)::

    review/                 zarr group; attribute ``napari_histo_review``: marks (status and
                            box of each reviewed region), cursor, refinements
      ranking/              zarr group; attribute ``napari_histo_review``: settings (unit,
                            size, method, TTA cost, seconds) and the ranked regions
      uncertainty/0, 1, ... uint8 NGFF image pyramid (255 u), same placement as the prediction
      corrections           uint8 array of class labels at store level 0 (255 = not
                            corrected), written region by region as the user corrects

A session survives closing napari: reopen the store and :attr:`ReviewStore.cursor`,
:meth:`ReviewStore.status` and :meth:`ReviewStore.correction` give back where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import ConfigError, DataError
from napari_histo.core.progress import Message, Progress, Task
from napari_histo.engine.review.regions import (
    DEFAULT_DIVERSITY,
    Placement,
    Region,
    block_maps,
    diversify,
    score_regions,
)

__all__ = ["NOT_CORRECTED", "STATUSES", "ReviewStore"]

#: value of an uncorrected pixel in ``review/corrections``
NOT_CORRECTED = 255
STATUSES = ("accepted", "corrected", "flagged")

Box = tuple[int, int, int, int]
#: attribute of the ``review`` group (marks, cursor, refinements) and of ``review/ranking``
ATTR = "napari_histo_review"
#: default region side in store pixels when no ``size_um`` is given
DEFAULT_SIZE = 256
#: TTA only where the region's mean probability is within this of the threshold
TTA_NEAR = 0.35
#: the uncertainty map while it is being written (renamed to ``uncertainty`` when complete)
PARTIAL = "uncertainty-partial"


class ReviewStore:
    """The review state of one prediction store; open with :meth:`open`.

    State lives in zarr attributes (zarr's local store writes them to a temporary file and
    renames it, so a crash never leaves them half written): marks, cursor and refinements
    on ``review``, the ranking and its settings on ``review/ranking`` (rewritten only by
    :meth:`rank`, so a mark never rewrites the whole ranking).
    """

    def __init__(self, path: Path, group: Any, meta: dict[str, Any]) -> None:
        self.path = path
        self.group = group
        self.meta = meta
        self.placement = Placement.from_meta(meta)
        self._ranking: list[Region] | None = None

    @classmethod
    def open(cls, prediction_path: str | Path) -> ReviewStore:
        """Open (the ``review`` group is created on first use).

        Raises
        ------
        DataError
            Not a napari-histo prediction store, an unfinished one, or a patch-classifier
            heatmap (only segmentation stores are reviewed).
        """
        from napari_histo.engine.inference.writer import read_meta
        from napari_histo.io.ome_zarr import open_ome_zarr

        path = Path(prediction_path)
        if not path.exists():
            raise DataError(f"{path} does not exist; give a prediction store (.ome.zarr) "
                            "written by napari-histo predict")
        meta = read_meta(path) if path.is_dir() else None
        if meta is None:
            raise DataError(f"{path} is not a napari-histo prediction store; give a store "
                            "written by napari-histo predict")
        if not meta.get("complete"):
            raise DataError(f"{path} is an unfinished prediction (its run stopped before the "
                            "end); finish it with predict --resume first")
        if meta.get("task", "segment") != "segment":
            raise DataError(f"{path} is a patch-classifier heatmap; the review queue ranks "
                            "segmentation predictions only")
        try:
            group = open_ome_zarr(path, mode="r+").group
            group["0"], group["labels/prediction/0"]  # noqa: B018 - both must be there
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: the prediction store is damaged ({type(err).__name__}: "
                            f"{err})") from None
        except PermissionError as err:
            raise DataError(f"{path} is read-only: the review is saved inside the store "
                            f"({err.strerror or err})") from None
        if "review" not in group:
            try:
                rg = group.create_group("review")
                rg.attrs[ATTR] = {"version": 1, "marks": {}, "cursor": 0, "refined": []}
            except OSError as err:
                raise DataError(f"cannot write the review into {path}: "
                                f"{err.strerror or err}") from None
        return cls(path, group, meta)

    # ------------------------------------------------------------------ state
    @property
    def _review(self) -> Any:
        return self.group["review"]

    def _state(self) -> dict[str, Any]:
        st = self._review.attrs.get(ATTR)
        st = dict(st) if isinstance(st, dict) else {}
        st.setdefault("marks", {})
        st.setdefault("cursor", 0)
        st.setdefault("refined", [])
        return st

    def _save_state(self, st: dict[str, Any]) -> None:
        try:
            self._review.attrs[ATTR] = {"version": 1, **st}
        except OSError as err:
            raise DataError(f"cannot save the review into {self.path}: "
                            f"{err.strerror or err}") from None

    def _ranking_attrs(self) -> dict[str, Any]:
        if "ranking" not in self._review:
            return {}
        got = self._review["ranking"].attrs.get(ATTR)
        return dict(got) if isinstance(got, dict) else {}

    # ------------------------------------------------------------------ ranking
    def regions(self) -> list[Region]:
        """The current ranking, best first ([] until :meth:`rank` ran)."""
        if self._ranking is None:
            self._ranking = [Region.from_dict(d) for d in self._ranking_attrs().get("regions", [])]
        return list(self._ranking)

    @property
    def settings(self) -> dict[str, Any]:
        """Settings of the current ranking (unit, size, method, TTA cost, ...); {} before."""
        return dict(self._ranking_attrs().get("settings") or {})

    def region(self, region_id: str) -> Region:
        """One ranked region by id (DataError if unknown)."""
        for r in self.regions():
            if r.id == region_id:
                return r
        mark = self._state()["marks"].get(region_id)
        if isinstance(mark, dict) and mark.get("region"):
            return Region.from_dict(mark["region"])
        raise DataError(f"{self.path.name}: no review region {region_id!r} (rank the store "
                        "first, or use an id from its ranking)")

    def size_px(self, size_um: float | None) -> int:
        """Region side in store pixels for ``size_um`` (None: :data:`DEFAULT_SIZE`)."""
        if size_um is None:
            return DEFAULT_SIZE
        if not isinstance(size_um, (int, float)) or not math.isfinite(size_um) or size_um <= 0:
            raise ConfigError(f"size_um must be a positive number, got {size_um!r}")
        mpp = self.placement.mpp
        if mpp is None:
            raise ConfigError(f"{self.path.name} has no pixel size: give the region size "
                              "in pixels (leave --size-um out for 256 px)")
        px = int(round(float(size_um) / mpp[0]))
        if px < 8:
            raise ConfigError(f"size_um {size_um} is {px} store pixels; give at least "
                              f"{8 * mpp[0]:.3g} um")
        return px

    def rank(self, *, unit: str = "tile", size_um: float | None = None, top: int | None = None,
             model: str | Path | None = None, tta: bool = False, tta_top: int = 8,
             method: str = "entropy", diversity: float = DEFAULT_DIVERSITY,
             ) -> Task[list[Region]]:
        """Compute the uncertainty map and rank the regions (generator of progress events).

        Writes ``review/uncertainty`` (uint8 pyramid) and the ranking; marks of regions that
        still exist (same id) are kept (a Message says how many). ``tta`` re-predicts only
        the ``tta_top`` best regions whose mean probability is near the threshold with
        flips/rot90 (``model`` or the store's checkpoint) and adds their disagreement to the
        score; its cost (tiles, seconds) goes into :attr:`settings`. Tiles are ordered with
        :func:`~napari_histo.engine.review.regions.diversify` (``diversity``; 0 = plain score
        order), so neighbouring tiles of one uncertain structure do not fill the top of the
        list. Returns the ranking (its first ``top`` when given; the whole ranking is stored).
        """
        if unit not in ("tile", "component"):
            raise ConfigError(f"unit must be 'tile' or 'component', got {unit!r}")
        if method not in ("entropy", "margin"):
            raise ConfigError(f"method must be 'entropy' or 'margin', got {method!r}")
        if top is not None and (not isinstance(top, int) or top < 1):
            raise ConfigError(f"top must be a positive whole number, got {top!r}")
        diversify([], diversity)  # checks the value before any work
        size = self.size_px(size_um)
        t0 = time.perf_counter()
        unc = yield from self._write_uncertainty(method)
        yield Progress(0, 1, "ranking regions")
        threshold = float(self.meta.get("threshold", 0.5))
        if unit == "component":
            ranked = self._components(threshold, size)
        else:
            ranked = score_regions(self.probabilities(), threshold=threshold, unit=unit,
                                   size=size, uncertainty=unc, placement=self.placement,
                                   diversity=diversity)
        settings: dict[str, Any] = {"unit": unit, "size": size, "size_um": size_um,
                                    "method": method, "tta": bool(tta), "regions": len(ranked),
                                    "diversity": float(diversity)}
        if tta:
            from napari_histo.engine.review.tta import tta_rerank

            ranked, cost = yield from tta_rerank(self.meta, self.probabilities(), ranked,
                                                 model=model, top=tta_top, near=TTA_NEAR)
            settings["tta_cost"] = cost
            settings["model"] = cost.get("checkpoint")
            ranked = diversify(ranked, diversity if unit == "tile" else 0.0)
        settings["seconds"] = round(time.perf_counter() - t0, 3)
        yield Progress(1, 1, "ranking regions")
        self._store_ranking(ranked, settings)
        yield from self._report_kept(ranked)
        return ranked[:top] if top is not None else ranked

    def _components(self, threshold: float, size: int) -> list[Region]:
        """Components found on the coarsest pyramid level at most ~2048 px a side (the
        stored uncertainty and probability pyramids: a whole-slide map never read at level
        0 again), boxes, areas and boundaries scaled back to store level 0."""
        from napari_histo.engine.review.regions import rescale_regions

        unc = self.uncertainty_levels()
        k = 0
        while (k + 1 < len(unc) and str(k + 1) in self.group
               and max(unc[k].shape[-2:]) > 2048):
            k += 1
        f = 2 ** k
        regs = score_regions(self.group[str(k)], threshold=threshold, unit="component",
                             size=max(2, size // f), uncertainty=unc[k])
        h, w = (int(v) for v in self.probabilities().shape[-2:])
        return rescale_regions(regs, f, (h, w), self.placement)

    def _store_ranking(self, ranked: list[Region], settings: dict[str, Any]) -> None:
        rg = self._review
        if "ranking" not in rg:
            rg.create_group("ranking")
        rg["ranking"].attrs[ATTR] = {"settings": settings,
                                     "regions": [r.to_dict() for r in ranked]}
        self._ranking = list(ranked)

    def _report_kept(self, ranked: list[Region]) -> Task[None]:
        st = self._state()
        ids = {r.id for r in ranked}
        kept = sum(1 for k in st["marks"] if k in ids)
        gone = len(st["marks"]) - kept
        st["cursor"] = next((i for i, r in enumerate(ranked) if r.id not in st["marks"]),
                            len(ranked))
        self._save_state(st)
        if st["marks"]:
            extra = (f"; {gone} marked region(s) are no longer ranked (their marks and "
                     "corrections are kept for fine-tuning)") if gone else ""
            yield Message(f"kept the marks of {kept} region(s) that are still ranked{extra}")

    def _write_uncertainty(self, method: str) -> Task[Any]:
        """``review/uncertainty``: level 0 block by block (flat memory), then its pyramid."""
        from napari_histo.io.ome_zarr import array_options, grow_pyramid, multiscales, wrap

        probs = self.probabilities()
        h, w = (int(s) for s in probs.shape[-2:])
        chunk = int(probs.chunks[-1])
        rg = self._review
        if PARTIAL in rg:  # left by a cancelled or crashed rank
            del rg[PARTIAL]
        ug = rg.create_group(PARTIAL)
        zf = ug.metadata.zarr_format
        version = "0.4" if zf == 2 else "0.5"
        lvl0 = ug.create_array("0", shape=(h, w), chunks=(chunk, chunk), dtype="uint8",
                               fill_value=0, **array_options(zf, 2))
        scale0, trans0, unit = self._placement_ngff()
        ug.attrs.update(wrap({"multiscales": [multiscales(
            1, channels=False, scale0=scale0, translation0=trans0, unit=unit,
            name="uncertainty", version=version, kind="image")]}, version))
        from napari_histo.engine.review.uncertainty import to_uint8

        step = chunk * max(1, 2048 // chunk)
        boxes = [(y, x, min(h, y + step), min(w, x + step))
                 for y in range(0, h, step) for x in range(0, w, step)]
        threshold = float(self.meta.get("threshold", 0.5))
        for i, box in enumerate(boxes):
            u, _p, t, _lab = block_maps(probs, box, threshold, None, None, method)
            if t.any():
                lvl0[box[0]:box[2], box[1]:box[3]] = to_uint8(np.where(t, u, 0.0))
            yield Progress(i + 1, len(boxes), "uncertainty map")
        grow_pyramid(ug, "image")
        # only a finished map takes the name a viewer opens (a directory rename: zarr lists
        # a group's members from the folder, so nothing else refers to the old name)
        final = self.uncertainty_path
        partial = final.with_name(PARTIAL)
        if "uncertainty" in rg:
            del rg["uncertainty"]
        try:
            partial.rename(final)
        except OSError as err:
            raise DataError(f"cannot save the uncertainty map into {self.path}: "
                            f"{err.strerror or err}") from None
        return self._review["uncertainty"]["0"]

    def _placement_ngff(self) -> tuple[list[float], list[float], str | None]:
        """Level-0 scale, translation and unit of the probabilities (copied for the map)."""
        from napari_histo.io.ome_zarr import ngff_multiscales

        found, _v = ngff_multiscales(self.group.attrs.asdict())
        ms = found[0]
        tr = ms["datasets"][0]["coordinateTransformations"]
        scale = next(t["scale"] for t in tr if t["type"] == "scale")[-2:]
        trans = next((t["translation"] for t in tr if t["type"] == "translation"), [0.0, 0.0])
        unit = next((a.get("unit") for a in ms["axes"] if a.get("name") == "y"), None)
        return [float(v) for v in scale], [float(v) for v in trans[-2:]], unit

    # ------------------------------------------------------------------ marks
    def status(self, region_id: str) -> str | None:
        """None (not reviewed) | "accepted" | "corrected" | "flagged"."""
        m = self._state()["marks"].get(region_id)
        return str(m["status"]) if isinstance(m, dict) else None

    def marks(self) -> dict[str, str]:
        """All marks: region id -> status."""
        return {k: str(v["status"]) for k, v in self._state()["marks"].items()
                if isinstance(v, dict)}

    def mark(self, region_id: str, status: str | None) -> None:
        """Set (None clears) a region's mark; persisted at once (atomic).

        The mark keeps the region's box, so a re-rank that no longer lists it loses
        neither the mark nor what fine-tuning learns from it.
        """
        if status is not None and status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)} (or None), "
                              f"got {status!r}")
        reg = self.region(region_id)
        st = self._state()
        if status is None:
            st["marks"].pop(region_id, None)
        else:
            st["marks"][region_id] = {"status": status, "region": reg.to_dict(),
                                      "time": time.time()}
        self._save_state(st)

    @property
    def cursor(self) -> int:
        """Index (0-based, into :meth:`regions`) where the review stopped."""
        return int(self._state()["cursor"])

    @cursor.setter
    def cursor(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"cursor must be a whole number >= 0, got {value!r}")
        st = self._state()
        st["cursor"] = min(value, len(self.regions()))
        self._save_state(st)

    def remaining(self) -> list[Region]:
        """Ranked regions not yet marked."""
        marks = self._state()["marks"]
        return [r for r in self.regions() if r.id not in marks]

    def reviewed(self, statuses: tuple[str, ...] = ("accepted", "corrected")) -> list[Region]:
        """Marked regions (ranked or not any more) with one of ``statuses``."""
        out = []
        for m in self._state()["marks"].values():
            if isinstance(m, dict) and m.get("status") in statuses and m.get("region"):
                out.append(Region.from_dict(m["region"]))
        return out

    def record_refinement(self, checkpoint: str, regions: list[Region]) -> None:
        """Note that ``checkpoint`` re-predicted these regions' boxes in the store."""
        st = self._state()
        st["refined"] = [*st["refined"], {"checkpoint": str(checkpoint), "time": time.time(),
                                          "ids": [r.id for r in regions],
                                          "boxes": [list(r.bbox_store) for r in regions]}]
        self._save_state(st)

    def refinements(self) -> list[dict[str, Any]]:
        """Which checkpoint re-predicted which store boxes (fine-tune on reviewed), oldest first."""
        return list(self._state()["refined"])

    # ------------------------------------------------------------------ corrections
    def _corrections(self, create: bool) -> Any:
        """The ``review/corrections`` array (created on the first correction)."""
        rg = self._review
        if "corrections" in rg:
            return rg["corrections"]
        if not create:
            return None
        from napari_histo.io.ome_zarr import array_options

        labels = self.labels()
        chunk = int(labels.chunks[-1])
        return rg.create_array("corrections", shape=labels.shape, chunks=(chunk, chunk),
                               dtype="uint8", fill_value=NOT_CORRECTED,
                               **array_options(rg.metadata.zarr_format, 2))

    def save_correction(self, region_id: str, labels: np.ndarray) -> None:
        """Class labels over ``region.bbox_store`` -> ``review/corrections``; marks it
        "corrected". Persisted at once."""
        reg = self.region(region_id)
        y0, x0, y1, x1 = reg.bbox_store
        lab = np.asarray(labels)
        if lab.shape != (y1 - y0, x1 - x0):
            raise DataError(f"correction of {region_id} is {lab.shape[0]} x {lab.shape[1]} px; "
                            f"its region is {y1 - y0} x {x1 - x0} store px")
        if lab.size and (not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool):
            raise DataError(f"correction of {region_id} must hold class indices (integers), "
                            f"got {lab.dtype}")
        if lab.size and (lab.min() < 0 or lab.max() >= NOT_CORRECTED):
            raise DataError(f"correction of {region_id}: class indices must be 0..254")
        arr = self._corrections(create=True)
        try:
            arr[y0:y1, x0:x1] = lab.astype(np.uint8)
        except OSError as err:
            raise DataError(f"cannot save the correction into {self.path}: "
                            f"{err.strerror or err}") from None
        self.mark(region_id, "corrected")

    def correction(self, region_id: str) -> np.ndarray | None:
        """The saved correction of a region (uint8 over its ``bbox_store``), or None."""
        if self.status(region_id) != "corrected":
            return None
        arr = self._corrections(create=False)
        if arr is None:
            return None
        y0, x0, y1, x1 = self.region(region_id).bbox_store
        return np.asarray(arr[y0:y1, x0:x1])

    # ------------------------------------------------------------------ arrays for viewers
    @property
    def uncertainty_path(self) -> Path:
        """Folder of the ``review/uncertainty`` NGFF pyramid."""
        return self.path / "review" / "uncertainty"

    def uncertainty_levels(self) -> list[Any]:
        """The uint8 uncertainty pyramid (zarr arrays, largest first; [] before rank)."""
        rg = self._review
        if "uncertainty" not in rg:
            return []
        ug = rg["uncertainty"]
        out = []
        k = 0
        while str(k) in ug:
            out.append(ug[str(k)])
            k += 1
        return out

    def probabilities(self) -> Any:
        """Level-0 probabilities of the prediction (zarr, read-only use)."""
        return self.group["0"]

    def labels(self) -> Any:
        """Level-0 predicted labels (zarr)."""
        return self.group["labels/prediction/0"]

    # ------------------------------------------------------------------ training samples
    def image_reader(self) -> Any:
        """``read(bbox_store) -> (h, w, 3) uint8``: the slide at the store's resolution."""
        from napari_histo.engine.review.slide_access import store_image_reader

        return store_image_reader(self.meta)

    def reviewed_samples(self, image_reader: Callable[[Box], np.ndarray] | None = None, *,
                         statuses: tuple[str, ...] = ("accepted", "corrected")) -> list[Any]:
        """Accepted (prediction as label) and corrected (correction as label) regions as
        :class:`~napari_histo.engine.datasets.ArraySample` for the fine-tune path.

        ``image_reader(bbox_store) -> (h, w, 3) uint8`` gives the image at the store's
        resolution; None reads the slide the store was predicted from (``meta["source"]``).
        Pixels a correction left at 255 (not corrected) take the prediction's label.
        """
        from napari_histo.engine.datasets import ArraySample

        regs = self.reviewed(statuses)
        if not regs:
            return []
        read = image_reader or self.image_reader()
        corr = self._corrections(create=False)
        labels = self.labels()
        out = []
        for r in regs:
            y0, x0, y1, x1 = r.bbox_store
            lab = np.asarray(labels[y0:y1, x0:x1])
            if self.status(r.id) == "corrected" and corr is not None:
                c = np.asarray(corr[y0:y1, x0:x1])
                lab = np.where(c != NOT_CORRECTED, c, lab)
            img = np.asarray(read(r.bbox_store))
            out.append(ArraySample(image=img, labels=lab.astype(np.uint8),
                                   group=self.path.name, name=r.id))
        return out
