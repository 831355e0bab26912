"""Where a review region is on screen: its world box, the camera jump, its outline, thumbnail.

A :class:`~napari_histo.engine.review.Region` carries its box in prediction-store pixels
(``bbox_store``) and in slide level-0 pixels (``bbox_px``). The prediction layer places store
pixels in the world (``data_to_world``), so the world box comes from there whatever the
units (microns for slides, pixels for plain images); without a prediction layer the slide
layer places ``bbox_px`` the same way. Pixel ``i`` covers data coordinates ``[i - 0.5,
i + 0.5]`` in napari, so a box ``[y0, y1)`` spans ``y0 - 0.5 .. y1 - 0.5``.

Entry points: :func:`world_box`, :func:`jump_to`, :func:`show_outline`,
:func:`region_thumbnail`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_histo.plugin._result_layers import camera_of

__all__ = ["FILL", "OUTLINE_NAME", "THUMB_PX", "jump_to", "outline_layer", "region_thumbnail",
           "show_outline", "world_box"]

#: the region fills this share of the canvas after a jump (the rest shows its context)
FILL = 0.7
#: side of a list thumbnail, screen px
THUMB_PX = 48
#: name of the one Shapes layer outlining the current region
OUTLINE_NAME = "review region"
#: metadata kind of that layer (found by it, whatever the user renamed it to)
OUTLINE_KIND = "review_outline"

WorldBox = tuple[float, float, float, float]


def _layer_box(layer: Any, box: Sequence[int]) -> WorldBox:
    """World (y0, x0, y1, x1) of a pixel box of ``layer``'s level-0 data."""
    y0, x0, y1, x1 = (float(v) for v in box)
    pts = []
    for y, x in ((y0 - 0.5, x0 - 0.5), (y1 - 0.5, x1 - 0.5)):
        data = np.zeros(layer.ndim)
        data[-2:] = (y, x)
        pts.append(np.asarray(layer.data_to_world(data), dtype=float)[-2:])
    arr = np.asarray(pts)
    return (float(arr[:, 0].min()), float(arr[:, 1].min()),
            float(arr[:, 0].max()), float(arr[:, 1].max()))


def world_box(region: Any, prediction_layer: Any = None, slide_layer: Any = None) -> WorldBox:
    """The region's box in world coordinates.

    From the prediction layer (``bbox_store``), else the slide layer (``bbox_px``), else the
    micrometre box (``bbox_um``), else the slide pixel box as it is.
    """
    if prediction_layer is not None:
        return _layer_box(prediction_layer, region.bbox_store)
    if slide_layer is not None:
        return _layer_box(slide_layer, region.bbox_px)
    box = region.bbox_um if region.bbox_um is not None else region.bbox_px
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def jump_to(viewer: Any, box: WorldBox, fill: float = FILL) -> None:
    """Centre the camera on ``box`` and zoom so it fills ``fill`` of the canvas."""
    y0, x0, y1, x1 = box
    h, w = (float(s) for s in viewer.canvas.size)
    side_y, side_x = max(y1 - y0, 1e-9), max(x1 - x0, 1e-9)
    camera = camera_of(viewer)
    camera.center = ((y0 + y1) / 2.0, (x0 + x1) / 2.0)
    camera.zoom = float(fill) * min(h / side_y, w / side_x)


def outline_layer(viewer: Any) -> Any:
    """The review's outline Shapes layer of ``viewer``, or None."""
    for layer in viewer.layers:
        if (layer.metadata.get("napari_histo") or {}).get("kind") == OUTLINE_KIND:
            return layer
    return None


def show_outline(viewer: Any, box: WorldBox, units: Sequence[str] | None = None) -> Any:
    """Draw ``box`` as the one outline rectangle (reusing the layer), not editable.

    The layer the user was working on stays the active one, so keys and the brush keep
    going to it.
    """
    y0, x0, y1, x1 = box
    rect = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
    width = max(y1 - y0, x1 - x0) * 0.012
    layer = outline_layer(viewer)
    active = viewer.layers.selection.active
    if layer is None:
        kwargs: dict[str, Any] = {}
        if units is not None:
            kwargs["units"] = tuple(units)[-2:]
        layer = viewer.add_shapes(
            [rect], shape_type="rectangle", edge_color="yellow", face_color="transparent",
            edge_width=width, name=OUTLINE_NAME, opacity=1.0,
            metadata={"napari_histo": {"kind": OUTLINE_KIND}}, **kwargs)
    else:
        layer.data = [rect]
        layer.shape_type = "rectangle"
        layer.edge_width = width
        layer.edge_color = "yellow"
        layer.face_color = "transparent"
    layer.mode = "pan_zoom"
    layer.editable = False
    if active is not None and active is not layer and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def _level_for(layer: Any, side: float, want: int) -> int:
    """The coarsest pyramid level on which ``side`` level-0 px still span ``want`` px."""
    if not getattr(layer, "multiscale", False):
        return 0
    best = 0
    for k, f in enumerate(layer.downsample_factors):
        if side / float(f[-2]) >= want:
            best = k
    return best


def region_thumbnail(slide_layer: Any, box: WorldBox, size: int = THUMB_PX) -> np.ndarray | None:
    """(h, w, 3) uint8 picture of the slide under a world box, at most ``size`` px a side.

    Read from the coarsest pyramid level that still has ``size`` px across the box (a few
    chunks), so a thumbnail costs about the same on any slide; None when the box is off the
    slide.
    """
    from PIL import Image

    from napari_histo.engine.corrections import rgb_uint8

    pts = []
    for y, x in ((box[0], box[1]), (box[2], box[3])):
        world = np.zeros(slide_layer.ndim)
        world[-2:] = (y, x)
        pts.append(np.asarray(slide_layer.world_to_data(world), dtype=float)[-2:] + 0.5)
    (dy0, dx0), (dy1, dx1) = np.min(pts, axis=0), np.max(pts, axis=0)
    k = _level_for(slide_layer, max(dy1 - dy0, dx1 - dx0), size)
    data = slide_layer.data[k] if getattr(slide_layer, "multiscale", False) else slide_layer.data
    f = (np.asarray(slide_layer.downsample_factors[k][-2:], dtype=float)
         if getattr(slide_layer, "multiscale", False) else np.ones(2))
    shape = data.shape[:2] if getattr(slide_layer, "rgb", False) else data.shape[-2:]
    y0, x0 = (int(np.clip(np.floor(v / s), 0, n)) for v, s, n in zip((dy0, dx0), f, shape,
                                                                       strict=True))
    y1, x1 = (int(np.clip(np.ceil(v / s), 0, n)) for v, s, n in zip((dy1, dx1), f, shape,
                                                                     strict=True))
    if y1 - y0 < 1 or x1 - x0 < 1:
        return None
    step = max(1, int(max(y1 - y0, x1 - x0) // (4 * size)))  # one-level slides: skip pixels
    crop = rgb_uint8(np.asarray(data[y0:y1:step, x0:x1:step]))
    img = Image.fromarray(crop)
    img.thumbnail((size, size))
    return np.asarray(img.convert("RGB"))
