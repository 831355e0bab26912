"""Layers -> arrays: the napari side of the jobs the dock widgets run.

Widgets build requests and show results; the work runs in the engine (no napari there):
:mod:`napari_histo.engine.live` (segmentation, previews),
:mod:`napari_histo.engine.evaluation_jobs` (metrics of two arrays, folders of slides) and
:func:`napari_histo.engine.corrections.region_samples` (training samples). This module holds
the few steps that must touch napari layers: a layer's level-0 data and its placement
(``scale``/``translate`` of pixel centres), an RGB crop of an image layer, and image +
Labels layer pairs turned into training samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_histo.plugin import _result_layers as rl

__all__ = ["layer_level0", "layer_pair_samples", "layer_pair_source", "layer_placement",
           "rgb_crop"]

Box = tuple[int, int, int, int]


def layer_level0(layer: Any) -> Any:
    """A layer's full-resolution data (level 0 of a multiscale layer), lazy as it is."""
    return layer.data[0] if layer.multiscale else layer.data


def layer_placement(layer: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scale, translate)`` of a layer's last two (y, x) axes."""
    return (tuple(float(v) for v in layer.scale[-2:]),  # type: ignore[return-value]
            tuple(float(v) for v in layer.translate[-2:]))


def rgb_crop(layer: Any, box: Box) -> np.ndarray:
    """The ``box`` (level-0 px) of an image layer as contiguous (H, W, 3) uint8."""
    from napari_histo.engine.corrections import rgb_uint8

    y0, x0, y1, x1 = box
    return rgb_uint8(layer_level0(layer)[y0:y1, x0:x1])


def layer_pair_samples(image_layer: Any, labels_layer: Any, *,
                       boxes: list[Box] | None = None,
                       split_single: bool = True) -> list[Any]:
    """``ArraySample`` s from an image layer and a Labels layer drawn over it.

    Each box (level-0 px of the image; default: the whole image) becomes one sample whose
    labels are resampled onto the image pixels through both layers' world placement, so a
    ground truth or a correction painted at another resolution still lines up. Mask values
    0/255 become classes 0/1. A single box is split into two halves (two groups) so the
    run gets a validation curve. (The array work: :func:`~napari_histo.engine.corrections.
    region_samples`.)
    """
    from napari_histo.engine.corrections import region_samples

    if not boxes:
        shape0 = rl.level0_shape(image_layer)
        boxes = [(0, 0, shape0[0], shape0[1])]
    return region_samples(layer_level0(image_layer), layer_placement(image_layer),
                          layer_level0(labels_layer), layer_placement(labels_layer), boxes,
                          name=image_layer.name, labels_name=labels_layer.name,
                          split_single=split_single)


def layer_pair_source(image_layer: Any, labels_layer: Any,
                      boxes: list[Box] | None = None) -> dict[str, Any]:
    """Where the samples of :func:`layer_pair_samples` came from, for the run card: the two
    layers' names, world placement (``scale``/``translate`` of y, x), the image's file (if any)
    and the boxes (level-0 px of the image; None = the whole image)."""
    def place(layer: Any) -> dict[str, Any]:
        scale, translate = layer_placement(layer)
        return {"name": str(layer.name), "scale": list(scale), "translate": list(translate)}

    return {"image_layer": place(image_layer), "labels_layer": place(labels_layer),
            "image_file": rl.image_layer_source(image_layer),
            "boxes": None if not boxes else [[int(v) for v in b] for b in boxes]}
