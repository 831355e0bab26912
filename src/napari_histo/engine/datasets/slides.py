"""Patches sampled from whole slides with a mask or annotations (CAMELYON style).

A patch is a slide path plus a level-0 centre and a label: the model sees ``context_size``
pixels at the training mpp centred there, and the label comes from the ``center_size``
region at its centre (CAMELYON: tumor if any tumor in the centre 128 px, 299 px context;
PCam: centre 32 of 96 px). Candidates lie on a grid restricted to tissue (Otsu on a
low-resolution level + morphology, ``engine.tissue``, or any ``tissue_fn``), and classes
are balanced. The dataset holds paths and coordinates only and opens slides lazily per
process, so it pickles into DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from napari_histo.core.errors import DataError
from napari_histo.engine.datasets.images import resize_image
from napari_histo.io.formats import ANNOTATION_SUFFIXES, FORMATS, mask_suffixes, slide_suffixes

#: file suffixes of the registry's pyramidal (whole-slide capable) formats; OpenSlide-only
#: ones are kept so that opening one says which extra it needs instead of skipping it
SLIDE_SUFFIXES = slide_suffixes(
    available_only=False, files_only=True, formats=(f for f in FORMATS if f.pyramidal))


@dataclass(frozen=True)
class SlidePatch:
    """One labelled location: level-0 centre (y, x) of ``slide``."""

    slide: str
    y: int
    x: int
    label: int
    group: str


def find_slide_truth(slide: str | Path) -> tuple[str, str] | None:
    """('mask'|'annotations', path) for a slide: ``NAME_mask.*`` or ``NAME.xml``/``.geojson``
    beside it or in a sibling ``annotations``/``masks`` folder."""
    p = Path(slide)
    try:
        from napari_histo.io.masks import find_ground_truth

        m = find_ground_truth(p)
        if m is not None:
            return "mask", str(m)
    except ImportError:  # pragma: no cover - io.masks always exists in releases
        pass
    for folder in (p.parent, p.parent / "annotations", p.parent.parent / "annotations"):
        for suffix in ANNOTATION_SUFFIXES:
            cand = folder / f"{p.stem}{suffix}"
            if cand.is_file():
                return "annotations", str(cand)
    for folder in (p.parent / "masks", p.parent.parent / "masks"):
        for suffix in mask_suffixes():
            cand = folder / f"{p.stem}{suffix}"
            if cand.is_file():
                return "mask", str(cand)
    return None


def _label_raster(slide: Any, truth: tuple[str, str], downsample: float) -> npt.NDArray[np.uint8]:
    """Label map of the whole slide at ``downsample`` level-0 px per pixel."""
    h0, w0 = slide.shape
    shape = (max(1, int(np.ceil(h0 / downsample))), max(1, int(np.ceil(w0 / downsample))))
    kind, path = truth
    if kind == "annotations":
        from napari_histo.io.annotations import rasterize_annotations, read_annotations

        return rasterize_annotations(read_annotations(path, extent=(h0, w0)), shape,
                                     downsample=downsample)
    from napari_histo.io.masks import open_mask

    mask = open_mask(path)
    try:
        mh, mw = mask.shape
        sy, sx = h0 / mh, w0 / mw  # slide level-0 px per mask px
        lvl = 0
        for i, d in enumerate(mask.metadata.level_downsamples):
            if d * max(sy, sx) <= downsample * 1.01:
                lvl = i
        arr = np.asarray(mask.levels[lvl])
        ys = np.minimum(((np.arange(shape[0]) + 0.5) * downsample / (sy * mask.metadata.level_downsamples[lvl])).astype(int), arr.shape[0] - 1)
        xs = np.minimum(((np.arange(shape[1]) + 0.5) * downsample / (sx * mask.metadata.level_downsamples[lvl])).astype(int), arr.shape[1] - 1)
        return arr[ys[:, None], xs[None, :]].astype(np.uint8)
    finally:
        mask.close()


def sample_slide_patches(slide_path: str | Path, truth: tuple[str, str] | None, *, mpp: float,
                         context_size: int, center_size: int, stride: int | None = None,
                         max_per_class: int = 500, min_tissue: float = 0.5,
                         tissue_fn: Callable[[Any], Any] | None = None, balance: bool = True,
                         seed: int = 0) -> list[SlidePatch]:
    """Labelled patch centres of one slide (see module docstring for the rules).

    Raises
    ------
    DataError
        The slide has no mpp, or no tissue/labels to sample from.
    """
    from napari_histo.io.slide import open_slide

    with open_slide(slide_path) as slide:
        if slide.mpp is None:
            raise DataError(f"{Path(slide_path).name} has no microns-per-pixel: cannot sample "
                            f"patches at {mpp} um/px")
        f = mpp / float(slide.mpp[1])  # level-0 px per training px
        center0 = center_size * f
        step0 = (stride or center_size) * f
        ds = max(1.0, center0 / 8)  # label raster: 8x8 px per centre region
        labels = (_label_raster(slide, truth, ds) if truth is not None
                  else np.zeros((int(np.ceil(slide.shape[0] / ds)), int(np.ceil(slide.shape[1] / ds))), np.uint8))
        if tissue_fn is None:
            from napari_histo.engine.tissue import tissue_map

            tmap = tissue_map(slide)
        else:
            tmap = tissue_fn(slide)
        h0, w0 = slide.shape
        half = center0 / 2
        ys = np.arange(half, h0 - half + 1e-6, step0)
        xs = np.arange(half, w0 - half + 1e-6, step0)
        name = slide.name
    cand: dict[int, list[SlidePatch]] = {}
    r = 4  # half of the 8x8 label window
    for cy in ys:
        for cx in xs:
            ly, lx = int(cy / ds), int(cx / ds)
            win = labels[max(0, ly - r):ly + r, max(0, lx - r):lx + r]
            lab = int(win.max()) if win.size else 0
            if lab == 0 and tmap.fraction((cy - half, cx - half, cy + half, cx + half)) < min_tissue:
                continue
            cand.setdefault(lab, []).append(SlidePatch(str(slide_path), int(cy), int(cx), lab, name))
    if not cand:
        raise DataError(f"no tissue found in {Path(slide_path).name} to sample patches from")
    rng = np.random.default_rng(seed)
    n = min(max_per_class, min(len(v) for v in cand.values())) if balance and len(cand) > 1 else max_per_class
    out: list[SlidePatch] = []
    for lab in sorted(cand):
        items = cand[lab]
        pick = rng.choice(len(items), size=min(n, len(items)), replace=False)
        out += [items[i] for i in sorted(pick)]
    return out


class SlidePatchDataset(Dataset):
    """Lazily read ``context_size`` patches at ``mpp`` around each SlidePatch centre."""

    def __init__(self, patches: Sequence[SlidePatch], mpp: float, context_size: int,
                 patch_size: int | None = None) -> None:
        if not patches:
            raise DataError("no slide patches")
        self.patches = list(patches)
        self.mpp = float(mpp)
        self.context = int(context_size)
        self.patch_size = int(patch_size or context_size)
        self.labels = np.asarray([p.label for p in self.patches], np.int64)
        self.groups = [p.group for p in self.patches]
        self._slides: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_slides"] = {}  # open handles never travel to workers
        return d

    def _slide(self, path: str) -> Any:
        if path not in self._slides:
            from napari_histo.io.slide import open_slide

            self._slides[path] = open_slide(path)
        return self._slides[path]

    def read(self, i: int) -> npt.NDArray[np.uint8]:
        """The context patch (context, context, 3) uint8 at the training mpp."""
        p = self.patches[i]
        s = self._slide(p.slide)
        level = s.level_for_mpp(self.mpp)
        d = float(s.metadata.level_downsamples[level])
        lvl_mpp = float(s.mpp[1]) * d
        n = int(round(self.context * self.mpp / lvl_mpp))
        y0 = int(round(p.y - n * d / 2))
        x0 = int(round(p.x - n * d / 2))
        img = np.asarray(s.read_region((y0, x0), level, (n, n)))[..., :3]
        out = resize_image(np.ascontiguousarray(img), self.context / n)
        if out.shape[0] != self.context or out.shape[1] != self.context:
            out = np.asarray(out[: self.context, : self.context])
        return out

    def subset(self, indices: Sequence[int]) -> SlidePatchDataset:
        """Dataset of some patches (for splits)."""
        return SlidePatchDataset([self.patches[i] for i in indices], self.mpp, self.context,
                                 self.patch_size)

    def __len__(self) -> int:
        return len(self.patches)

    def get_batch(self, indices: Sequence[int], rng: np.random.Generator | None,
                  size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, S, S, 3) crops of the context patches and int64 labels."""
        from napari_histo.engine.datasets.classification import _fit

        size = size or self.patch_size
        imgs = np.stack([_fit(self.read(i), size, rng) for i in indices])
        return torch.from_numpy(imgs), torch.from_numpy(self.labels[list(indices)])

    def close(self) -> None:
        """Close the slides this process opened."""
        for s in self._slides.values():
            s.close()
        self._slides.clear()


