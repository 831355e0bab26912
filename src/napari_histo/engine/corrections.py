"""Corrections: painted label edits -> weighted training samples, and edits saved to disk.

The GUI lets a user repaint part of a prediction. This module (no Qt, no napari) does the
array work behind that:

* :func:`resample_nearest` moves a label/weight map between two placements (scale and
  translate of pixel centres, napari's convention) so a Labels layer painted at any
  resolution lines up with the image pixels it describes;
* :func:`to_class_labels` maps masks (0/255, 0/1, class indices) to class indices;
* :func:`region_samples` turns boxes of an image and a label map drawn over it (any
  placement) into training samples (the Train widget's image + Labels layer pairs);
* :func:`correction_samples` picks training patches around the edited pixels (more patches
  where more was edited) with per-pixel weights that favour the edits, as
  :class:`~napari_histo.engine.datasets.segmentation.ArraySample` for ``train(arrays=...)``;
* :class:`LabelEditStore` writes an edited region through to an OME-Zarr label pyramid (level 0
  and the lower levels it touches), so no edit is lost if the viewer crashes;
* :func:`finetune_job` fine-tunes on the correction samples and scores the edited window
  (:func:`window_scores`: Dice/IoU from :mod:`~napari_histo.engine.metrics`) before, after
  each epoch (``val_dice``/``val_iou`` in the ``EpochEnd`` metrics, for live curves) and at
  the end, against a ground truth when there is one, else against the corrections.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError

__all__ = [
    "FinetuneOutcome",
    "LabelEditStore",
    "finetune_job",
    "predict_window",
    "window_scores",
    "correction_samples",
    "edited_mask",
    "region_samples",
    "resample_inside",
    "resample_nearest",
    "rgb_uint8",
    "to_class_labels",
]

Box = tuple[int, int, int, int]
#: (scale, translate) of an array's pixel centres in world units (napari's convention)
Placement = tuple[Sequence[float], Sequence[float]]


def resample_nearest(
    src: Any,
    src_scale: Sequence[float],
    src_translate: Sequence[float],
    dst_shape: Sequence[int],
    dst_scale: Sequence[float],
    dst_translate: Sequence[float],
    *,
    fill: int = 0,
) -> npt.NDArray[Any]:
    """Sample ``src`` (Y, X[, C]) at the pixel centres of a ``dst_shape`` grid (nearest).

    Pixel ``i`` of an array placed with ``(scale, translate)`` is centred at world
    ``translate + i * scale``. Destination pixels falling outside ``src`` get ``fill``.
    Only the rows/columns of ``src`` that are needed are read, so ``src`` may be lazy
    (dask, zarr).
    """
    h, w = int(dst_shape[0]), int(dst_shape[1])
    ys = (float(dst_translate[0]) + np.arange(h) * float(dst_scale[0]) - float(src_translate[0]))
    xs = (float(dst_translate[1]) + np.arange(w) * float(dst_scale[1]) - float(src_translate[1]))
    iy = np.floor(ys / float(src_scale[0]) + 0.5).astype(np.int64)
    ix = np.floor(xs / float(src_scale[1]) + 0.5).astype(np.int64)
    sh, sw = int(src.shape[0]), int(src.shape[1])
    vy = (iy >= 0) & (iy < sh)
    vx = (ix >= 0) & (ix < sw)
    out = np.full((h, w) + tuple(src.shape[2:]), fill, dtype=np.dtype(src.dtype))
    if not vy.any() or not vx.any():
        return out
    y0, y1 = int(iy[vy].min()), int(iy[vy].max()) + 1
    x0, x1 = int(ix[vx].min()), int(ix[vx].max()) + 1
    block = np.asarray(src[y0:y1, x0:x1])
    sub = block[np.ix_(iy[vy] - y0, ix[vx] - x0)]
    out[np.ix_(np.nonzero(vy)[0], np.nonzero(vx)[0])] = sub
    return out


def resample_inside(
    src_shape: Sequence[int],
    src_scale: Sequence[float],
    src_translate: Sequence[float],
    dst_shape: Sequence[int],
    dst_scale: Sequence[float],
    dst_translate: Sequence[float],
) -> npt.NDArray[np.bool_]:
    """True where a ``dst_shape`` pixel centre falls on ``src`` (same rule as
    :func:`resample_nearest`; elsewhere it would get ``fill``)."""
    h, w = int(dst_shape[0]), int(dst_shape[1])
    ys = (float(dst_translate[0]) + np.arange(h) * float(dst_scale[0]) - float(src_translate[0]))
    xs = (float(dst_translate[1]) + np.arange(w) * float(dst_scale[1]) - float(src_translate[1]))
    iy = np.floor(ys / float(src_scale[0]) + 0.5)
    ix = np.floor(xs / float(src_scale[1]) + 0.5)
    vy = (iy >= 0) & (iy < int(src_shape[0]))
    vx = (ix >= 0) & (ix < int(src_shape[1]))
    return np.asarray(vy[:, None] & vx[None, :])


def to_class_labels(mask: npt.NDArray[Any], source: str = "labels layer") -> npt.NDArray[np.uint8]:
    """Class indices from a mask: 0/255 or 0/1 -> 0/1, small integers kept as classes.

    Raises
    ------
    DataError
        Values that are neither binary nor class indices.
    """
    from napari_histo.engine.datasets.images import mask_to_classes

    return mask_to_classes(np.asarray(mask), source)


def rgb_uint8(arr: Any) -> npt.NDArray[np.uint8]:
    """A contiguous (H, W, 3) uint8 copy of an image crop: gray replicated, alpha dropped."""
    img = np.asarray(arr)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _halves(box: Box) -> list[Box]:
    """``box`` cut across its longer side into two halves."""
    y0, x0, y1, x1 = box
    if y1 - y0 >= x1 - x0:
        mid = (y0 + y1) // 2
        return [(y0, x0, mid, x1), (mid, x0, y1, x1)]
    mid = (x0 + x1) // 2
    return [(y0, x0, y1, mid), (y0, mid, y1, x1)]


def region_samples(
    image: Any,
    image_place: Placement,
    labels: Any,
    labels_place: Placement,
    boxes: Sequence[Box],
    *,
    name: str,
    labels_name: str = "labels",
    split_single: bool = True,
) -> list[Any]:
    """``ArraySample`` s from boxes of ``image`` and a label map drawn over it.

    ``image`` (Y, X[, C]) and ``labels`` (Y, X) may be lazy and sit at different placements
    (``(scale, translate)``); each box (pixels of ``image``) becomes one sample whose labels
    are resampled onto the image pixels, so labels painted at another resolution still line
    up. Mask values 0/255 become classes 0/1. A single box is split into two halves (two
    groups) when ``split_single``, so the run gets a validation curve.
    """
    from napari_histo.engine.datasets.segmentation import ArraySample

    s_img = [float(v) for v in image_place[0]]
    t_img = [float(v) for v in image_place[1]]
    s_lab = [float(v) for v in labels_place[0]]
    t_lab = [float(v) for v in labels_place[1]]
    if len(boxes) == 1 and split_single:
        boxes = _halves(boxes[0])
    out = []
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        img = rgb_uint8(image[y0:y1, x0:x1])
        dst_t = (t_img[0] + y0 * s_img[0], t_img[1] + x0 * s_img[1])
        lab = resample_nearest(labels, s_lab, t_lab, img.shape[:2], s_img, dst_t)
        lab = to_class_labels(lab, f"layer {labels_name!r}")
        out.append(ArraySample(img, lab, None, f"{name}-{k}", f"{name} region {k}"))
    return out


def edited_mask(original: npt.NDArray[Any], corrected: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Pixels whose label the user changed."""
    a = np.asarray(original)
    b = np.asarray(corrected)
    if a.shape != b.shape:
        raise DataError(f"original labels {a.shape} and corrected labels {b.shape} differ in size")
    return a != b


