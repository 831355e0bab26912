"""Fine-tune on reviewed regions, re-predict the unreviewed top regions, re-rank.

The loop of the review queue: the user accepts or corrects the regions the model was least
sure of; :func:`finetune_reviewed_job` trains the checkpoint on them (the existing
``train(cfg, arrays=...)`` path of the Correct widget, :mod:`napari_histo.engine.corrections`),
scores the reviewed regions before and after (Dice/IoU against the user's labels), writes
the fine-tuned model's prediction of the best ``repredict_top`` regions not yet reviewed
back into the store (probabilities, labels and their pyramids; the store records which
checkpoint refined which boxes) and ranks what is left again.

Fine-tuning is anchored by default (:func:`anchor_samples`): besides the reviewed regions
it trains on unreviewed tissue the model is already sure of, with its own labels at a lower
pixel weight, so that learning the corrections does not unlearn the rest of the slide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Message, Progress, Task
from napari_histo.engine.review.regions import DEFAULT_DIVERSITY, Region
from napari_histo.engine.review.store import ReviewStore

__all__ = ["ANCHOR_MAX", "ANCHOR_WEIGHT", "ReviewFinetuneOutcome", "anchor_regions",
           "anchor_samples", "finetune_config", "finetune_reviewed_job"]

Box = tuple[int, int, int, int]

#: pixel weight of an anchor (the model's own confident labels); reviewed pixels weigh 1
ANCHOR_WEIGHT = 0.5
#: at most this many anchor regions per fine-tune (about as many as reviewed ones below it)
ANCHOR_MAX = 32
#: an anchor tile is mostly tissue (fraction of its box)
ANCHOR_MIN_TISSUE = 0.5


@dataclass
class ReviewFinetuneOutcome:
    """What fine-tuning on the reviewed regions did."""

    checkpoint: str  #: the fine-tuned checkpoint
    samples: int  #: reviewed regions trained on
    #: Dice/IoU (+ ``dice_ci``/``iou_ci`` 95 % bootstrap over regions) of the stored labels
    #: on the reviewed regions
    before: dict[str, Any]
    after: dict[str, Any]  #: same with the fine-tuned model
    reference: str = "corrections"  #: what before/after were scored against
    repredicted: list[str] = field(default_factory=list)  #: ids re-predicted in the store
    regions: list[Region] = field(default_factory=list)  #: the new ranking of what is left
    train: Any = None  #: the engine's TrainResult
    anchors: list[Region] = field(default_factory=list)  #: confident regions trained on too


def finetune_config(checkpoint: str | Path, out_dir: str | Path, *, epochs: int = 3,
                    steps_per_epoch: int = 10, lr: float = 1e-4, patch_size: int = 128,
                    batch_size: int = 4, device: str = "cpu", augment: bool = False,
                    freeze_norm: bool = True) -> Any:
    """A fine-tuning TrainConfig for ``checkpoint`` (defaults of the Correct widget: no
    validation split, frozen norm layers, no augmentation, the checkpoint's classes).

    Augmentation is off because it destroyed the model on a few corrected patches: on the
    demo model and sample slide, fine-tuning on the model's own labels with augmentation on
    took the window's Dice from 0.57 to 0.005 (0.16 without the stain part), and without it
    kept 0.56; on painted corrections it gave 0.06 against 0.72 without (see
    docs/benchmarks.md, "Fine-tuning on corrections"). A barely trained checkpoint learns
    faster with ``freeze_norm=False`` (its norm statistics are not worth keeping).
    """
    from napari_histo.engine.checkpoints import read_checkpoint
    from napari_histo.engine.training import TrainConfig

    info = read_checkpoint(str(checkpoint))
    pre = info.get("preprocessing") or {}
    mpp = pre.get("mpp")
    names = tuple(info.get("class_names") or ("background", "foreground"))
    return TrainConfig(
        task="segment", model=str(info["spec"]["name"]), epochs=epochs, lr=lr,
        batch_size=batch_size, patch_size=patch_size, mpp=mpp, data_mpp=mpp, device=device,
        out_dir=str(out_dir), val_fraction=0.0, init_checkpoint=str(checkpoint),
        steps_per_epoch=steps_per_epoch, early_stopping_patience=None, class_names=names,
        num_classes=len(names), augment=augment, amp=False, preview=False,
        freeze_norm=freeze_norm)


def _labels_of(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(C, h, w) probabilities -> labels (threshold on the positive class, else argmax)."""
    if probs.shape[0] == 2:
        return (probs[1] >= threshold).astype(np.uint8)
    return np.argmax(probs, axis=0).astype(np.uint8)


def _scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | list[float]]:
    """Pooled foreground Dice/IoU over (labels, reference) region pairs, with 95 % bootstrap
    intervals over regions (``dice_ci``/``iou_ci``; engine.uncertainty)."""
    from napari_histo.engine.uncertainty import item_cis, item_metrics

    if not pairs:
        return {"dice": float("nan"), "iou": float("nan"), "regions": 0.0}
    from napari_histo.engine.metrics import confusion_matrix

    cms = np.stack([confusion_matrix(np.asarray(lab) > 0, np.asarray(ref) > 0, 2,
                                     ignore_index=None) for lab, ref in pairs])
    items = {"cm": cms}
    point = item_metrics(items, "r")
    cis = item_cis(items, None, "r", n=500)
    return {"dice": float(point["r_dice"]), "iou": float(point["r_iou"]),
            "dice_ci": cis["r_dice_ci"], "iou_ci": cis["r_iou_ci"],
            "regions": float(len(pairs))}


