"""Slide: one lazily read image pyramid with normalised metadata.

Entry point: :func:`open_slide`. Levels are dask arrays (Y, X, 3) uint8, largest first, so
nothing is decoded until a region is computed. This first version is a minimal tifffile/PIL
reader; the foundation issue replaces its internals, keeping this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import SlideOpenError


@dataclass(frozen=True)
class SlideMetadata:
    """Normalised metadata; ``mpp`` is level-0 microns per pixel (y, x), or None when unknown."""

    format: str
    vendor: str | None
    mpp: tuple[float, float] | None
    objective_power: float | None
    level_shapes: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    associated: tuple[str, ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def level_mpps(self) -> tuple[tuple[float, float], ...] | None:
        """Microns per pixel (y, x) of every level, or None when the slide has no mpp."""
        if self.mpp is None:
            return None
        return tuple((self.mpp[0] * d, self.mpp[1] * d) for d in self.level_downsamples)


class Slide:
    """An opened slide: ``levels`` (dask pyramid), ``metadata`` and region reads."""

    def __init__(self, path: Path, levels: list[da.Array], metadata: SlideMetadata) -> None:
        self.path = path
        self.levels = levels
        self.metadata = metadata

    @property
    def name(self) -> str:
        """File name without its (possibly double) suffix, e.g. ``tumor_064``."""
        name = self.path.name
        for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.path.stem

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.levels)

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 size (height, width) in pixels."""
        return self.metadata.level_shapes[0]

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Level-0 microns per pixel (y, x), or None."""
        return self.metadata.mpp

    def level_for_mpp(self, mpp: float) -> int:
        """Index of the finest level whose resolution is not finer than ``mpp`` (within 1%)."""
        if self.metadata.mpp is None:
            raise SlideOpenError(f"{self.path.name} has no microns-per-pixel; pass --mpp or a level")
        best = 0
        for i, d in enumerate(self.metadata.level_downsamples):
            if self.metadata.mpp[1] * d <= mpp * 1.01:
                best = i
        return best

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> npt.NDArray[np.uint8]:
        """Read ``size`` (h, w) pixels of ``level`` whose top-left is ``location`` (y, x) in
        level-0 pixels; parts outside the slide are filled with white (255)."""
        arr = self.levels[level]
        ds = self.metadata.level_downsamples[level]
        y0, x0 = int(round(location[0] / ds)), int(round(location[1] / ds))
        h, w = size
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, arr.shape[0]), min(x0 + w, arr.shape[1])
        if ye > ys and xe > xs:
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = np.asarray(arr[ys:ye, xs:xe])
        return out

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path) -> Slide:
    """Open a slide or image lazily; raises SlideOpenError with a readable message."""
    path = Path(path)
    if not path.exists():
        raise SlideOpenError(f"{path}: no such file")
    if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}:
        from PIL import Image

        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        levels = [da.from_array(rgb, chunks=(512, 512, 3))]
        meta = SlideMetadata("image", None, None, None, (rgb.shape[:2],), (1.0,))
        return Slide(path, levels, meta)
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    series = tif.series[0]
    levels = []
    for lvl in series.levels:
        store = lvl.aszarr()
        levels.append(da.from_zarr(zarr.open(store, mode="r")))
    shapes = tuple((int(a.shape[0]), int(a.shape[1])) for a in levels)
    downs = tuple(shapes[0][1] / s[1] for s in shapes)
    meta = SlideMetadata("tiff", None, None, None, shapes, downs)
    return Slide(path, levels, meta)
