"""Batches for the training loop: crop/sample, augment on the whole batch, prefetch.

A single background thread prepares the next batches while the model computes (torch ops
release the GIL), which on a 2-core machine hides the data cost without worker processes.
``num_workers > 0`` is only worth it for lazily decoded data on big machines.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from napari_histo.engine.datasets import PatchDataset, SegmentationDataset
from napari_histo.engine.transforms import (
    AugmentConfig,
    colour_jitter,
    dihedral,
    normalize,
    random_scale_size,
    resize_batch,
    to_float01,
)

Batch = dict[str, torch.Tensor]


class BatchMaker:
    """Build model-ready batches (normalised float NCHW + targets) from dataset indices."""

    def __init__(self, dataset: Any, preprocessing: dict[str, Any], augment: AugmentConfig | None,
                 patch_size: int) -> None:
        self.ds = dataset
        self.pre = preprocessing
        self.aug = augment
        self.patch = patch_size
        self.seg = isinstance(dataset, SegmentationDataset)

    def __call__(self, indices: Sequence[int], rng: np.random.Generator | None,
                 gen: torch.Generator | None) -> Batch:
        """One batch; ``rng``/``gen`` None = deterministic (validation) crops, no augmentation."""
        aug = self.aug if (self.aug is not None and rng is not None and gen is not None) else None
        size = random_scale_size(self.patch, rng, aug.scale) if aug is not None and rng is not None \
            else self.patch
        if self.seg:
            imgs, labs, wts = self.ds.get_batch(indices, rng if rng is not None else np.random.default_rng(0), size)
        else:
            imgs, labs = self.ds.get_batch(indices, rng, size)
            wts = None
        if not isinstance(self.ds, (PatchDataset, SegmentationDataset)) and self.pre.get("stain"):
            from napari_histo.engine.stain import normalize_batch

            imgs = torch.from_numpy(normalize_batch(imgs.numpy(), self.pre["stain"]))
        x = to_float01(imgs)
        if size != self.patch:
            if self.seg:
                x, labs, wts = resize_batch(x, self.patch, labs, wts)  # type: ignore[assignment]
            else:
                (x,) = resize_batch(x, self.patch)  # type: ignore[assignment]
        if aug is not None:
            assert gen is not None
            if self.seg:
                x, labs, wts = dihedral(x, gen, labs, wts, flips=aug.flips, rot90=aug.rot90)  # type: ignore[assignment]
            else:
                (x,) = dihedral(x, gen, flips=aug.flips, rot90=aug.rot90)  # type: ignore[assignment]
            x = colour_jitter(x, gen, aug)
        out: Batch = {"x": normalize(x, self.pre["mean"], self.pre["std"]), "y": labs}
        if wts is not None:
            out["w"] = wts
        return out


def epoch_indices(n: int, batch_size: int, rng: np.random.Generator, *,
                  labels: np.ndarray | None = None, balance: bool = False,
                  steps: int | None = None) -> list[list[int]]:
    """Shuffled (or class-balanced, with replacement) index batches for one epoch."""
    if balance and labels is not None and len(np.unique(labels)) > 1:
        counts = np.bincount(labels)
        p = 1.0 / counts[labels]
        order = rng.choice(n, size=n, replace=True, p=p / p.sum())
    else:
        order = rng.permutation(n)
    batches = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < max(2, batch_size // 2):
        batches.pop()  # a 1-sample batch breaks batch norm and wastes a step
    if steps is not None:
        while len(batches) < steps:
            batches += epoch_indices(n, batch_size, rng, labels=labels, balance=balance)
        batches = batches[:steps]
    return batches


class EpochBatches(torch.utils.data.Dataset):
    """One epoch's batches as a picklable dataset, for DataLoader worker processes.

    Batch ``b`` is made with RNGs seeded by (seed, epoch, b, *stream), so workers give
    exactly what the in-process prefetch thread would; ``stream`` tells the ranks of a
    distributed run apart (empty on rank 0).
    """

    def __init__(self, batches: Sequence[Sequence[int]], maker: BatchMaker, seed: int,
                 epoch: int, stream: tuple[int, ...] = ()) -> None:
        self.batches = [list(b) for b in batches]
        self.maker = maker
        self.seed = seed
        self.epoch = epoch
        self.stream = tuple(stream)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> Batch:
        import zlib

        seq = (self.seed, self.epoch, b, *self.stream)
        key = np.asarray(seq, dtype=np.int64).tobytes()
        g = torch.Generator().manual_seed(zlib.crc32(key))
        return self.maker(self.batches[b], np.random.default_rng(seq), g)


def worker_loader(batches: EpochBatches, num_workers: int) -> torch.utils.data.DataLoader:
    """DataLoader over whole batches in ``num_workers`` processes (for lazily read data)."""
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False,
                                       num_workers=num_workers, prefetch_factor=2,
                                       persistent_workers=False)


class Prefetcher:
    """Iterate ``make(item)`` over ``items`` with ``depth`` results prepared in a thread."""

    def __init__(self, items: Sequence[Any], make: Callable[[Any], Batch], depth: int = 2) -> None:
        self.items = list(items)
        self.make = make
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="napari-histo-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.items:
                if self.stop.is_set():
                    return
                self._put(("ok", self.make(item)))
            self._put(("end", None))
        except BaseException as err:  # re-raised in the consumer thread
            self._put(("err", err))

    def _put(self, v: Any) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(v, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Batch]:
        while True:
            kind, v = self.q.get()
            if kind == "end":
                return
            if kind == "err":
                raise v
            yield v

    def close(self) -> None:
        """Stop the thread (drains the queue so it can exit)."""
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.q.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(timeout=0.05)