def _fmt(sc: dict[str, Any]) -> str:
    lo, hi = sc.get("dice_ci") or (float("nan"), float("nan"))
    return f"{sc['dice']:.3f} (95% CI {lo:.3f}-{hi:.3f})"


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def anchor_regions(store: ReviewStore, n: int, *, seed: int = 0,
                   size: int | None = None) -> list[Region]:
    """``n`` tiles drawn (seeded, uniformly) from the store's confident, unreviewed tissue.

    Candidates: tiles of ``size`` store px (None: the reviewed regions' median side) that
    are at least :data:`ANCHOR_MIN_TISSUE` tissue, overlap no reviewed or flagged region,
    and whose mean uncertainty is at most the median of such tiles (the more confident
    half: relative, so it works for a sharp and a soft model alike). Reuses the store's
    tile ranking when it has that tile size, else scores tiles from the stored maps.
    """
    if n <= 0:
        return []
    marked = store.reviewed(("accepted", "corrected", "flagged"))
    if size is None:
        sides = [max(r.bbox_store[2] - r.bbox_store[0], r.bbox_store[3] - r.bbox_store[1])
                 for r in marked]
        size = int(np.median(sides)) if sides else int(store.settings.get("size") or 256)
    settings = store.settings
    if settings.get("unit") == "tile" and int(settings.get("size") or 0) == size:
        tiles = store.regions()
    else:
        from napari_histo.engine.review.regions import score_regions

        unc = store.uncertainty_levels()
        tiles = score_regions(store.probabilities(), unit="tile", size=size,
                              threshold=float(store.meta.get("threshold", 0.5)),
                              uncertainty=unc[0] if unc else None,
                              placement=store.placement, diversity=0.0)
    boxes = [r.bbox_store for r in marked]
    cand = []
    for r in tiles:
        y0, x0, y1, x1 = r.bbox_store
        if r.area_px < ANCHOR_MIN_TISSUE * (y1 - y0) * (x1 - x0):
            continue
        if store.status(r.id) is not None or any(_overlaps(r.bbox_store, b) for b in boxes):
            continue
        cand.append(r)
    if not cand:
        return []
    median = float(np.median([r.uncertainty for r in cand]))
    confident = sorted((r for r in cand if r.uncertainty <= median),
                       key=lambda r: (r.bbox_store[0], r.bbox_store[1]))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(confident), size=min(n, len(confident)), replace=False)
    return [confident[int(i)] for i in pick]


