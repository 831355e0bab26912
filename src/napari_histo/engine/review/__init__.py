"""Review queue: rank where a prediction is unsure, record the user's review, fine-tune.

* :mod:`.uncertainty`: entropy / margin maps of stored probabilities;
* :mod:`.regions`: :class:`Region`, :func:`score_regions` (tiles or uncertain components);
* :mod:`.store`: :class:`ReviewStore`, the session persisted in the prediction store;
* :mod:`.finetune`: :func:`finetune_reviewed_job`, train on the reviewed regions, re-predict
  and re-rank what is left.

Engine layer: numpy, zarr and torch only (no Qt, no napari).
"""

from __future__ import annotations

from pathlib import Path

from napari_histo.engine.review.regions import Placement, Region, score_regions
from napari_histo.engine.review.store import ReviewStore
from napari_histo.engine.review.uncertainty import entropy_map, margin_map

__all__ = ["Placement", "Region", "ReviewStore", "entropy_map", "margin_map", "review_regions",
           "score_regions"]


def review_regions(prediction_path: str | Path, *, top: int | None = None, unit: str = "tile",
                   size_um: float | None = None, model: str | Path | None = None,
                   tta: bool = False) -> list[Region]:
    """The ``top`` regions to review, best first (all when None).

    Opens the store, ranks it (or reuses the stored ranking made with the same settings) and
    returns the ranking. Raises DataError / ConfigError (one line) on a bad store or option.
    """
    from napari_histo.core.progress import run_task

    store = ReviewStore.open(prediction_path)
    regions = store.regions()
    want = {"unit": unit, "size": store.size_px(size_um), "method": "entropy", "tta": bool(tta)}
    have = store.settings
    same = all(have.get(k) == v for k, v in want.items())
    if tta and model is not None:
        same = same and have.get("model") == str(model)
    if not (regions and same):
        regions = run_task(store.rank(unit=unit, size_um=size_um, model=model, tta=tta))
    return regions[:top] if top is not None else regions
