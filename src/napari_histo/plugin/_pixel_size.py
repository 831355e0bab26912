"""Pixel size dock widget: set the um/px of a slide whose file has none (TCGA SVS without
MPP, GlaS PNGs...).

Applying a size puts the slide layer in microns (``scale`` = um/px, units ``um``) together
with every layer of the same file (its ground truth, annotations, predictions, corrections
and the user's drawn Shapes/Points), which keep covering the same tissue. The size is
remembered per file (:func:`napari_histo.core.settings.remember_pixel_size`): the reader
applies it when the file is opened again. Widgets read the pixel size from the layer's scale
and units, so Segment, Train, Correct and the writers all use it.

Entry points: :class:`PixelSizeWidget`, :func:`apply_pixel_size`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, FloatSpinBox, Label, PushButton

from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._units import _histo, convert_world, is_pixel, slide_layers
from napari_histo.plugin._widget_base import DockWidget

if TYPE_CHECKING:
    import napari

__all__ = ["PixelSizeWidget", "apply_pixel_size", "file_mpp"]

UM = "um"
PIXEL = "pixel"


def file_mpp(layer: Any) -> bool:
    """True when the layer's pixel size comes from its file (then it is not overridden)."""
    histo = _histo(layer)
    if histo.get("kind") != "slide":
        return False
    return histo.get("mpp") is not None and histo.get("mpp_source", "file") == "file"


def _related(viewer: Any, slide: Any, source: str | None, was_pixel: bool) -> list[Any]:
    """The layers placed on ``slide``'s world: its file's masks, annotations, predictions,
    corrections, and (when it is the only slide) the user's own layers."""
    names = {slide.name}
    out: list[Any] = []
    only_slide = len(slide_layers(viewer, exclude=slide)) == 0
    for lyr in viewer.layers:
        if lyr is slide:
            continue
        h = _histo(lyr)
        if h.get("kind") == "slide":
            continue
        direct = (
            (source and str(h.get("slide_source") or "") == source)
            or (source and str(h.get("source") or "") == source)
            or h.get("image_layer") in names
            or (isinstance(h.get("prediction"), str)  # corrections name their prediction
                and h["prediction"] in {x.name for x in out} | names)
        )
        bound_elsewhere = bool(h.get("slide_source") or h.get("image_layer"))
        same_world = is_pixel(lyr) == was_pixel
        if direct or (same_world and not bound_elsewhere and only_slide):
            out.append(lyr)
    return out


def apply_pixel_size(viewer: Any, slide: Any, mpp: float | None, *,
                     remember: bool = True) -> list[Any]:
    """Place ``slide`` (and its layers) at ``mpp`` um/px, or back in pixels when None.

    Returns the layers that moved (the slide first).

    Raises
    ------
    ValueError
        When the slide's file has its own pixel size, or ``mpp`` is not positive.
    """
    import math

    if file_mpp(slide):
        raise ValueError(f"{slide.name} has a pixel size in its file; it is not overridden")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"pixel size must be a positive number of um, not {mpp}")
    old = [float(v) for v in slide.scale[-2:]]
    new = [float(mpp), float(mpp)] if mpp is not None else [1.0, 1.0]
    factor = (new[0] / old[0], new[1] / old[1])
    units = (UM, UM) if mpp is not None else (PIXEL, PIXEL)
    source = rl.image_layer_source(slide)
    moved = [slide, *_related(viewer, slide, source, is_pixel(slide))]
    for lyr in moved:
        convert_world(lyr, factor, units)
        h = _histo(lyr)
        if h.get("kind") == "annotations":
            h["mpp"] = list(new) if mpp is not None else None
    meta = slide.metadata
    histo = _histo(slide)
    value = [float(mpp), float(mpp)] if mpp is not None else None
    if isinstance(meta, dict):
        meta["mpp"] = value
    if histo is not None:
        histo["mpp"] = value
        histo["mpp_source"] = "user" if mpp is not None else None
        histo["units"] = units[0]
    if remember and source:
        from napari_histo.core.settings import remember_pixel_size

        remember_pixel_size(source, mpp)
    return moved


class PixelSizeWidget(DockWidget):
    """Set the um per pixel of a slide without one (remembered for the file)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        from napari_histo.plugin._units import install_units_guard

        install_units_guard(viewer)
        self._image_combo = ComboBox(label="slide", choices=self._image_choices)
        self._mpp_spin = FloatSpinBox(label="um per pixel", value=0.5, min=0.01, max=1000.0,
                                      step=0.001)
        self._info = Label(value="")
        self._apply_button = PushButton(text="Apply")
        self._pixels_button = PushButton(text="Back to pixels")
        self.extend([self._image_combo, self._mpp_spin, self._info, self._apply_button,
                     self._pixels_button])
        self._apply_button.changed.connect(self._on_apply)
        self._pixels_button.changed.connect(self._on_pixels)
        self._image_combo.changed.connect(self._describe)
        self._dock_ready()
        self._describe()

    def _reset(self, *args: Any) -> None:
        super()._reset(*args)
        try:
            self._describe()
        except (RuntimeError, AttributeError):
            pass

    def _describe(self, *_: Any) -> None:
        layer = self._image_combo.value
        if layer is None:
            self._info.value = "open a slide"
            return
        fixed = file_mpp(layer)
        self._apply_button.enabled = not fixed
        self._pixels_button.enabled = not fixed and not is_pixel(layer)
        if is_pixel(layer):
            self._info.value = "no pixel size: shown in pixels"
        else:
            um = float(layer.scale[-1])
            self._info.value = (f"{um:.4g} um/px from the file" if fixed
                                else f"{um:.4g} um/px (set here)")
            if not fixed:
                self._mpp_spin.value = um

    def _apply(self, mpp: float | None) -> None:
        layer = self._image_combo.value
        if layer is None:
            return
        try:
            apply_pixel_size(self._viewer, layer, mpp)
        except ValueError as exc:
            self._show_error(exc)
            return
        self._describe()

    def _on_apply(self, *_: Any) -> None:
        self._apply(float(self._mpp_spin.value))

    def _on_pixels(self, *_: Any) -> None:
        self._apply(None)
