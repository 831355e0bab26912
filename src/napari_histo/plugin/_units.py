"""One unit for every layer of a viewer: napari drops the scale bar and warns "Inconsistent
units across layers" as soon as one layer is in ``pixel`` and another in ``um``.

The reader places everything it can in the slide's physical units. What it cannot place
when it reads (an annotation file with no slide beside it, in level-0 pixels) and what the
user adds (a new, empty Shapes or Points layer, created in ``pixel``) is matched when it is
inserted into a viewer that already shows a slide in microns:

* a napari-histo layer in pixels (annotations, masks, predictions read without their slide)
  is in level-0 pixels of that slide: its ``scale`` and ``translate`` are multiplied by the
  slide's um/px and its units become ``um``, so it lands on the same tissue;
* an empty Shapes/Points layer (drawn by the user) only gets the slide's units: its
  coordinates will be drawn in the viewer's world, which is in microns.

Other layers (a plain picture opened by napari's own reader) are left alone.

Entry points: :func:`install_units_guard`, :func:`match_units`, :func:`convert_world`.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = [
    "SlidePlacement",
    "before_slide_added",
    "convert_world",
    "install_units_guard",
    "is_pixel",
    "match_units",
    "slide_in_um",
    "slide_layers",
]


def _unit_names(layer: Any) -> list[str]:
    units = getattr(layer, "units", None)
    if units is None:
        return []
    return [str(u).strip().lower() for u in tuple(units)[-2:]]


def is_pixel(layer: Any) -> bool:
    """True when the layer's (y, x) units are napari's ``pixel``."""
    names = _unit_names(layer)
    return bool(names) and all(n in ("pixel", "pixels", "px") for n in names)


def _is_length(layer: Any) -> bool:
    names = _unit_names(layer)
    return bool(names) and not is_pixel(layer)


def _histo(layer: Any) -> dict[str, Any]:
    meta = getattr(layer, "metadata", None) or {}
    histo = meta.get("napari_histo") if hasattr(meta, "get") else None
    return histo if isinstance(histo, dict) else {}


def slide_layers(viewer: Any, *, exclude: Any = None) -> list[Any]:
    """Image layers read as slides (napari-histo metadata ``kind`` ``slide``)."""
    return [lyr for lyr in viewer.layers
            if lyr is not exclude and _histo(lyr).get("kind") == "slide"]


def _reference(viewer: Any, layer: Any) -> Any:
    """The slide layer in microns a pixel layer belongs to: the one its metadata names,
    else the only/first slide in microns."""
    slides = [s for s in slide_layers(viewer, exclude=layer) if _is_length(s)]
    if not slides:
        return None
    wanted = _histo(layer).get("slide_source")
    for s in slides:
        if wanted and str(_histo(s).get("source")) == str(wanted):
            return s
    name = _histo(layer).get("image_layer")
    for s in slides:
        if name and s.name == name:
            return s
    return slides[0]


def convert_world(layer: Any, factor: tuple[float, float], units: Any) -> None:
    """Multiply a layer's world placement (y, x scale and translate) by ``factor`` and set
    its units: the layer keeps covering the same tissue in the new world unit."""
    import numpy as np

    scale = np.asarray(layer.scale, dtype=float).copy()
    translate = np.asarray(layer.translate, dtype=float).copy()
    scale[-2:] *= factor
    translate[-2:] *= factor
    layer.scale = scale
    layer.translate = translate
    full = list(getattr(layer, "units", None) or ())
    if len(full) < layer.ndim:
        full = ["pixel"] * layer.ndim
    full[-2:] = [str(u) for u in tuple(units)[-2:]]
    layer.units = tuple(full)
    histo = _histo(layer)
    if histo.get("slide_scale") is not None:  # masks: writers map them back to slide pixels
        histo["slide_scale"] = [float(v) * f for v, f in zip(histo["slide_scale"][-2:], factor,
                                                              strict=False)]
    if "units" in histo:  # the reader's short names
        last = str(tuple(units)[-1]).lower()
        histo["units"] = {"micrometer": "um", "µm": "um", "pixels": "pixel"}.get(last, last)


def match_units(viewer: Any, layer: Any, ref: Any = None) -> bool:
    """Put ``layer`` (in pixels) in the units of the viewer's slide in microns.

    ``ref`` is that slide (a layer, or a :class:`SlidePlacement` of one not yet added);
    by default the slide the layer's metadata names, else the first slide in microns.
    Returns True when the layer was changed.
    """
    if not is_pixel(layer):
        return False
    ref = ref if ref is not None else _reference(viewer, layer)
    if ref is None or _bound_to_pixel_slide(viewer, layer):
        return False
    histo = _histo(layer)
    kind = type(layer).__name__.lower()
    units = tuple(ref.units)[-2:]
    if histo and histo.get("kind") != "slide":
        # napari-histo data read without its slide: level-0 pixels of the reference slide
        mpp = tuple(float(v) for v in ref.scale[-2:])
        convert_world(layer, (mpp[0], mpp[1]), units)
        histo.setdefault("slide_source", _histo(ref).get("source"))
        if histo.get("kind") == "annotations":
            histo["mpp"] = list(mpp)
        return True
    if not histo and kind in ("shapes", "points") and len(layer.data) == 0:
        convert_world(layer, (1.0, 1.0), units)  # drawn later, in the viewer's microns
        return True
    return False


class SlidePlacement:
    """The placement of a slide layer the reader is about to return (not yet in a viewer)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.scale = tuple(kwargs.get("scale") or (1.0, 1.0))
        self.units = tuple(kwargs.get("units") or ("pixel", "pixel"))
        self.metadata = kwargs.get("metadata") or {}
        self.name = str(kwargs.get("name") or "")


