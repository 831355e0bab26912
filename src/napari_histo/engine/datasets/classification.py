"""Patch classification data: class folders / CSV patches in memory, PCam HDF5 read lazily.

Every dataset exposes ``labels``, ``groups`` and ``get_batch(indices, rng, train)`` returning
a uint8 NHWC tensor cropped to ``patch_size`` (random crop when training, centre otherwise)
and int64 labels, so the training loop treats them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from napari_histo.core.errors import DataError
from napari_histo.engine.datasets.discover import ClsRecord
from napari_histo.engine.datasets.images import read_image, resize_image

#: side of a standard PCam patch (``camelyonpatch_level_2_*``)
PCAM_SIDE = 96
#: bounds for any HDF5 patch file: patch side and number of patches
MAX_H5_SIDE = 1024
MAX_H5_ITEMS = 50_000_000


def _fit(img: npt.NDArray[np.uint8], size: int, rng: np.random.Generator | None) -> npt.NDArray[np.uint8]:
    """Crop (random or centre) or pad (white) ``img`` to ``size`` x ``size``."""
    h, w = img.shape[:2]
    if h < size or w < size:
        out = np.full((max(h, size), max(w, size), 3), 255, np.uint8)
        oy, ox = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
        out[oy:oy + h, ox:ox + w] = img
        img, h, w = out, out.shape[0], out.shape[1]
    if rng is None:
        y0, x0 = (h - size) // 2, (w - size) // 2
    else:
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return img[y0:y0 + size, x0:x0 + size]


class PatchDataset(Dataset):
    """Labelled patches held in memory as uint8 (resampled by ``scale`` at load time)."""

    def __init__(self, images: Sequence[npt.NDArray[np.uint8]],
                 labels: Sequence[int] | npt.NDArray[np.integer],
                 groups: Sequence[str], patch_size: int, names: Sequence[str] | None = None) -> None:
        if not images:
            raise DataError("no labelled patches")
        self.images = list(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.groups = [str(g) for g in groups]
        self.names = list(names) if names is not None else [str(i) for i in range(len(images))]
        self.patch_size = int(patch_size)

    @classmethod
    def from_records(cls, records: Sequence[ClsRecord], class_names: Sequence[str],
                     patch_size: int, scale: float = 1.0) -> PatchDataset:
        """Read every record (clear DataError on unreadable files or unknown labels)."""
        index = {c: i for i, c in enumerate(class_names)}
        imgs, labs = [], []
        for r in records:
            if r.label not in index:
                raise DataError(f"label {r.label!r} of {r.path} is not one of {list(class_names)}")
            imgs.append(resize_image(read_image(r.path), scale))
            labs.append(index[r.label])
        return cls(imgs, labs, [r.group for r in records], patch_size,
                   [Path(r.path).name for r in records])

    def subset(self, indices: Sequence[int]) -> PatchDataset:
        """A dataset of the given items (for train/val splits)."""
        return PatchDataset([self.images[i] for i in indices], self.labels[list(indices)],
                            [self.groups[i] for i in indices], self.patch_size,
                            [self.names[i] for i in indices])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[npt.NDArray[np.uint8], int]:
        return _fit(self.images[i], self.patch_size, None), int(self.labels[i])

    def get_batch(self, indices: Sequence[int], rng: np.random.Generator | None,
                  size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, S, S, 3) and int64 (N,) for ``indices`` (random crops when rng is given)."""
        size = size or self.patch_size
        imgs = np.stack([_fit(self.images[i], size, rng) for i in indices])
        return torch.from_numpy(imgs), torch.from_numpy(self.labels[list(indices)])


