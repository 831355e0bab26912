"""The simulated annotator of the review-queue benchmark (``bench_review.py``).

A case is a generated slide (a pyramidal TIFF written into a temporary folder, built from
real tiles laid out in a grid) with its oracle mask, and training samples of *other*
patients/slides for a weak starting model. One run of a strategy and a seed:

    round 0: predict the slide (``predict_slide`` into an OME-Zarr store), rank it
    (``ReviewStore.rank``), measure;
    round r: the strategy orders the store's tissue tiles; the oracle corrects the next K not
    yet reviewed (``ReviewStore.save_correction`` with the oracle's mask over the tile);
    fine-tune the current model on every corrected tile with the product's code path
    (``engine.review.finetune.finetune_reviewed_job``: its default anchoring on confident
    unreviewed tiles included) with a fixed budget; predict the slide again into a new
    store, re-apply the corrections, measure.

The weak starting model is trained with the engine's normal loop on the case's few
training images (a held-out 20 % of them, stratified, picks the best checkpoint and stops
early; a bounded time budget), so its probabilities mean something; it is trained once per
case and shared by every strategy and seed.

Nothing here is tuned per strategy: K, the region size and the fine-tune budget are the
same for all of them.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("ranked", "random", "lowest-confidence")
BACKGROUND = 240  #: slide glass between tiles (tissue detection leaves it out)


@dataclass
class Case:
    """A generated slide, its oracle mask (level 0) and the weak model's training data."""

    name: str
    slide: Path  #: pyramidal TIFF
    mask: np.ndarray  #: bool, level 0 of the slide
    slide_mpp: float
    model_mpp: float
    train: list[Any]  #: ArraySample at slide_mpp (rescaled by train())
    note: str = ""


@dataclass
class Budget:
    """Sizes of one benchmark run (the same for every strategy)."""

    k: int = 6  #: regions corrected per round
    rounds: int = 3
    region: int = 64  #: region side, store px (model resolution)
    #: the starting model: engine training loop, validation split, best checkpoint, early
    #: stopping after ``weak_patience`` epochs without gain, at most ``weak_minutes``
    weak_steps: int = 20  #: steps per epoch of the starting model
    weak_minutes: float = 1.25
    weak_patience: int = 5
    weak_epochs: int | None = None  #: None: paced by ``weak_minutes``
    weak_batch: int = 8
    #: fine-tune budget: the review engine's defaults (``finetune_config``: 3 epochs x 10
    #: steps, lr 1e-4, batch 4); run 1 of docs/benchmarks.md used 2 x 8, 5e-4, batch 8
    ft_epochs: int = 3
    ft_steps: int = 10  #: steps per fine-tune epoch
    ft_lr: float = 1e-4
    batch: int = 4
    patch: int = 64
    model: str = "unet-tiny"


@dataclass
class RoundResult:
    """Measurements after one round (round 0 = the weak model, nothing corrected)."""

    round: int
    dice_user: float  #: corrected tiles take the oracle's labels, the rest the prediction
    dice_model_unreviewed: float  #: the model's prediction outside the reviewed tiles
    reviewed: int  #: tiles corrected so far
    area_px: int  #: tissue store px inside the corrected tiles
    area_pct: float  #: of the slide's tissue
    changed_px: int  #: px whose label the corrections changed (in the round's prediction)
    #: reference: the same corrected tiles over the round-0 prediction (no fine-tune)
    dice_corrections_only: float = float("nan")
    anchors: int = 0  #: confident regions the fine-tune anchored on
    seconds: float = 0.0
    ids: list[str] = field(default_factory=list)  #: the tiles corrected so far, in order


@dataclass
class Run:
    """One strategy, one seed."""

    case: str
    strategy: str
    seed: int
    rounds: list[RoundResult] = field(default_factory=list)


# ------------------------------------------------------------------------------ cases


def _grade_rows(glas: Path) -> list[dict[str, str]]:
    with open(glas / "Grade.csv", newline="") as fh:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(fh)]