# ------------------------------------------------------------------ segmentation from slides

#: pixels (at the training mpp) that slide regions for segmentation may hold in memory in all
#: (uint8 RGB + labels: 4 bytes a pixel, so about 1 GiB)
MAX_REGION_PIXELS = 2**28


class _LabelSource:
    """Label windows of one slide at any resolution, from a mask or annotations (level 0)."""

    def __init__(self, slide: Any, truth: tuple[str, str] | None) -> None:
        self.kind = truth[0] if truth else None
        self.anns: list[Any] = []
        self.mask: Any = None
        h0, w0 = slide.shape
        if truth is None:
            return
        if truth[0] == "annotations":
            from napari_histo.io.annotations import read_annotations

            self.anns = read_annotations(truth[1], extent=(h0, w0))
        else:
            from napari_histo.io.masks import open_mask

            self.mask = open_mask(truth[1])
            mh, mw = self.mask.shape
            self.sy, self.sx = h0 / mh, w0 / mw  # slide level-0 px per mask px

    def window(self, origin: tuple[float, float], size: int, ds: float) -> npt.NDArray[np.uint8]:
        """(size, size) labels whose top-left is level-0 ``origin``, ``ds`` level-0 px a pixel."""
        if self.kind == "annotations":
            from napari_histo.io.annotations import rasterize_annotations

            return rasterize_annotations(self.anns, (size, size), downsample=ds, origin=origin)
        if self.mask is None:
            return np.zeros((size, size), np.uint8)
        m = self.mask
        lvl = m.level_for_downsample(ds / max(self.sy, self.sx))
        d = float(m.metadata.level_downsamples[lvl])
        # centres of the output pixels, in mask-level pixels
        cy = (origin[0] + (np.arange(size) + 0.5) * ds) / (self.sy * d)
        cx = (origin[1] + (np.arange(size) + 0.5) * ds) / (self.sx * d)
        y0, x0 = int(np.floor(cy[0])), int(np.floor(cx[0]))
        y1, x1 = int(np.floor(cy[-1])) + 1, int(np.floor(cx[-1])) + 1
        arr = np.asarray(m.read_region((int(round(y0 * d)), int(round(x0 * d))), lvl,
                                       (y1 - y0, x1 - x0)))
        iy = np.clip(np.floor(cy).astype(int) - y0, 0, arr.shape[0] - 1)
        ix = np.clip(np.floor(cx).astype(int) - x0, 0, arr.shape[1] - 1)
        out = arr[iy[:, None], ix[None, :]]
        if out.size and int(out.max()) > 63:
            raise DataError(f"mask of {getattr(m, 'name', 'slide')} has value {int(out.max())}: "
                            "expected class indices 0..63 or a 0/255 binary mask")
        return out.astype(np.uint8)

    def close(self) -> None:
        if self.mask is not None:
            self.mask.close()


