"""Dense segmentation data held in memory as uint8: image/mask pairs and painted arrays.

GlaS-size datasets (a few hundred images) fit in memory once resampled to the training
resolution, so every epoch crops from RAM: no decode per step, no worker processes needed
on small machines. Painted corrections from the GUI arrive as :class:`ArraySample` with
``IGNORE_INDEX`` marking unlabelled pixels and optional per-pixel weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from napari_histo.core.errors import DataError
from napari_histo.engine.datasets.discover import SegRecord
from napari_histo.engine.datasets.images import (
    mask_to_classes,
    read_image,
    resize_image,
    resize_labels,
)

IGNORE_INDEX = 255


@dataclass
class ArraySample:
    """An image with a label map (``IGNORE_INDEX`` = unlabelled) and optional pixel weights."""

    image: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.integer]
    weights: npt.NDArray[np.floating] | None = None
    group: str = "array"
    name: str = ""

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim != 3 or img.shape[2] < 3:
            raise DataError(f"array sample {self.name!r}: image must be (H, W, 3), got {img.shape}")
        if img.dtype != np.uint8:
            raise DataError(f"array sample {self.name!r}: image must be uint8, got {img.dtype}")
        lab = np.asarray(self.labels)
        if lab.shape != img.shape[:2]:
            raise DataError(f"array sample {self.name!r}: labels {lab.shape} do not match image "
                            f"{img.shape[:2]}")
        if lab.size and (lab.min() < 0 or (lab.max() > 64 and lab.max() != IGNORE_INDEX)):
            raise DataError(f"array sample {self.name!r}: label values must be class indices "
                            f"0..63 or {IGNORE_INDEX} (unlabelled)")
        self.image = np.ascontiguousarray(img[..., :3])
        self.labels = lab.astype(np.uint8)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float32)
            if w.shape != lab.shape:
                raise DataError(f"array sample {self.name!r}: weights {w.shape} do not match "
                                f"labels {lab.shape}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise DataError(f"array sample {self.name!r}: weights must be finite and >= 0")
            self.weights = w

    def rescaled(self, scale: float) -> ArraySample:
        """This sample resampled by ``scale`` (labels and weights by nearest neighbour)."""
        if abs(scale - 1) < 1e-3:
            return self
        return ArraySample(resize_image(self.image, scale), resize_labels(self.labels, scale),
                           None if self.weights is None else resize_labels(self.weights, scale),
                           self.group, self.name)


def load_pairs(records: Sequence[SegRecord], scale: float = 1.0) -> list[ArraySample]:
    """Read image/mask pairs, check them, map masks to classes and resample by ``scale``.

    Raises
    ------
    DataError
        Unreadable file, image/mask size mismatch, or unexpected mask values.
    """
    out = []
    for r in records:
        img = read_image(r.image)
        mask = read_image(r.mask, mask=True)
        if mask.shape != img.shape[:2]:
            raise DataError(f"image {r.image} is {img.shape[1]}x{img.shape[0]} but its mask "
                            f"{r.mask} is {mask.shape[1]}x{mask.shape[0]} (width x height)")
        lab = mask_to_classes(mask, r.mask)
        out.append(ArraySample(img, lab, None, r.group, r.name).rescaled(scale))
    return out


class SegmentationDataset(Dataset):
    """Random crops from in-memory samples; picklable; deterministic per (seed, epoch, index).

    Parameters
    ----------
    samples
        Images with labels (``IGNORE_INDEX`` = unlabelled) and optional weights.
    patch_size
        Side of the square crops fed to the model.
    crops_per_image
        Crops drawn per sample and epoch; default: about one per patch-sized area.
    focus_labelled
        Probability that a crop is centred on a labelled pixel (for sparse painted labels).
    """

    def __init__(self, samples: Sequence[ArraySample], patch_size: int, *,
                 crops_per_image: int | None = None, focus_labelled: float = 0.8,
                 seed: int = 0) -> None:
        if not samples:
            raise DataError("no training images")
        self.samples = list(samples)
        self.patch_size = int(patch_size)
        self.seed = seed
        self.epoch = 0
        self.focus_labelled = focus_labelled
        self._index: list[int] = []
        self._labelled: list[npt.NDArray[np.int64] | None] = []
        for i, s in enumerate(self.samples):
            h, w = s.labels.shape
            n = crops_per_image or max(1, int(round(h * w / self.patch_size**2)))
            self._index += [i] * n
            known = s.labels != IGNORE_INDEX
            if known.all():
                self._labelled.append(None)
            else:
                flat = np.flatnonzero(known)
                if flat.size == 0:
                    raise DataError(f"sample {s.name or i!r} has no labelled pixels")
                self._labelled.append(flat)

    def __len__(self) -> int:
        return len(self._index)

    def crop(self, i: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One ``size`` crop (image, labels, weights) of sample-slot ``i``, padded if needed."""
        s = self.samples[self._index[i]]
        h, w = s.labels.shape
        lab_idx = self._labelled[self._index[i]]
        if lab_idx is not None and rng.random() < self.focus_labelled:
            c = int(lab_idx[rng.integers(lab_idx.size)])
            cy, cx = divmod(c, w)
            y0, x0 = cy - size // 2, cx - size // 2
            y0 = int(np.clip(y0, min(0, h - size), max(0, h - size)))
            x0 = int(np.clip(x0, min(0, w - size), max(0, w - size)))
        else:
            y0 = int(rng.integers(0, h - size + 1)) if h > size else (h - size) // 2
            x0 = int(rng.integers(0, w - size + 1)) if w > size else (w - size) // 2
        return _crop_pad(s, y0, x0, size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return self.crop(i, self.patch_size, rng)

    def get_batch(self, indices: Sequence[int], rng: np.random.Generator,
                  size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stacked uint8 images (N,S,S,3), int64 labels (N,S,S), float weights (N,S,S)."""
        size = size or self.patch_size
        parts = [self.crop(i, size, rng) for i in indices]
        imgs = torch.from_numpy(np.stack([p[0] for p in parts]))
        labs = torch.from_numpy(np.stack([p[1] for p in parts]).astype(np.int64))
        wts = torch.from_numpy(np.stack([p[2] for p in parts]))
        return imgs, labs, wts


def _crop_pad(s: ArraySample, y0: int, x0: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = s.labels.shape
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = 255  # pad with white background, what slides look like off-tissue
    lab = np.full((size, size), IGNORE_INDEX, np.uint8)
    wt = np.zeros((size, size), np.float32)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + size), min(w, x0 + size)
    dy, dx = ys - y0, xs - x0
    img[dy:dy + ye - ys, dx:dx + xe - xs] = s.image[ys:ye, xs:xe]
    lab[dy:dy + ye - ys, dx:dx + xe - xs] = s.labels[ys:ye, xs:xe]
    if s.weights is None:
        wt[dy:dy + ye - ys, dx:dx + xe - xs] = 1.0
    else:
        wt[dy:dy + ye - ys, dx:dx + xe - xs] = s.weights[ys:ye, xs:xe]
    return img, lab, wt