class PCamDataset(Dataset):
    """PatchCamelyon HDF5 (``*_x.h5`` (N,96,96,3) uint8, ``*_y.h5`` (N,1,1,1)) read lazily.

    The file handle is opened per process on first use, so the dataset pickles into
    DataLoader workers.
    """

    def __init__(self, x_path: str | Path, y_path: str | Path, patch_size: int,
                 indices: Sequence[int] | None = None, groups: Sequence[str] | None = None) -> None:
        import h5py

        self.x_path, self.y_path = str(x_path), str(y_path)
        try:
            with h5py.File(self.x_path, "r") as fx, h5py.File(self.y_path, "r") as fy:
                kx, ky = next(iter(fx.keys())), next(iter(fy.keys()))
                dx, dy = fx[kx], fy[ky]
                if not hasattr(dx, "shape") or not hasattr(dy, "shape"):
                    raise DataError(f"{self.x_path}: first entry {kx!r} is not a dataset")
                if dx.ndim != 4 or dx.shape[-1] != 3 or dx.dtype != np.uint8:
                    raise DataError(f"{self.x_path}: expected (N, H, W, 3) uint8 patches, got "
                                    f"{dx.shape} {dx.dtype}")
                side = PCAM_SIDE if Path(self.x_path).name.startswith("camelyonpatch") else None
                if (side and dx.shape[1:3] != (side, side)) or not (
                        8 <= dx.shape[1] <= MAX_H5_SIDE and 8 <= dx.shape[2] <= MAX_H5_SIDE):
                    raise DataError(f"{self.x_path}: patches are {dx.shape[2]}x{dx.shape[1]} px; "
                                    f"expected {side or f'8..{MAX_H5_SIDE}'} px squares")
                if dy.size > MAX_H5_ITEMS or dx.shape[0] > MAX_H5_ITEMS:
                    raise DataError(f"{self.y_path}: more than {MAX_H5_ITEMS} patches")
                if not np.issubdtype(dy.dtype, np.integer) and not np.issubdtype(dy.dtype, np.bool_):
                    raise DataError(f"{self.y_path}: labels must be integers, got {dy.dtype}")
                n = dx.shape[0]
                ylab = np.asarray(dy[:]).reshape(-1).astype(np.int64)
        except (OSError, StopIteration, KeyError, TypeError) as err:
            raise DataError(f"cannot read PCam files {self.x_path} / {self.y_path}: {err}") from err
        if ylab.shape[0] != n:
            raise DataError(f"PCam: {n} patches but {ylab.shape[0]} labels")
        if ylab.size and (ylab.min() < 0 or ylab.max() > 63):
            raise DataError(f"{self.y_path}: labels must be class indices 0..63, got "
                            f"{ylab.min()}..{ylab.max()}")
        self.key = kx
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = ylab[self.indices]
        self.groups = ([str(g) for g in groups] if groups is not None
                       else [f"pcam{i}" for i in self.indices])
        self.patch_size = int(patch_size)
        self._fx: Any = None

    def __getstate__(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["_fx"] = None  # never pickle an open file
        return d

    def _file(self) -> Any:
        if self._fx is None:
            import h5py

            self._fx = h5py.File(self.x_path, "r")
        return self._fx[self.key]

    def subset(self, indices: Sequence[int]) -> PCamDataset:
        """A dataset of the given positions."""
        sub = PCamDataset.__new__(PCamDataset)
        sub.__dict__.update(self.__getstate__())
        sub.indices = self.indices[list(indices)]
        sub.labels = self.labels[list(indices)]
        sub.groups = [self.groups[i] for i in indices]
        return sub

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def get_batch(self, indices: Sequence[int], rng: np.random.Generator | None,
                  size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Read the patches (unique sorted reads: h5py needs increasing indices)."""
        size = size or self.patch_size
        pos = np.asarray(indices)
        uniq, inverse = np.unique(self.indices[pos], return_inverse=True)
        data = np.asarray(self._file()[uniq])[inverse]
        imgs = np.stack([_fit(im, size, rng) for im in data])
        return torch.from_numpy(imgs), torch.from_numpy(self.labels[pos])