def _crop(arr: npt.NDArray[Any], y0: int, x0: int, size: int, fill: Any) -> npt.NDArray[Any]:
    """A ``size`` x ``size`` crop starting at (y0, x0), padded with ``fill`` past the edges."""
    h, w = arr.shape[:2]
    out = np.full((size, size) + arr.shape[2:], fill, dtype=arr.dtype)
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(h, y0 + size), min(w, x0 + size)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def correction_samples(
    image: npt.NDArray[np.uint8],
    labels: npt.NDArray[Any],
    edited: npt.NDArray[np.bool_],
    *,
    patch_size: int = 128,
    max_patches: int = 32,
    edit_weight: float = 5.0,
    seed: int = 0,
    group: str = "corrections",
) -> list[Any]:
    """Training patches centred on edited pixels, weighted towards the edits.

    Patch centres are drawn from the edited pixels uniformly, so regions with more edits get
    more patches. Inside a patch every labelled pixel counts (weight 1) and edited pixels
    count ``edit_weight`` times; pixels past the image edge are unlabelled (ignored).

    Parameters
    ----------
    image
        (H, W, 3) uint8 at the working resolution.
    labels
        (H, W) class indices after the user's edits.
    edited
        (H, W) True where the user changed the label.

    Returns
    -------
    list of ArraySample
        Empty when nothing was edited.

    Raises
    ------
    DataError
        Shapes do not match.
    """
    from napari_histo.engine.datasets.segmentation import IGNORE_INDEX, ArraySample

    img = np.asarray(image)
    lab = np.asarray(labels)
    ed = np.asarray(edited, dtype=bool)
    if img.shape[:2] != lab.shape or lab.shape != ed.shape:
        raise DataError(f"image {img.shape[:2]}, labels {lab.shape} and edits {ed.shape} must "
                        "have the same height and width")
    ys, xs = np.nonzero(ed)
    if ys.size == 0:
        return []
    rng = np.random.default_rng(seed)
    n = int(min(max_patches, max(1, ys.size // max(1, (patch_size // 4) ** 2) + 1), ys.size))
    n = max(n, min(4, ys.size))
    pick = rng.choice(ys.size, size=n, replace=False)
    half = patch_size // 2
    out = []
    lab8 = lab.astype(np.uint8)
    for k, i in enumerate(pick):
        y0, x0 = int(ys[i]) - half, int(xs[i]) - half
        pi = _crop(img, y0, x0, patch_size, 0)
        pl = _crop(lab8, y0, x0, patch_size, IGNORE_INDEX)
        pe = _crop(ed, y0, x0, patch_size, False)
        w = np.where(pe, float(edit_weight), 1.0).astype(np.float32)
        w[pl == IGNORE_INDEX] = 0.0
        out.append(ArraySample(pi, pl, w, group, f"{group}-{k}"))
    return out


class LabelEditStore:
    """An OME-Zarr label pyramid that painted regions are written through to.

    Open an existing store (e.g. a prediction's labels) or create an empty one covering the
    whole slide at the working resolution; :meth:`write_region` updates level 0 and the
    lower levels that region touches, so napari (or a crash-restart) sees the edit.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    @property
    def path(self) -> Path:
        """The ``.ome.zarr`` directory."""
        return Path(self.store.path)

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (height, width)."""
        return tuple(self.store.shape)

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        shape: Sequence[int],
        *,
        mpp: Sequence[float] | None = None,
        chunks: int = 256,
        name: str = "corrections",
    ) -> LabelEditStore:
        """Open ``path`` for editing, or create an all-zero uint8 label pyramid there."""
        from napari_histo.io.ome_zarr import create_ome_zarr, open_ome_zarr

        p = Path(path)
        if p.exists():
            store = open_ome_zarr(p, mode="r+")
            if tuple(store.shape) != (int(shape[0]), int(shape[1])):
                raise DataError(f"{p} holds labels of size {store.shape}, expected "
                                f"{tuple(shape)}; choose another corrections file")
            return cls(store)
        store = create_ome_zarr(p, (int(shape[0]), int(shape[1])), "uint8", chunks=chunks,
                                mpp=None if mpp is None else tuple(mpp), kind="labels",
                                name=name)
        store.mark_complete()
        return cls(store)

    def read_region(self, box: Sequence[int]) -> npt.NDArray[np.uint8]:
        """Level-0 labels in ``(y0, x0, y1, x1)``."""
        return np.asarray(self.store.read(0, tuple(int(v) for v in box)))

    def write_region(self, y0: int, x0: int, block: npt.NDArray[Any]) -> None:
        """Write ``block`` at level-0 ``(y0, x0)`` and refresh the lower levels it covers."""
        b = np.asarray(block)
        h, w = b.shape[:2]
        self.store.write_block(int(y0), int(x0), b.astype(self.store.level0.dtype, copy=False))
        self.store.build_pyramid(region=(int(y0), int(x0), int(y0) + h, int(x0) + w), workers=1)


def window_scores(
    labels: npt.NDArray[Any],
    reference: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_] | None = None,
) -> dict[str, float]:
    """Foreground (label > 0) Dice and IoU of ``labels`` against ``reference``.

    Only pixels where ``valid`` is True count (all when None); ``pixels`` is how many did.
    Same definitions as everywhere else (:func:`~napari_histo.engine.metrics.binary_scores`).
    """
    from napari_histo.engine.metrics import binary_scores

    a = np.asarray(labels) > 0
    b = np.asarray(reference) > 0
    if a.shape != b.shape:
        raise DataError(f"labels {a.shape} and reference {b.shape} differ in size")
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        a, b = a[v], b[v]
    tp = int(np.count_nonzero(a & b))
    fp = int(np.count_nonzero(a & ~b))
    fn = int(np.count_nonzero(~a & b))
    tn = int(a.size) - tp - fp - fn
    sc = binary_scores(tp, fp, fn, tn)
    return {"dice": sc["dice"], "iou": sc["iou"], "pixels": float(a.size)}


def _drain(gen: Generator[Any, None, Any]) -> Any:
    """Run a task generator to its end, dropping its events; return its value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def predict_window(checkpoint: str | Path, image: npt.NDArray[np.uint8],
                   threshold: float = 0.5) -> npt.NDArray[np.uint8]:
    """Labels (0/1 uint8) a checkpoint predicts for an RGB window at its working resolution."""
    from napari_histo.engine.checkpoints import load_checkpoint
    from napari_histo.engine.inference.predict import predict_array

    model = load_checkpoint(str(checkpoint), device="cpu")
    probs = np.asarray(_drain(predict_array(rgb_uint8(image), model, device="cpu")))
    fg = probs[1] if probs.shape[0] == 2 else 1.0 - probs[0]
    return (fg >= float(threshold)).astype(np.uint8)


@dataclass
class FinetuneOutcome:
    """A fine-tuning run and the edited window's scores before and after it."""

    train: Any  #: the engine's TrainResult
    checkpoint: str  #: best (else last) checkpoint
    reference: str  #: what the window was scored against ("ground truth" or "corrections")
    before: dict[str, float]
    after: dict[str, float]
    #: per epoch: {"epoch", "dice", "iou"} on the window
    epochs: list[dict[str, float]] = field(default_factory=list)


def finetune_job(
    cfg: Any,
    arrays: list[Any],
    image: npt.NDArray[np.uint8],
    before: npt.NDArray[Any],
    reference: npt.NDArray[Any],
    *,
    reference_name: str,
    valid: npt.NDArray[np.bool_] | None = None,
    threshold: float = 0.5,
    card_origin: str | None = None,
) -> Generator[Any, None, FinetuneOutcome]:
    """Fine-tune (``train(cfg, arrays=arrays)``) and score the window before/during/after.

    ``image`` is the window (RGB, working resolution), ``before`` the labels the model gave
    it, ``reference`` what they are scored against (``reference_name`` says which).
    Training's events pass through; each ``EpochEnd`` with a checkpoint gets the window's
    ``val_dice``/``val_iou`` under that epoch's weights added to its metrics. With
    ``card_origin`` a run card (config, saved samples, the CLI command) is written first, so
    the fine-tuning can be replayed headless.
    """
    from napari_histo.core.progress import EpochEnd, Message
    from napari_histo.engine.training import train

    if card_origin is not None:
        from napari_histo.engine.run_card import write_train_card

        card = write_train_card(cfg, arrays, origin=card_origin)
        yield Message(f"run card: {card}")

    b = window_scores(before, reference, valid)
    yield Message(f"before fine-tuning: Dice {b['dice']:.3f}, IoU {b['iou']:.3f} "
                  f"against the {reference_name}")
    epochs: list[dict[str, float]] = []
    gen = train(cfg, arrays=arrays)
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if isinstance(ev, EpochEnd) and ev.checkpoint:
                sc = window_scores(predict_window(ev.checkpoint, image, threshold), reference,
                                   valid)
                epochs.append({"epoch": float(ev.epoch), "dice": sc["dice"], "iou": sc["iou"]})
                ev = EpochEnd(ev.epoch, {**ev.metrics, "val_dice": sc["dice"],
                                         "val_iou": sc["iou"]}, ev.checkpoint)
            yield ev
    finally:
        gen.close()
    ckpt = str(result.best_checkpoint or result.last_checkpoint)
    after = window_scores(predict_window(ckpt, image, threshold), reference, valid)
    return FinetuneOutcome(result, ckpt, reference_name, b, after, epochs)
