"""Structural types of what the engine reads from a slide.

:class:`SlideLike` is satisfied by :class:`~napari_histo.io.slide.Slide` (and ``Mask``) and
by any object with the same members, e.g. a test double or another reader's adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from napari_histo.io.slide import SlideMetadata

__all__ = ["SlideLike"]


class SlideLike(Protocol):
    """The members of a slide that tissue detection and inference use (all read-only)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def metadata(self) -> SlideMetadata: ...

    @property
    def levels(self) -> Sequence[Any]:
        """Pyramid levels, largest first: (H, W, 3) array-likes (dask arrays for a Slide)."""
        ...

    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> npt.NDArray[np.uint8]: ...
