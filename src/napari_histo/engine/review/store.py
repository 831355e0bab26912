"""A review session persisted inside a prediction's OME-Zarr store (group ``review``).

Layout added to ``NAME.ome.zarr`` (nothing else in the store changes, so completeness,
resume checks, ``info``, the napari reader and the Past predictions list see the same
prediction)::

    review/                 zarr group; its attributes are only ``{"napari_histo_review": 1}``
      state.json            ranking, settings, marks, cursor, refinements (JSON, written to a
                            temporary sibling then renamed: never half written)
      uncertainty/0, 1, ... uint8 NGFF image pyramid (255 u), same placement as the prediction
      corrections/0         uint8 labels at store level 0 (255 = not corrected), written
                            region by region as the user corrects

A session survives closing napari: reopen the store and :attr:`ReviewStore.cursor`,
:meth:`ReviewStore.status` and :meth:`ReviewStore.correction` give back where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.progress import Task
from napari_histo.engine.review.regions import Placement, Region

__all__ = ["NOT_CORRECTED", "STATUSES", "ReviewStore"]

#: value of an uncorrected pixel in ``review/corrections``
NOT_CORRECTED = 255
STATUSES = ("accepted", "corrected", "flagged")

Box = tuple[int, int, int, int]


class ReviewStore:
    """The review state of one prediction store; open with :meth:`open`."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.placement = Placement.from_meta(meta)

    @classmethod
    def open(cls, prediction_path: str | Path) -> ReviewStore:
        """Open (the ``review`` group is created on first use).

        Raises
        ------
        DataError
            Not a napari-histo prediction store, an unfinished one, or a patch-classifier
            heatmap (only segmentation stores are reviewed).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ ranking
    def regions(self) -> list[Region]:
        """The current ranking, best first ([] until :meth:`rank` ran)."""
        raise NotImplementedError

    @property
    def settings(self) -> dict[str, Any]:
        """Settings of the current ranking (unit, size, method, TTA cost, ...)."""
        raise NotImplementedError

    def rank(self, *, unit: str = "tile", size_um: float | None = None, top: int | None = None,
             model: str | Path | None = None, tta: bool = False, tta_top: int = 8,
             method: str = "entropy") -> Task[list[Region]]:
        """Compute the uncertainty map and rank the regions (generator of progress events).

        Writes ``review/uncertainty`` (uint8 pyramid) and the ranking; marks of regions that
        still exist (same id) are kept (a Message says how many). ``tta`` re-predicts only
        the ``tta_top`` best regions whose mean probability is near the threshold with
        flips/rot90 (``model`` or the store's checkpoint) and adds their disagreement to the
        score; its cost (tiles, seconds) goes into :attr:`settings`.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ marks
    def status(self, region_id: str) -> str | None:
        """None (not reviewed) | "accepted" | "corrected" | "flagged"."""
        raise NotImplementedError

    def mark(self, region_id: str, status: str | None) -> None:
        """Set (None clears) a region's mark; persisted at once (atomic)."""
        raise NotImplementedError

    @property
    def cursor(self) -> int:
        """Index (0-based, into :meth:`regions`) where the review stopped."""
        raise NotImplementedError

    @cursor.setter
    def cursor(self, value: int) -> None:
        raise NotImplementedError

    def remaining(self) -> list[Region]:
        """Ranked regions not yet marked."""
        raise NotImplementedError

    def region(self, region_id: str) -> Region:
        """One ranked region by id (DataError if unknown)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ corrections
    def save_correction(self, region_id: str, labels: np.ndarray) -> None:
        """Class labels over ``region.bbox_store`` -> ``review/corrections``; marks it
        "corrected". Persisted at once."""
        raise NotImplementedError

    def correction(self, region_id: str) -> np.ndarray | None:
        """The saved correction of a region (uint8 over its ``bbox_store``), or None."""
        raise NotImplementedError

    # ------------------------------------------------------------------ arrays for viewers
    @property
    def uncertainty_path(self) -> Path:
        """Folder of the ``review/uncertainty`` NGFF pyramid."""
        return self.path / "review" / "uncertainty"

    def uncertainty_levels(self) -> list[Any]:
        """The uint8 uncertainty pyramid (zarr arrays, largest first; [] before rank)."""
        raise NotImplementedError

    def probabilities(self) -> Any:
        """Level-0 probabilities of the prediction (zarr, read-only use)."""
        raise NotImplementedError

    def labels(self) -> Any:
        """Level-0 predicted labels (zarr)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training samples
    def reviewed_samples(self, image_reader: Callable[[Box], np.ndarray] | None = None, *,
                         statuses: tuple[str, ...] = ("accepted", "corrected")) -> list[Any]:
        """Accepted (prediction as label) and corrected (correction as label) regions as
        :class:`~napari_histo.engine.datasets.ArraySample` for the fine-tune path.

        ``image_reader(bbox_store) -> (h, w, 3) uint8`` gives the image at the store's
        resolution; None reads the slide the store was predicted from (``meta["source"]``).
        """
        raise NotImplementedError
