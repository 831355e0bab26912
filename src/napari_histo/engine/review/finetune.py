"""Fine-tune on reviewed regions, re-predict the unreviewed top regions, re-rank.

Reuses the corrections fine-tune path (:func:`napari_histo.engine.corrections.finetune_job`,
``train(cfg, arrays=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_histo.core.progress import Task
from napari_histo.engine.review.regions import Region
from napari_histo.engine.review.store import ReviewStore

__all__ = ["ReviewFinetuneOutcome", "finetune_reviewed_job"]


@dataclass
class ReviewFinetuneOutcome:
    """What fine-tuning on the reviewed regions did."""

    checkpoint: str  #: the fine-tuned checkpoint
    samples: int  #: reviewed regions trained on
    before: dict[str, float]  #: Dice/IoU of the old labels on the reviewed regions
    after: dict[str, float]  #: same with the fine-tuned model
    repredicted: list[str] = field(default_factory=list)  #: ids re-predicted in the store
    regions: list[Region] = field(default_factory=list)  #: the new ranking of what is left
    train: Any = None  #: the engine's TrainResult


def finetune_reviewed_job(store: ReviewStore, checkpoint: str | Path, cfg: Any, *,
                          repredict_top: int = 16, image_reader: Any = None,
                          ) -> Task[ReviewFinetuneOutcome]:
    """Train ``checkpoint`` on the accepted/corrected regions (``cfg``: a TrainConfig whose
    ``init_checkpoint``/``epochs`` the caller chose), re-predict the ``repredict_top`` best
    not-yet-reviewed regions in place in the store, and re-rank what is left."""
    raise NotImplementedError