def _write_slide(out: Path, tiles: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 cols: int, gap: int, mpp: float) -> tuple[Path, np.ndarray]:
    """Lay tiles out in a grid (``gap`` px of glass between them); write the RGB as a
    pyramidal TIFF and the mask beside it; return (slide path, level-0 mask)."""
    from napari_histo.io.writers import write_ome_tiff

    ch = max(t.shape[0] for t in tiles) + gap
    cw = max(t.shape[1] for t in tiles) + gap
    rows = -(-len(tiles) // cols)
    img = np.full((rows * ch + gap, cols * cw + gap, 3), BACKGROUND, np.uint8)
    mask = np.zeros(img.shape[:2], bool)
    for i, (t, m) in enumerate(zip(tiles, masks, strict=True)):
        y, x = gap + (i // cols) * ch, gap + (i % cols) * cw
        img[y:y + t.shape[0], x:x + t.shape[1]] = t[..., :3]
        mask[y:y + t.shape[0], x:x + t.shape[1]] = m
    slide = write_ome_tiff(out / f"{out.name}.ome.tif", img, mpp=mpp, kind="image", levels=3,
                           tile=256, compression="zlib")
    write_ome_tiff(out / f"{out.name}_mask.ome.tif", mask.astype(np.uint8), mpp=mpp,
                   kind="labels", levels=3, tile=256)
    return Path(slide), mask


def glas_case(data: Path, out: Path, *, quick: bool = False) -> Case:
    """GlaS: the weak model learns from patients 1, 4, 10 (images of 3 patients, so it is
    weak but not useless); the slide is every image of patients 2, 6, 13, 15 (never seen by
    it) in a 4-wide grid at 0.62 um/px; the model works at 2.48 um/px (4x)."""
    from PIL import Image

    from napari_histo.engine.datasets import ArraySample

    glas = data / "glas_gland_segmentation"
    rows = _grade_rows(glas)
    train_p, test_p = ({"1", "4", "10"}, {"2", "6", "13", "15"})
    if quick:
        train_p, test_p = ({"1"}, {"13"})

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        img = np.asarray(Image.open(glas / "images" / f"{name}.png").convert("RGB"))
        lab = np.asarray(Image.open(glas / "labels" / f"{name}.png")) > 0
        return img, lab

    pid = "patient ID"
    train = []
    for r in rows:
        if r[pid] in train_p:
            img, lab = load(r["name"])
            # group = the image: the starting model's validation holds out images
            train.append(ArraySample(img, lab.astype(np.uint8), group=r["name"],
                                     name=f"{r[pid]}/{r['name']}"))
    test = [load(r["name"]) for r in rows if r[pid] in test_p]
    out.mkdir(parents=True, exist_ok=True)
    slide, mask = _write_slide(out, [t[0] for t in test], [t[1] for t in test],
                               cols=4 if not quick else 3, gap=64, mpp=0.62)
    return Case("glas", slide, mask, 0.62, 2.48, train,
                f"GlaS patients {sorted(test_p, key=int)} ({len(test)} images) as one slide; "
                f"weak model on patients {sorted(train_p, key=int)} ({len(train)} images)")


def camelyon_case(data: Path, out: Path, *, quick: bool = False) -> Case:
    """CAMELYON16 patches: the slide is a mosaic of the 26 tumor_064 patches (4 tumour, 22
    normal; mask = the tumour patches' area) in 2 full rows of 13 (no glass: empty cells of
    a 6-wide grid were all-uncertain glass the ranking took first), at 0.243 um/px; the weak
    model learns tumour vs normal from the patches of tumor_001 (tumour) and tumor_004
    (normal), at 0.486 um/px (2x)."""
    from PIL import Image

    from napari_histo.engine.datasets import ArraySample

    cam = data / "camelyon16_patches"
    with open(cam / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)  # fixed layout: tumour patches not all in one corner
    test = [r for r in rows if r["source_slide"] == "tumor_064"]
    test = [test[i] for i in rng.permutation(len(test))]
    if quick:
        test = [r for r in test if r["label_int"] == "1"][:2] + \
            [r for r in test if r["label_int"] == "0"][:4]
    train_rows = [r for r in rows if r["source_slide"] in ("tumor_001", "tumor_004")]
    if quick:
        train_rows = train_rows[:4] + train_rows[-4:]

    def load(r: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        img = np.asarray(Image.open(cam / r["path"]).convert("RGB"))
        return img, np.full(img.shape[:2], r["label_int"] == "1")

    train = []
    for r in train_rows:
        img, lab = load(r)
        train.append(ArraySample(img, lab.astype(np.uint8), group=Path(r["path"]).stem,
                                 name=f"{r['label_int']}/{Path(r['path']).stem}"))
    tiles = [load(r) for r in test]
    out.mkdir(parents=True, exist_ok=True)
    slide, mask = _write_slide(out, [t[0] for t in tiles], [t[1] for t in tiles],
                               cols=13 if not quick else 3, gap=0, mpp=0.243)
    n_t = sum(r["label_int"] == "1" for r in test)
    return Case("camelyon", slide, mask, 0.243, 0.486, train,
                f"CAMELYON16 tumor_064 patches ({len(test)}: {n_t} tumour) as one mosaic; "
                f"weak model on tumor_001 + tumor_004 patches ({len(train)})")


# ------------------------------------------------------------------------------ engine calls


def _drain(task: Any) -> Any:
    from napari_histo.core.progress import run_task

    return run_task(task)


def val_groups(samples: Sequence[Any], fraction: float = 0.2, seed: int = 0) -> tuple[str, ...]:
    """Held-out images of the starting model: ``fraction`` of each stratum (the part of a
    sample's name before "/": GlaS patient, CAMELYON class), at least one, seeded."""
    rng = np.random.default_rng(seed)
    strata: dict[str, list[str]] = {}
    for s in samples:
        strata.setdefault(s.name.split("/")[0], []).append(s.group)
    out: list[str] = []
    for key in sorted(strata):
        groups = sorted(strata[key])
        k = max(1, int(round(fraction * len(groups)))) if len(groups) > 1 else 0
        out += [groups[int(i)] for i in rng.choice(len(groups), size=k, replace=False)]
    return tuple(sorted(out))


def train_weak(case: Case, budget: Budget, out: Path) -> Path:
    """The starting model: the engine's training loop on the case's few training images
    (stratified 20 % held out for the best checkpoint and early stopping; the slide is the
    test), bounded by ``budget.weak_minutes`` (or ``weak_epochs``)."""
    from napari_histo.engine.training import TrainConfig, train

    cfg = TrainConfig(task="segment", model=budget.model, epochs=budget.weak_epochs,
                      time_limit_min=None if budget.weak_epochs else budget.weak_minutes,
                      steps_per_epoch=budget.weak_steps, lr=2e-3, batch_size=budget.weak_batch,
                      patch_size=max(budget.patch, 128), mpp=case.model_mpp,
                      data_mpp=case.slide_mpp, device="cpu", out_dir=str(out),
                      val_groups=val_groups(case.train),
                      class_names=("background", "foreground"), num_classes=2,
                      early_stopping_patience=budget.weak_patience, amp=False, preview=False,
                      seed=0, threads=2)
    res = _drain(train(cfg, arrays=case.train))
    return Path(res.best_checkpoint or res.last_checkpoint)


def predict(case: Case, ckpt: Path, out: Path) -> Any:
    """Whole-slide prediction into an OME-Zarr store (the real engine), ranked with the
    engine's default score; returns the opened ReviewStore."""
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.engine.review import ReviewStore

    cfg = InferenceConfig(tile=128, overlap=32, batch_size=8, readers=1, device="cpu")
    _drain(predict_slide(case.slide, ckpt, cfg, out_path=out))
    store = ReviewStore.open(out)
    return store


def rank(store: Any, budget: Budget) -> list[Any]:
    """The engine's ranking of the store's tissue tiles (``unit="tile"``, default score)."""
    return list(_drain(store.rank(unit="tile", size_um=budget.region * store.placement.mpp[0])))


def oracle_on_store(case: Case, store: Any) -> np.ndarray:
    """The oracle's mask on the store's grid (nearest level-0 pixel of each store pixel's
    centre, the placement the store records)."""
    from napari_histo.engine.corrections import resample_nearest

    pl = store.placement
    h, w = (int(s) for s in store.labels().shape)
    dy, dx = pl.downsample
    oy, ox = pl.origin_px
    # store px i covers level-0 [o + i d, o + (i + 1) d): centre o + (i + 0.5) d - 0.5
    return resample_nearest(case.mask.astype(np.uint8), (1.0, 1.0), (0.0, 0.0), (h, w),
                            (dy, dx), (oy + dy / 2 - 0.5, ox + dx / 2 - 0.5)).astype(bool)


def order(strategy: str, regions: list[Any], rng: np.random.Generator) -> list[Any]:
    """The review order of a strategy over the same tissue tiles."""
    if strategy == "ranked":
        return list(regions)  # the engine's default score, best first
    if strategy == "lowest-confidence":  # mean uncertainty only: no area, no boundary term
        return sorted(regions, key=lambda r: (-r.uncertainty, r.bbox_store[0], r.bbox_store[1]))
    if strategy == "random":
        return [regions[i] for i in rng.permutation(len(regions))]
    raise ValueError(f"unknown strategy {strategy!r}")


def _dice(pred: np.ndarray, ref: np.ndarray, where: np.ndarray | None = None) -> float:
    from napari_histo.engine.metrics import binary_scores

    if where is not None:
        pred, ref = pred[where], ref[where]
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(~pred & ref))
    return float(binary_scores(tp, fp, fn, int(pred.size) - tp - fp - fn)["dice"])


def measure(store: Any, oracle: np.ndarray, reviewed: list[Any], rnd: int,
            seconds: float, pred0: np.ndarray | None = None) -> RoundResult:
    """Dice of the user's result and of the model outside the reviewed tiles, corrected area;
    with ``pred0`` (round 0's labels) also the Dice of the corrections alone."""
    pred = np.asarray(store.labels()[:]) > 0
    probs = np.asarray(store.probabilities()[:])
    tissue = (probs.sum(axis=0) if probs.ndim == 3 else probs) > 0
    done = np.zeros(pred.shape, bool)
    for r in reviewed:
        y0, x0, y1, x1 = r.bbox_store
        done[y0:y1, x0:x1] = True
    user = np.where(done, oracle, pred)
    area = int(np.count_nonzero(done & tissue))
    alone = _dice(np.where(done, oracle, pred0), oracle) if pred0 is not None else float("nan")
    return RoundResult(rnd, _dice(user, oracle), _dice(pred, oracle, ~done), len(reviewed),
                       area, 100.0 * area / max(1, int(tissue.sum())),
                       int(np.count_nonzero(done & (pred != oracle))), alone,
                       seconds=round(seconds, 2), ids=[r.id for r in reviewed])


def finetune(store: Any, ckpt: Path, budget: Budget, seed: int, out: Path) -> tuple[Path, int]:
    """Fine-tune ``ckpt`` on every corrected tile with the product's path
    (``finetune_reviewed_job``: the Correct widget's settings, anchoring on by default), a
    fixed budget; nothing re-predicted in the store (the benchmark predicts the whole slide
    again). Returns (checkpoint, anchors used)."""
    from napari_histo.engine.review.finetune import finetune_config, finetune_reviewed_job

    cfg = finetune_config(ckpt, out, epochs=budget.ft_epochs, steps_per_epoch=budget.ft_steps,
                          lr=budget.ft_lr, patch_size=budget.patch, batch_size=budget.batch)
    cfg = cfg.replace(seed=seed, threads=1)
    res = _drain(finetune_reviewed_job(store, ckpt, cfg, repredict_top=0, anchor_seed=seed))
    return Path(res.checkpoint), len(res.anchors)


def run_strategy(case: Case, budget: Budget, strategy: str, seed: int, weak: Path,
                 store0: Path, work: Path, log: Callable[[str], None] = print) -> Run:
    """Round 0 (a copy of the weak model's store) then ``budget.rounds`` review rounds."""
    rng = np.random.default_rng(seed)
    run = Run(case.name, strategy, seed)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "round0.ome.zarr"
    shutil.copytree(store0, path)
    from napari_histo.engine.review import ReviewStore

    store = ReviewStore.open(path)
    oracle = oracle_on_store(case, store)
    reviewed: list[Any] = []
    pred0 = np.asarray(store.labels()[:]) > 0
    run.rounds.append(measure(store, oracle, reviewed, 0, 0.0, pred0))
    ckpt = weak
    random_order = None
    for rnd in range(1, budget.rounds + 1):
        t0 = time.perf_counter()
        regions = store.regions() or rank(store, budget)
        if strategy == "random":  # one seeded order of the tiles, kept across rounds
            random_order = random_order or [r.id for r in order("random", regions, rng)]
            by_id = {r.id: r for r in regions}
            ordered = [by_id[i] for i in random_order if i in by_id]
        else:
            ordered = order(strategy, regions, rng)
        done = {r.id for r in reviewed}
        new = [r for r in ordered if r.id not in done][:budget.k]
        for r in new:
            y0, x0, y1, x1 = r.bbox_store
            store.save_correction(r.id, oracle[y0:y1, x0:x1].astype(np.uint8))
        reviewed += new
        ckpt, n_anchors = finetune(store, ckpt, budget, seed * 100 + rnd, work / f"ft{rnd}")
        path = work / f"round{rnd}.ome.zarr"
        store = predict(case, ckpt, path)
        rank(store, budget)
        for r in reviewed:  # the session's corrections carry over to the new prediction
            y0, x0, y1, x1 = r.bbox_store
            store.save_correction(r.id, oracle[y0:y1, x0:x1].astype(np.uint8))
        run.rounds.append(measure(store, oracle, reviewed, rnd, time.perf_counter() - t0, pred0))
        last = run.rounds[-1]
        last.anchors = n_anchors
        log(f"  {case.name} {strategy:>17} seed {seed} round {rnd}: Dice user "
            f"{last.dice_user:.3f}, model (unreviewed) {last.dice_model_unreviewed:.3f}, "
            f"corrections alone {last.dice_corrections_only:.3f}, corrected "
            f"{last.area_pct:.1f}% of tissue, {n_anchors} anchors ({last.seconds:.0f} s)")
    return run
