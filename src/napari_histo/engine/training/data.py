"""Turn a TrainConfig (+ GUI arrays) into train/validation datasets and preprocessing.

This is where resolution (mpp), stain normalisation and the group split are decided, once,
so the checkpoint records exactly what the model saw.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import ConfigError, DataError
from napari_histo.engine.checkpoints import default_preprocessing
from napari_histo.engine.datasets import (
    IGNORE_INDEX,
    ArraySample,
    PatchDataset,
    PCamDataset,
    SegmentationDataset,
    find_classification_items,
    find_pcam_splits,
    find_segmentation_pairs,
    load_pairs,
    split_by_group,
)
from napari_histo.engine.datasets.array_folder import is_array_folder, load_array_samples
from napari_histo.engine.training.config import TrainConfig


@dataclass
class DataBundle:
    """Datasets and facts about them that the loop, reports and checkpoint need."""

    task: str
    class_names: list[str]
    train: Any
    val: Any  # list[ArraySample] for segment; PatchDataset/PCamDataset for classify
    preprocessing: dict[str, Any]
    train_groups: list[str] = field(default_factory=list)
    val_groups: list[str] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of classes (>= 2)."""
        return len(self.class_names)


def _stain_params(cfg: TrainConfig, first_image: np.ndarray | None,
                  given: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if given:
        return given
    if not cfg.stain_norm:
        return None
    from napari_histo.engine.stain import fit_stain

    ref: Any = cfg.stain_reference if cfg.stain_reference else first_image
    if ref is None:
        raise ConfigError("stain normalisation needs a reference image (stain_reference)")
    return fit_stain(ref, cfg.stain_norm)


def segmentation_samples(cfg: TrainConfig, arrays: list[ArraySample] | None = None,
                         mpp: float | None = None) -> list[ArraySample]:
    """All labelled samples of the config's data plus ``arrays``, at training mpp.

    A data entry is a folder of image/mask pairs (``images/`` + ``labels/``), or a slide /
    folder of slides each with a ``NAME_mask.*`` or ``NAME.xml``/``NAME.geojson`` beside it:
    those give tissue regions at ``mpp`` (default ``cfg.mpp``), tumour/normal balanced.
    """
    samples: list[ArraySample] = []
    mpp = mpp if mpp is not None else cfg.mpp
    for src in cfg.data:
        p = Path(src)
        if p.is_dir() and not any(p.iterdir()):
            raise DataError(f"data folder {p} is empty")
        if is_array_folder(p):  # samples saved by a GUI run's card (exact, in order)
            samples += [a.rescaled(cfg.scale) for a in load_array_samples(p)]
            continue
        slides, unlabelled = _slide_sources((src,))
        if slides:
            samples += _slide_region_samples(cfg, slides, mpp)
            continue
        try:
            samples += load_pairs(find_segmentation_pairs(p, cfg.group_by), cfg.scale)
        except DataError as err:
            if unlabelled:
                raise DataError(
                    f"{p} holds slides ({', '.join(unlabelled[:3])}) but none has ground truth "
                    "beside it: NAME_mask.tif / NAME_mask.png or NAME.xml / NAME.geojson") from err
            raise
    for a in arrays or []:  # copies: stain normalisation must not touch the caller's arrays
        samples.append(ArraySample(a.image, a.labels, a.weights, a.group, a.name).rescaled(cfg.scale))
    if not samples:
        raise DataError("no training data: give a data folder (images/ + labels/) or arrays")
    return samples


def _slide_region_samples(cfg: TrainConfig, slides: list[tuple[str, tuple[str, str] | None]],
                          mpp: float | None) -> list[ArraySample]:
    """Balanced tissue regions (patch_size at ``mpp``) of labelled slides, bounded in memory."""
    from napari_histo.engine.datasets.slides import MAX_REGION_PIXELS, slide_regions

    if mpp is None:
        raise ConfigError("training from slides needs the resolution: set mpp (um/px)")
    per_class = max(1, min(512, MAX_REGION_PIXELS // (2 * len(slides) * cfg.patch**2)))
    out: list[ArraySample] = []
    for i, (path, truth) in enumerate(slides):
        if truth is None:
            raise DataError(f"{Path(path).name} has no ground truth beside it: NAME_mask.tif / "
                            "NAME_mask.png or NAME.xml / NAME.geojson")
        out += slide_regions(path, truth, mpp=mpp, size=cfg.patch,
                             max_per_class=per_class, seed=cfg.seed + i)
    return out


def slides_mpp(cfg: TrainConfig) -> float | None:
    """Training mpp: ``cfg.mpp``, else (training from slides) the coarsest level-0 mpp of the
    slides, so every slide can provide it; None when neither is known."""
    if cfg.mpp is not None:
        return float(cfg.mpp)
    slides, _ = _slide_sources(cfg.data)
    if not slides:
        return None
    from napari_histo.io.slide import open_slide

    mpps = []
    for path, _truth in slides:
        with open_slide(path) as s:
            if s.mpp is None:
                raise ConfigError(f"{Path(path).name} has no microns-per-pixel: set mpp (um/px)")
            mpps.append(float(s.mpp[1]))
    return max(mpps)


def build_segmentation(cfg: TrainConfig, arrays: list[ArraySample] | None = None,
                       stain: dict[str, Any] | None = None) -> DataBundle:
    """Load, split by group, stain-normalise; return the bundle."""
    mpp = slides_mpp(cfg)
    samples = segmentation_samples(cfg, arrays, mpp)
    max_label = max(int(s.labels[s.labels != IGNORE_INDEX].max(initial=0)) for s in samples)
    n_cls = cfg.num_classes or max(2, max_label + 1)
    if max_label >= n_cls:
        raise DataError(f"labels go up to {max_label} but num_classes is {n_cls}")
    names = list(cfg.class_names) if cfg.class_names else (
        ["background", "foreground"] if n_cls == 2 else [f"class_{i}" for i in range(n_cls)])
    if len(names) != n_cls:
        raise ConfigError(f"{len(names)} class names given for {n_cls} classes")
    groups = [s.group for s in samples]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr, va = split_by_group(groups, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                val_groups=cfg.val_groups or None)
    for w in caught:
        warnings.warn(str(w.message), stacklevel=2)
    train_s = [samples[i] for i in tr]
    val_s = [samples[i] for i in va]
    stain = _stain_params(cfg, train_s[0].image if train_s else None, stain)
    if stain:
        from napari_histo.engine.stain import normalize_image

        for s in {id(s): s for s in train_s + val_s}.values():
            s.image = normalize_image(s.image, stain)
    pre = default_preprocessing(mpp=mpp, patch_size=cfg.patch_size, stain=stain)
    counts = np.zeros(n_cls, np.int64)
    for s in train_s:
        counts += np.bincount(s.labels[s.labels != IGNORE_INDEX].ravel(), minlength=n_cls)[:n_cls]
    return DataBundle("segment", names, SegmentationDataset(train_s, cfg.patch, seed=cfg.seed),
                      val_s, pre, sorted({s.group for s in train_s}), sorted({s.group for s in val_s}),
                      counts.tolist())


def _slide_sources(data: tuple[str, ...]) -> tuple[list[tuple[str, tuple[str, str] | None]],
                                                   list[str]]:
    """((slide, truth), ...) for data entries that are slides or folders of annotated slides,
    and the names of slides in those folders that have no ground truth."""
    from napari_histo.engine.datasets.slides import SLIDE_SUFFIXES, find_slide_truth

    out: list[tuple[str, tuple[str, str] | None]] = []
    unlabelled: list[str] = []
    for src in data:
        p = Path(src)
        if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES:
            out.append((str(p), find_slide_truth(p)))
        elif p.is_dir():
            for f in sorted(p.iterdir()):
                if (f.is_file() and f.suffix.lower() in SLIDE_SUFFIXES
                        and not f.stem.endswith("_mask")):
                    truth = find_slide_truth(f)
                    if truth is not None:
                        out.append((str(f), truth))
                    else:
                        unlabelled.append(f.name)
    return out, unlabelled


def _default_center(patch_size: int) -> int:
    """CAMELYON's rule: tumour if the centre 128 px hold tumour (of a 299 px context); at most
    half the patch for smaller patches."""
    return max(1, min(128, patch_size // 2))


def build_classification(cfg: TrainConfig, stain: dict[str, Any] | None = None) -> DataBundle:
    """Patches from class folders, CSV indexes, PCam HDF5 or annotated slides.

    Class folders, CSVs, slides and an unsplit HDF5 file are split by group (slide, patient).
    A standard PCam folder keeps its fixed splits: train on ``train``, validate on ``valid``;
    ``test`` is never read here (``evaluate_checkpoint(..., split="test")``). Slides give
    tissue patches of ``patch_size`` at the training mpp labelled by the CAMELYON centre rule
    (``center_size``, default 128 px), tumour/normal balanced per slide.
    """
    if not cfg.data:
        raise DataError("no training data: give class folders, a CSV path,label[,group] or PCam h5")
    pcam = find_pcam_splits(cfg.data[0])
    slides, _ = _slide_sources(cfg.data)
    mpp = cfg.mpp
    fixed: tuple[Any, Any] | None = None  # (train, val) of a dataset with fixed splits
    if slides:
        mpp = slides_mpp(cfg)
        assert mpp is not None
        full, names = _slide_patches(cfg, slides, mpp)
        labels = full.labels
    elif pcam is not None:
        names = list(cfg.class_names or ["normal", "tumor"])
        full, labels, fixed = _pcam_sets(cfg, pcam)
    else:
        full, names = _folder_patches(cfg)
        labels = full.labels
    if fixed is not None:
        train, val = fixed
    else:
        tr, va = split_by_group(full.groups, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                val_groups=cfg.val_groups or None, labels=labels)
        train, val = full.subset(tr), full.subset(va)
    if cfg.stain_norm or stain:
        stain = _normalise_patches(cfg, train, val, stain)
    ctx = cfg.patch_size
    centre = cfg.center_size or (_default_center(cfg.patch) if slides else None)
    pre = default_preprocessing(mpp=mpp, patch_size=cfg.patch_size, stain=stain,
                                context_size=ctx, center_size=centre)
    counts = np.bincount(train.labels, minlength=len(names)).tolist()
    return DataBundle("classify", names, train, val, pre, sorted(set(train.groups)),
                      sorted(set(val.groups)), counts)


def _slide_patches(cfg: TrainConfig, slides: list[Any], mpp: float) -> tuple[Any, list[str]]:
    """Tissue patches of annotated slides (CAMELYON centre rule) and the class names."""
    from napari_histo.engine.datasets.slides import SlidePatchDataset, sample_slide_patches

    center = cfg.center_size or _default_center(cfg.patch)
    patches = []
    for i, (path, truth) in enumerate(slides):
        patches += sample_slide_patches(path, truth, mpp=mpp, context_size=cfg.patch,
                                        center_size=center, seed=cfg.seed + i)
    full = SlidePatchDataset(patches, mpp, cfg.patch)
    n = int(full.labels.max()) + 1
    names = list(cfg.class_names or (["normal", "tumor"] if n <= 2 else
                                     [f"class_{i}" for i in range(n)]))
    return full, names


def _pcam_sets(cfg: TrainConfig, pcam: dict[str, Any]) -> tuple[Any, Any, tuple[Any, Any] | None]:
    """(dataset to split by group, its labels, None) or (None, None, (train, valid)) of PCam.

    One unsplit file is split by group (meta.csv wsi) like any set; a standard PCam folder
    trains on train and validates on valid (test only when evaluating).
    """
    if "" in pcam:
        full = _pcam_dataset(pcam[""], cfg.patch, "")
        return full, full.labels, None
    if "train" not in pcam:
        raise DataError(f"no PCam train split in {cfg.data[0]}: expected "
                        "camelyonpatch_level_2_split_train_x.h5")
    if cfg.val_groups:
        raise ConfigError("PCam has a fixed validation split (valid): leave val_groups "
                          "empty")
    train_ds = _pcam_dataset(pcam["train"], cfg.patch, "train")
    val_ds = (_pcam_dataset(pcam["valid"], cfg.patch, "valid") if "valid" in pcam
              else None)
    if val_ds is None:
        # stacklevel 3: the caller of build_classification, as before this step was split out
        warnings.warn(f"no PCam valid split in {cfg.data[0]}: validating on a group "
                      "split of train", stacklevel=3)
        return train_ds, train_ds.labels, None
    return None, None, (train_ds, val_ds)


def _folder_patches(cfg: TrainConfig) -> tuple[PatchDataset, list[str]]:
    """Patches of class folders or CSV indexes, and the class names (>= 2)."""
    records = []
    for src in cfg.data:
        if Path(src).is_dir() and not any(Path(src).iterdir()):
            raise DataError(f"data folder {src} is empty")
        records += find_classification_items(src, cfg.group_by)
    names = list(cfg.class_names or sorted({r.label for r in records}))
    if len(names) < 2:
        raise DataError(f"classification needs >= 2 classes; found only {names}")
    return PatchDataset.from_records(records, names, cfg.patch, cfg.scale), names


def _normalise_patches(cfg: TrainConfig, train: Any, val: Any,
                       stain: dict[str, Any] | None) -> dict[str, Any] | None:
    """Fit (or take) the stain parameters; normalise in-memory patches once, in place."""
    first = train.get_batch([0], None)[0][0].numpy() if len(train) and not stain else None
    stain = _stain_params(cfg, first, stain)
    if isinstance(train, PatchDataset):
        from napari_histo.engine.stain import normalize_image

        assert stain is not None  # cfg.stain_norm or a given stain: fitted above
        cache: dict[int, np.ndarray] = {}
        for ds in (train, val):
            for i, im in enumerate(ds.images):
                ds.images[i] = cache.setdefault(id(im), normalize_image(im, stain))
    return stain


def _pcam_dataset(files: tuple[Path, Path, Path | None], patch_size: int,
                  split: str) -> PCamDataset:
    """A lazily read PCam split; groups from its meta.csv (``wsi``) when present, else one
    group per patch (unsplit file) or the split name (fixed split)."""
    x, y, meta = files
    groups = None
    if meta is not None:
        import csv

        try:
            with open(meta, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"cannot read PCam meta {meta}: {err}") from err
        col = next((c for c in ("wsi", "slide", "group") if rows and c in rows[0]), None)
        groups = [r[col] for r in rows] if col else None
    ds = PCamDataset(x, y, patch_size)
    if groups is not None and len(groups) != len(ds):
        raise DataError(f"{meta.name if meta else 'meta'} lists {len(groups)} rows for "
                        f"{len(ds)} patches")
    if groups is None and split:
        groups = [f"pcam_{split}"] * len(ds)
    if groups is not None:
        ds.groups = [str(g) for g in groups]
    return ds


def build_data(cfg: TrainConfig, arrays: list[ArraySample] | None = None,
               stain: dict[str, Any] | None = None) -> DataBundle:
    """Datasets for ``cfg.task``; ``stain`` = already fitted parameters to apply (fine-tuning)."""
    if cfg.task == "segment":
        return build_segmentation(cfg, arrays, stain)
    if arrays:
        raise ConfigError("arrays (painted labels) are for segmentation training")
    return build_classification(cfg, stain)
