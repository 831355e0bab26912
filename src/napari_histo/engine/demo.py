"""The demo's model: a small U-Net trained offline on the synthetic sample slide, cached.

``napari-histo demo`` (GUI or ``--headless``) needs a working model on a fresh machine with
no network. :func:`ensure_demo_model` returns a cached checkpoint, or trains ``unet-tiny`` for
a few short epochs on the sample slide and its mask at 2 um/px (a minute or two on a laptop
CPU) and caches the best checkpoint. Everything is a Task (generator) so the GUI runs it in a
worker and the CLI drains it with a progress bar. No Qt, no napari.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.progress import Message, Task

__all__ = ["DEMO_MODEL_NAME", "DEMO_MPP", "SAMPLE_NAME", "SAMPLE_SHAPE", "demo_model_path",
           "demo_training_arrays", "ensure_demo_model", "sample_slide_path"]

DEMO_MPP = 2.0
#: Bump when the recipe changes so an old cached model is not reused.
DEMO_MODEL_NAME = "demo-unet-tiny-v1.pt"

#: Bump when the generator's output changes so old caches are not reused.
SAMPLE_VERSION = 1
SAMPLE_NAME = "synthetic_he"
SAMPLE_SHAPE = (4096, 6144)
SAMPLE_MPP = 0.5
SAMPLE_LEVELS = 4
MASK_DOWNSAMPLE = 4


def sample_slide_path(*, shape: tuple[int, int] = SAMPLE_SHAPE,
                      folder: str | Path | None = None) -> Path:
    """The synthetic sample slide (``<name>.tif`` + ``<name>_mask.tif``), written on first use
    to ``folder`` (default ``core.settings.cache_dir() / sample-v<version>``).

    One copy serves File > Open Sample, the GUI demo and ``napari-histo demo --headless``.
    """
    from napari_histo.core import settings
    from napari_histo.io.synthetic import write_synthetic_slide

    root = Path(folder) if folder is not None else settings.cache_dir() / f"sample-v{SAMPLE_VERSION}"
    default = tuple(shape) == SAMPLE_SHAPE
    stem = SAMPLE_NAME if default else f"{SAMPLE_NAME}_{shape[0]}x{shape[1]}"
    slide = root / f"{stem}.tif"
    mask = root / f"{stem}_mask.tif"
    # The mask is written after the slide (both atomically), so it marks a complete sample.
    if slide.is_file() and mask.is_file():
        return slide
    root.mkdir(parents=True, exist_ok=True)
    write_synthetic_slide(slide, shape=(int(shape[0]), int(shape[1])), levels=SAMPLE_LEVELS,
                          mpp=SAMPLE_MPP, compression="jpeg", seed=0, with_mask=True,
                          mask_downsample=MASK_DOWNSAMPLE)
    return slide


def demo_model_path(cache_dir: str | Path | None = None) -> Path:
    """The demo checkpoint: ``cache_dir`` (default ``core.settings.demo_model_dir()``, shared by
    the GUI and the headless demo) / :data:`DEMO_MODEL_NAME`; it may not exist yet."""
    from napari_histo.core import settings

    folder = Path(cache_dir) if cache_dir is not None else settings.demo_model_dir()
    return folder / DEMO_MODEL_NAME


def demo_training_arrays(slide_path: str | Path, mask_path: str | Path, *,
                         mpp: float = DEMO_MPP) -> tuple[list[Any], float]:
    """The sample slide and its mask near ``mpp`` um/px, as four quadrant ``ArraySample`` s.

    Returns the samples and their actual um/px (the pyramid level read). Quadrants are
    separate groups so the run has a validation split by region.
    """
    from napari_histo.engine.corrections import resample_nearest
    from napari_histo.engine.datasets.segmentation import ArraySample
    from napari_histo.io.masks import mask_scale_for, open_mask
    from napari_histo.io.slide import open_slide

    with open_slide(slide_path) as slide:
        downs = [float(d) for d in slide.metadata.level_downsamples]
        base = float(slide.mpp[1]) if slide.mpp else mpp
        # coarsest level still at least as fine as ``mpp`` (train() resamples the rest)
        level = max((i for i, d in enumerate(downs) if base * d <= mpp * 1.01), default=0)
        ds = downs[level]
        image = np.asarray(slide.levels[level])[..., :3].astype(np.uint8)
        with open_mask(mask_path) as mask:
            sy, sx = mask_scale_for(slide, mask)  # slide px per mask px
            lab = resample_nearest(mask.levels[0], (sy, sx), ((sy - 1) / 2, (sx - 1) / 2),
                                   image.shape[:2], (ds, ds), ((ds - 1) / 2, (ds - 1) / 2))
    lab = (lab > 0).astype(np.uint8)
    h, w = lab.shape
    out = []
    for k, (y0, y1, x0, x1) in enumerate([(0, h // 2, 0, w // 2), (0, h // 2, w // 2, w),
                                          (h // 2, h, 0, w // 2), (h // 2, h, w // 2, w)]):
        out.append(ArraySample(np.ascontiguousarray(image[y0:y1, x0:x1]),
                               np.ascontiguousarray(lab[y0:y1, x0:x1]), None, f"quadrant-{k}",
                               f"sample quadrant {k}"))
    return out, base * ds


def ensure_demo_model(slide_path: str | Path, mask_path: str | Path,
                      cache_dir: str | Path | None = None, *, epochs: int = 6, steps_per_epoch: int = 24, device: str = "cpu",
                      ) -> Task[Path]:
    """Return the cached demo checkpoint, training it first when there is none.

    ``cache_dir`` defaults to the folder the GUI and the headless demo share
    (:func:`demo_model_path`). Yields the training's Progress/EpochEnd events; the checkpoint is copied into
    ``cache_dir`` atomically only once training finished, so an interrupted run never leaves
    a half-trained model behind as "the" demo model.
    """
    from napari_histo.engine.training import TrainConfig, train

    target = demo_model_path(cache_dir)
    cache = target.parent
    if target.is_file():
        yield Message(f"using the cached demo model {target}")
        return target
    cache.mkdir(parents=True, exist_ok=True)
    yield Message("no demo model yet: training a small U-Net on the sample slide (offline)")
    arrays, data_mpp = demo_training_arrays(slide_path, mask_path)
    cfg = TrainConfig(task="segment", model="unet-tiny", epochs=epochs, lr=3e-3, batch_size=8,
                      patch_size=128, mpp=DEMO_MPP, data_mpp=data_mpp, device=device,
                      out_dir=str(cache / "demo-run"), val_fraction=0.25, seed=0,
                      steps_per_epoch=steps_per_epoch, early_stopping_patience=None,
                      class_names=("background", "tumor"), num_classes=2, amp=False,
                      # one synthetic stain and six short epochs: the strong stain
                      # augmentation meant for cross-hospital data cost the demo Dice
                      # 0.82 -> 0.51 (measured), so the toy model trains without it
                      stain_augment=0.0)
    if Path(cfg.out_dir).exists():
        shutil.rmtree(cfg.out_dir)
    result = yield from train(cfg, arrays=arrays)
    best = Path(result.best_checkpoint or result.last_checkpoint)
    tmp = cache / f".{DEMO_MODEL_NAME}.tmp"
    shutil.copyfile(best, tmp)
    os.replace(tmp, target)
    yield Message(f"demo model saved to {target}")
    return target
