"""SlideParts: what a format opener returns and :func:`napari_histo.io.slide.assemble` consumes.

Each opener (TIFF family, OME-Zarr, plain images, OpenSlide) turns a file into native pyramid levels,
their downsamples and normalised metadata; ``assemble`` adds computed levels and builds the
:class:`~napari_histo.io.slide.Slide` (or :class:`~napari_histo.io.masks.Mask`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.io._pyramid import LevelArray

__all__ = ["SlideParts"]


@dataclass(frozen=True)
class SlideParts:
    """An opened file before assembly.

    ``levels``: native pyramid levels, largest first; ``downsamples``: level-0 px per level
    px (y, x), one per level. ``associated_reader`` reads an associated image named in
    ``associated``; ``closer`` releases the file; ``postprocess`` maps every decoded tile
    (e.g. a 0/255 mask to 0/1). The rest becomes :class:`~napari_histo.io.slide.SlideMetadata`.
    Change a field with :func:`dataclasses.replace`.
    """

    format: str
    levels: Sequence[LevelArray]
    downsamples: Sequence[tuple[float, float]]
    vendor: str | None = None
    mpp: tuple[float, float] | None = None
    objective_power: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    associated: tuple[str, ...] = ()
    associated_reader: Callable[[str], npt.NDArray[np.uint8]] | None = None
    closer: Callable[[], None] | None = None
    source_dtype: str | None = None
    source_samples: int | None = None
    compression: str | None = None
    postprocess: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None = None