def anchor_samples(store: ReviewStore, read: Callable[[Box], np.ndarray], n: int, *,
                   seed: int = 0, weight: float = ANCHOR_WEIGHT,
                   size: int | None = None) -> tuple[list[Any], list[Region]]:
    """Training samples of :func:`anchor_regions`: the image, the store's predicted labels
    and pixel weights ``weight * (1 - u)`` (u: the pixel's normalised entropy, so a pixel
    the model was unsure of teaches little and a 50/50 one nothing). Returns (samples,
    their regions).

    Why (pseudo-rehearsal, Robins 1995): fine-tuning on the reviewed regions alone (a
    few, all from where the model was unsure: uncertainty sampling is a biased sample of
    the slide) moves the model away from what it already did right elsewhere
    (catastrophic forgetting; on a tumour/normal slide whose unsure tiles were all normal
    the model learned "no tumour"). Rehearsing its own confident predictions, drawn
    uniformly over the slide's tissue and weighted below the user's corrections, keeps
    that while the corrections are learned.
    """
    from napari_histo.engine.datasets import ArraySample
    from napari_histo.engine.review.regions import block_maps

    if not 0.0 < weight <= 1.0:
        raise ConfigError(f"anchor weight must be in (0, 1], got {weight!r}")
    regs = anchor_regions(store, n, seed=seed, size=size)
    unc = store.uncertainty_levels()
    thr = float(store.meta.get("threshold", 0.5))
    samples, used = [], []
    for r in regs:
        u, _p, _t, lab = block_maps(store.probabilities(), r.bbox_store, thr, None,
                                    unc[0] if unc else None, "entropy")
        w = (weight * (1.0 - np.clip(u, 0.0, 1.0))).astype(np.float32)
        if not w.any():
            continue  # nothing the model is sure of here
        img = np.asarray(read(r.bbox_store))
        samples.append(ArraySample(image=img, labels=lab.astype(np.uint8), weights=w,
                                   group=store.path.name, name=f"anchor-{r.id}"))
        used.append(r)
    return samples, used