def slide_in_um(viewer: Any) -> Any:
    """The viewer's slide layer in microns (the selected one first), or None."""
    slides = [s for s in slide_layers(viewer) if _is_length(s)]
    active = getattr(getattr(viewer.layers, "selection", None), "active", None)
    if active is not None and active in slides:
        return active
    return slides[0] if slides else None


def before_slide_added(viewer: Any, kwargs: dict[str, Any]) -> None:
    """A slide in microns is about to be added: move the viewer's napari-histo layers in
    pixels (annotations opened first) into its microns now, before napari draws."""
    ref = SlidePlacement(kwargs)
    if not _is_length(ref):
        return
    for other in list(viewer.layers):
        if _histo(other).get("kind") != "slide":
            match_units(viewer, other, ref)


def _bound_to_pixel_slide(viewer: Any, layer: Any) -> bool:
    """True when the layer's metadata names a slide shown in pixels (it belongs there)."""
    histo = _histo(layer)
    src, name = histo.get("slide_source"), histo.get("image_layer")
    for s in slide_layers(viewer, exclude=layer):
        if not is_pixel(s):
            continue
        if (src and str(_histo(s).get("source")) == str(src)) or (name and s.name == name):
            return True
    return False


def _on_inserted(event: Any) -> None:
    layer = getattr(event, "value", None)
    viewer = _viewer_of(event)
    if layer is None or viewer is None:
        return
    try:
        match_units(viewer, layer)
    except Exception:  # never break napari's layer insertion
        pass


_VIEWERS: dict[int, weakref.ReferenceType[Any]] = {}


def _viewer_of(event: Any) -> Any:
    source = getattr(event, "source", None)
    ref = _VIEWERS.get(id(source))
    return ref() if ref is not None else None


def install_units_guard(viewer: Any) -> None:
    """Match the units of every layer later inserted into ``viewer`` (idempotent)."""
    layers = viewer.layers
    known = _VIEWERS.get(id(layers))
    if known is not None and known() is viewer:
        return
    _VIEWERS[id(layers)] = weakref.ref(viewer)
    _connect_before_napari(layers.events.inserted, _on_inserted)


def _connect_before_napari(emitter: Any, callback: Any) -> None:
    """Connect ``callback`` ahead of napari's own callbacks.

    napari keeps its core callbacks ahead of any plugin's (``position="first"`` only reaches
    the first place after them), and one of them, adding the layer to the canvas, draws at
    once: a Shapes layer the user adds in napari's default ``pixel`` units would show
    "Inconsistent units across layers" before the guard could put it in microns. Moving the
    callback to the front of the emitter's lists is the only way in; should napari's
    internals change, the guard still runs, one draw late.
    """
    emitter.connect(callback, position="first")
    try:
        lists = (emitter._callbacks, emitter._callback_refs, emitter._callback_pass_event)
        i = lists[0].index(callback)
        if all(len(lst) == len(lists[0]) for lst in lists):
            for lst in lists:
                lst.insert(0, lst.pop(i))
    except (AttributeError, ValueError):
        pass
