"""The slide behind a prediction store, read and re-predicted on the store's pixel grid.

A store records where it lies on its slide (``origin_px``, ``downsample``) and how it was
read (``fingerprint``: pyramid level and level-0 px per store px), so any store box can be
read again as RGB at exactly the store's resolution, and re-predicted in place (TTA
disagreement, fine-tuned refinements).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import DataError

__all__ = ["StoreImageReader", "predict_box", "store_image_reader"]

Box = tuple[int, int, int, int]


class StoreImageReader:
    """``reader(bbox_store) -> (h, w, 3) uint8`` from the store's slide; :meth:`close` it."""

    def __init__(self, meta: dict[str, Any]) -> None:
        from napari_histo.engine.inference._source import Resolution, SlideSource
        from napari_histo.io.slide import open_slide

        src = meta.get("source")
        if not src or not Path(str(src)).exists():
            raise DataError(f"the slide this prediction was made from ({src or 'unknown'}) is "
                            "not there any more; the review needs it to read the images")
        fp = meta.get("fingerprint") or {}
        if fp.get("level") is None or not fp.get("factor"):
            raise DataError("the prediction store does not record how its slide was read "
                            "(an older napari-histo); predict it again")
        self.slide = open_slide(str(src))
        level = int(fp["level"])
        factor = (float(fp["factor"][0]), float(fp["factor"][1]))
        ds = float(self.slide.metadata.level_downsamples[level])
        mpp = meta.get("mpp")
        res = Resolution(level=level, factor=factor,
                         resample=abs(factor[0] / ds - 1.0) > 1e-6 or abs(factor[1] / ds - 1.0) > 1e-6,
                         mpp=(float(mpp[0]), float(mpp[1])) if mpp else None)
        origin = meta.get("origin_px") or (0.0, 0.0)
        self.source = SlideSource(self.slide, res, (float(origin[0]), float(origin[1])))

    def __call__(self, box: Box) -> npt.NDArray[np.uint8]:
        """RGB of a store box (mirrored beyond the slide's edges, like inference)."""
        return self.source.read(tuple(int(v) for v in box))  # type: ignore[arg-type]

    def close(self) -> None:
        """Release the slide."""
        self.slide.close()


def store_image_reader(meta: dict[str, Any]) -> StoreImageReader:
    """A reader of the store's slide at the store's resolution (see :class:`StoreImageReader`)."""
    return StoreImageReader(meta)


def predict_box(read: Callable[[Box], npt.NDArray[np.uint8]], model: Any, box: Box, *,
                pad: int = 32, tta: bool = False) -> npt.NDArray[np.float32]:
    """Class probabilities (C, h, w) of a store box, read with ``pad`` px of context each side
    (so the box's border is predicted like the inside of a whole-slide run), then cropped.
    ``model``: a LoadedModel (or checkpoint path); ``tta`` averages flips/rot90.
    """
    from napari_histo.engine.inference.predict import predict_array

    y0, x0, y1, x1 = box
    py0, px0 = y0 - pad, x0 - pad
    img = read((py0, px0, y1 + pad, x1 + pad))
    gen = predict_array(img, model, tta=tta)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            probs = stop.value
            break
    return np.asarray(probs[:, pad:pad + (y1 - y0), pad:pad + (x1 - x0)], dtype=np.float32)