def finetune_reviewed_job(store: ReviewStore, checkpoint: str | Path, cfg: Any = None, *,
                          repredict_top: int = 16,
                          image_reader: Callable[[Box], np.ndarray] | None = None,
                          anchors: bool = True, anchor_weight: float = ANCHOR_WEIGHT,
                          anchor_max: int = ANCHOR_MAX, anchor_seed: int = 0,
                          ) -> Task[ReviewFinetuneOutcome]:
    """Train ``checkpoint`` on the accepted/corrected regions, re-predict the
    ``repredict_top`` best regions not yet reviewed in place in the store, re-rank the rest.

    ``anchors`` (on by default): also train on min(reviewed, ``anchor_max``) confident
    unreviewed tiles with the model's own labels at pixel weight at most ``anchor_weight``
    (:func:`anchor_samples`, seeded by ``anchor_seed``), against catastrophic forgetting
    and the selection bias of training only on the uncertain regions.

    ``cfg``: a TrainConfig (None: :func:`finetune_config` into a ``finetune-*`` folder next
    to the store); its ``init_checkpoint`` is set to ``checkpoint`` when empty.
    ``image_reader(bbox_store) -> RGB`` (None: the store's slide at its resolution).
    Before/after Dice are pooled over the corrected regions against the corrections (over
    all reviewed regions when none was corrected). Cancel by closing the generator.
    """
    from napari_histo.engine.checkpoints import load_checkpoint
    from napari_histo.engine.review.slide_access import predict_box
    from napari_histo.engine.training import train

    if not Path(str(checkpoint)).is_file():
        raise ConfigError(f"checkpoint not found: {checkpoint}")
    if not isinstance(repredict_top, int) or repredict_top < 0:
        raise ConfigError(f"repredict_top must be a whole number >= 0, got {repredict_top!r}")
    own_reader = store.image_reader() if image_reader is None else None
    read: Callable[[Box], np.ndarray] = image_reader or own_reader  # type: ignore[assignment]
    try:
        samples = store.reviewed_samples(read)
        if not samples:
            raise ConfigError("no accepted or corrected regions to fine-tune on; review some "
                              "regions first")
        if not isinstance(anchor_max, int) or anchor_max < 0:
            raise ConfigError(f"anchor_max must be a whole number >= 0, got {anchor_max!r}")
        n_reviewed = len(samples)
        anchor_regs: list[Region] = []
        if anchors and anchor_max > 0:
            extra, anchor_regs = anchor_samples(store, read, min(len(samples), anchor_max),
                                                seed=anchor_seed, weight=anchor_weight)
            yield Message(f"anchoring on {len(extra)} confident unreviewed region(s) "
                          f"(the model's own labels, weight {anchor_weight:g})")
            samples = samples + extra
        if cfg is None:
            cfg = finetune_config(checkpoint, store.path.parent /
                                  time.strftime(f"finetune-{store.path.name}-%Y%m%d-%H%M%S"))
        elif not getattr(cfg, "init_checkpoint", None):
            cfg = cfg.replace(init_checkpoint=str(checkpoint))
        thr = float(store.meta.get("threshold", 0.5))
        corrected = store.reviewed(("corrected",))
        scored = corrected or store.reviewed()
        reference = "corrections" if corrected else "accepted predictions"
        refs = {s.name: s.labels for s in samples}
        old = store.labels()
        before = _scores([(np.asarray(old[r.bbox_store[0]:r.bbox_store[2],
                                          r.bbox_store[1]:r.bbox_store[3]]), refs[r.id])
                          for r in scored if r.id in refs])
        yield Message(f"before fine-tuning: Dice {_fmt(before)} on {len(scored)} "
                      f"reviewed region(s), against the {reference}")
        result = yield from train(cfg, arrays=samples)  # closing this job closes training
        ckpt = str(result.best_checkpoint or result.last_checkpoint)
        loaded = load_checkpoint(ckpt, device="cpu")
        after_pairs = []
        for i, r in enumerate(scored):
            if r.id not in refs:
                continue
            p = predict_box(read, loaded, r.bbox_store)
            after_pairs.append((_labels_of(p, thr), refs[r.id]))
            yield Progress(i + 1, len(scored), "scoring reviewed regions")
        after = _scores(after_pairs)
        yield Message(f"after fine-tuning: Dice {_fmt(after)} (was {_fmt(before)})")
        todo = store.remaining()[:repredict_top]
        done = yield from _repredict(store, todo, loaded, read, thr, ckpt)
        settings = store.settings
        regions = yield from store.rank(unit=settings.get("unit", "tile"),
                                        size_um=settings.get("size_um"),
                                        method=settings.get("method", "entropy"),
                                        diversity=float(settings.get("diversity",
                                                                     DEFAULT_DIVERSITY)))
    finally:
        if own_reader is not None:
            own_reader.close()
    return ReviewFinetuneOutcome(checkpoint=ckpt, samples=n_reviewed, before=before,
                                 after=after, reference=reference, repredicted=done,
                                 regions=[r for r in regions if store.status(r.id) is None],
                                 train=result, anchors=anchor_regs)


def _repredict(store: ReviewStore, todo: list[Region], loaded: Any,
               read: Callable[[Box], np.ndarray], threshold: float, ckpt: str) -> Task[list[str]]:
    """Write the fine-tuned prediction of ``todo`` into the store (probabilities, labels, the
    pyramid levels above them) and record the refinement; background the run skipped (stored
    probability mass 0) stays background."""
    from napari_histo.engine.inference.writer import put_block
    from napari_histo.engine.review.slide_access import predict_box
    from napari_histo.io.ome_zarr import open_ome_zarr

    if not todo:
        return []
    probs_store = open_ome_zarr(store.path, mode="r+")
    labels_store = open_ome_zarr(store.path / "labels" / "prediction", mode="r+")
    prob_dtype = str(store.meta.get("prob_dtype") or "float16")
    done: list[str] = []
    for i, r in enumerate(todo):
        y0, x0, y1, x1 = r.bbox_store
        p = predict_box(read, loaded, r.bbox_store)
        stored = np.asarray(probs_store.level0[..., y0:y1, x0:x1])
        mass = stored > 0 if stored.ndim == 2 else stored.sum(axis=0) > 0
        p = p * mass[None]
        put_block(probs_store.level0, labels_store.level0, r.bbox_store, p, prob_dtype,
                  threshold)
        probs_store.build_pyramid(region=r.bbox_store, workers=1)
        labels_store.build_pyramid(region=r.bbox_store, workers=1)
        done.append(r.id)
        yield Progress(i + 1, len(todo), "re-predicting unreviewed regions")
    store.record_refinement(ckpt, todo)
    return done


