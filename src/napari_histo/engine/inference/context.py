"""Typed contracts of a slide inference run.

- :class:`~napari_histo.io.protocols.SlideLike` (re-exported): what inference reads of a
  slide (an opened :class:`~napari_histo.io.slide.Slide` is one; so is any object with the
  same members).
- :data:`SlideInput`, :data:`ModelInput`, :data:`Region`: what the public entry points accept.
- :class:`SlideRun`: what :func:`~napari_histo.engine.inference.slide_run.prepare_slide_run`
  returns: resolution, geometry, block plan, tissue test and coordinate helpers of one run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from torch import nn

from napari_histo.engine.checkpoints import LoadedModel
from napari_histo.engine.inference._plan import Plan
from napari_histo.engine.inference._source import Resolution, SlideSource
from napari_histo.io.protocols import SlideLike

__all__ = ["ModelInput", "PointOrBox", "Region", "SlideInput", "SlideLike", "SlideRun"]

Box = tuple[int, int, int, int]
#: a point (y, x) or a box (y0, x0, y1, x1)
PointOrBox = Union[tuple[float, float], tuple[float, float, float, float]]


#: a slide file (or OME-Zarr folder), or an opened slide
SlideInput = Union[str, Path, SlideLike]
#: a checkpoint path, a loaded checkpoint or a bare ``nn.Module``
ModelInput = Union[str, Path, LoadedModel, nn.Module]
#: a box (y0, x0, y1, x1), in level-0 px or um
Region = Sequence[float]


@dataclass(frozen=True)
class SlideRun:
    """Everything one slide run needs, decided (and budgeted) before anything is allocated.

    ``res``: level and resampling read; ``origin0``: top-left of the region in level-0 px;
    ``source``: reads working-pixel boxes; ``plan``: the output blocks; ``skip``: True for a
    block core (working px) without tissue, None when every block runs; ``downsample``:
    level-0 px per output px; ``out_mpp``: output um/px or None; ``origin_um``: top-left in
    slide um (level-0 px without mpp); ``to_out``: a level-0 point (y, x) or box (y0, x0, y1,
    x1) in output px; ``tissue_fraction``: tissue share of the slide (1.0 when not
    detected); ``slide_mpp``: the slide's level-0 um/px (or the configured one) or None.
    """

    res: Resolution
    origin0: tuple[float, float]
    source: SlideSource
    plan: Plan
    skip: Callable[[Box], bool] | None
    downsample: tuple[float, float]
    out_mpp: tuple[float, float] | None
    origin_um: tuple[float, float]
    to_out: Callable[[Sequence[float]], PointOrBox]
    tissue_fraction: float
    slide_mpp: tuple[float, float] | None