def slide_regions(slide_path: str | Path, truth: tuple[str, str] | None, *, mpp: float,
                  size: int, max_per_class: int = 64, seed: int = 0,
                  tissue_fn: Callable[[Any], Any] | None = None) -> list[Any]:
    """Labelled ``size`` x ``size`` regions at ``mpp`` of one slide, for segmentation.

    Region centres lie on a ``size`` grid inside tissue (``engine.tissue.tissue_map``); a
    region counts as tumour (its label) when any of it is labelled, and tumour/normal regions
    are balanced (at most ``max_per_class`` each). Each region is read from the pyramid level
    nearest ``mpp`` (``Slide.read_region``) and resampled; its label map is the mask sampled
    at the same pixels, or the annotations rasterised there. Returns
    :class:`~napari_histo.engine.datasets.segmentation.ArraySample` items grouped by slide.
    """
    from napari_histo.engine.datasets.segmentation import ArraySample
    from napari_histo.io.slide import open_slide

    patches = sample_slide_patches(slide_path, truth, mpp=mpp, context_size=size,
                                   center_size=size, stride=size, max_per_class=max_per_class,
                                   tissue_fn=tissue_fn, seed=seed)
    reader = SlidePatchDataset(patches, mpp, size)
    out: list[Any] = []
    with open_slide(slide_path) as slide:
        labels = _LabelSource(slide, truth)
        try:
            level = slide.level_for_mpp(mpp)
            d = float(slide.metadata.level_downsamples[level])
            assert slide.mpp is not None  # level_for_mpp refuses a slide without one
            n = int(round(size * mpp / (float(slide.mpp[1]) * d)))
            ds = n * d / size  # level-0 px per training px
            for i, p in enumerate(patches):
                img = reader.read(i)
                y0, x0 = int(round(p.y - n * d / 2)), int(round(p.x - n * d / 2))
                lab = labels.window((y0, x0), size, ds)
                out.append(ArraySample(img, lab, None, p.group, f"{p.group}@{p.y},{p.x}"))
        finally:
            labels.close()
            reader.close()
    return out
