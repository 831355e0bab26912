"""Prediction -> napari layers: a probability heatmap Image and a thresholded Labels layer.

Both are placed in the *world* coordinates of the image layer they were predicted from, so
they overlay it whatever its units (microns for slides, pixels for plain images):
``scale = image.scale * downsample`` and ``translate`` centres each output pixel on the
block of level-0 pixels it covers. Every layer a widget makes is tagged
(``layer.metadata[RESULT_KEY] = {widget, source, role, name}``): a rerun of that widget on the
same source replaces its own previous layers (:func:`drop_previous_results`) but never one
the user painted, renamed (renaming = keep) or that belongs to another widget. Names are
short and readable (:func:`result_name`: ``"<slide stem> tumour"``, trimmed at the end), the
full source path is in the metadata. The heatmap's colormap is transparent below
:data:`HEATMAP_TRANSPARENT_BELOW` so tissue stays visible (:func:`heatmap_colormap`).
Entry points: :func:`add_prediction_layers`, :class:`PredictionLayers`,
:func:`placement_on`, :func:`unique_name`, :func:`tag_result`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "HEATMAP_COLORMAP",
    "RESULT_KEY",
    "drop_previous_results",
    "heatmap_colormap",
    "result_name",
    "tag_result",
    "PRED_COLORS",
    "PredictionLayers",
    "add_prediction_layers",
    "image_layer_source",
    "placement_on",
    "unique_name",
]

HEATMAP_COLORMAP = "inferno"
#: probabilities below this are fully transparent in the heatmap (alpha ramps up to 2x it)
HEATMAP_TRANSPARENT_BELOW = 0.1
#: metadata key of the tag every widget-made layer carries
RESULT_KEY = "napari_histo_result"
#: longest layer name a widget makes (napari's layer list elides longer names mid-way)
NAME_MAX = 30
#: px; dock widgets stay at most this wide so the canvas keeps most of the window
DOCK_MAX_WIDTH = 460
#: labels layers up to this many pixels show outlines (``contour``); napari recomputes the
#: outline (two grey morphology passes) over the whole array on the GUI thread at every
#: refresh, so larger, live (still filling) and multiscale layers stay filled (issue 11)
CONTOUR_MAX_PX = 1024 * 1024
# Predicted foreground in bright green so it reads against the red ground truth.
PRED_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (1.0, 0.85, 0.0, 1.0),
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.15, 0.95, 0.35, 1.0),
    2: (0.2, 0.6, 1.0, 1.0),
    3: (1.0, 0.85, 0.0, 1.0),
    4: (0.9, 0.3, 0.9, 1.0),
}


def unique_name(viewer: Any, base: str) -> str:
    """``base``, or ``base [2]``, ``base [3]``... whichever no layer of ``viewer`` uses."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    i = 2
    while f"{base} [{i}]" in names:
        i += 1
    return f"{base} [{i}]"


def _stem(path_or_name: str) -> str:
    """``"/a/CMU-1-Small-Region.svs"`` -> ``"CMU-1-Small-Region"`` (also ``.ome.tiff`` etc.)."""
    name = str(path_or_name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for ext in (".ome.zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and 1 <= len(ext) <= 5 and " " not in ext else name


def result_name(subject: str, what: str, max_len: int = NAME_MAX) -> str:
    """``"<subject stem> <what>"`` at most ``max_len`` characters, the stem cut at its end.

    ``what`` (``"tumour"``, ``"tumour map"``) is always kept whole so layers stay told apart;
    a cut stem ends in ``"…"``. ``subject`` may be a layer name or a file path.
    """
    stem = _stem(subject)
    what = what.strip()
    room = max_len - len(what) - 1
    if room < 4:
        return what[:max_len]
    if len(stem) > room:
        stem = stem[: room - 1].rstrip(" -_.") + "…"
    return f"{stem} {what}"


def tag_result(layer: Any, widget: str, source: str | None, role: str) -> Any:
    """Mark ``layer`` as ``widget``'s result for ``source`` (see :func:`drop_previous_results`).

    A user's paint stroke (Labels ``paint`` event) marks it edited, so it is kept.
    """
    layer.metadata[RESULT_KEY] = {"widget": widget, "source": source, "role": role,
                                  "name": layer.name, "edited": False}
    paint = getattr(getattr(layer, "events", None), "paint", None)
    if paint is not None:
        def _edited(*_: Any, layer: Any = layer) -> None:
            tag = layer.metadata.get(RESULT_KEY)
            if isinstance(tag, dict):
                tag["edited"] = True

        paint.connect(_edited)
    return layer


def is_kept(layer: Any) -> bool:
    """True for a tagged layer the user painted on or renamed (= asked to keep)."""
    tag = layer.metadata.get(RESULT_KEY) or {}
    return bool(tag.get("edited")) or layer.name != tag.get("name")


def drop_previous_results(viewer: Any, widget: str, source: str | None,
                          roles: Sequence[str] | None = None) -> list[str]:
    """Remove ``widget``'s earlier result layers for ``source``; returns the removed names.

    Layers the user edited or renamed, other widgets' layers and untagged layers stay.
    """
    gone = []
    for layer in list(viewer.layers):
        tag = layer.metadata.get(RESULT_KEY)
        if not isinstance(tag, dict) or tag.get("widget") != widget:
            continue
        if tag.get("source") != source or (roles is not None and tag.get("role") not in roles):
            continue
        if is_kept(layer):
            continue
        viewer.layers.remove(layer)
        gone.append(layer.name)
    return gone


def heatmap_colormap() -> Any:
    """Inferno with alpha 0 below :data:`HEATMAP_TRANSPARENT_BELOW`, ramping to 1 at twice it.

    Probability 0 (most of a slide) then draws nothing, so the tissue stays visible.
    """
    from napari.utils.colormaps import Colormap, ensure_colormap

    base = ensure_colormap(HEATMAP_COLORMAP)
    x = np.linspace(0.0, 1.0, 256)
    colors = np.asarray(base.map(x), dtype=np.float32).copy()
    lo = HEATMAP_TRANSPARENT_BELOW
    colors[:, 3] = np.clip((x - lo) / lo, 0.0, 1.0)
    return Colormap(colors=colors, controls=x, name="napari-histo heatmap")


def subject_of(image_layer: Any) -> str:
    """What a result is named after: the slide file if known, else the image layer's name."""
    return image_layer_source(image_layer) or str(image_layer.name)


def placement_on(
    image_layer: Any,
    *,
    downsample: Sequence[float] = (1.0, 1.0),
    offset_px: Sequence[float] = (0.0, 0.0),
) -> tuple[tuple[float, float], tuple[float, float]]:
    """World ``(scale, translate)`` of an array whose pixel (0, 0) starts at level-0 pixel
    ``offset_px`` of ``image_layer`` and whose pixels cover ``downsample`` level-0 pixels.

    napari centres pixel ``i`` at ``t + i * s``; an output pixel covering level-0 pixels
    ``[o + i*d, o + (i+1)*d)`` is centred at level-0 coordinate ``o + i*d + (d-1)/2``.
    """
    s0 = [float(v) for v in image_layer.scale[-2:]]
    t0 = [float(v) for v in image_layer.translate[-2:]]
    scale = tuple(s * float(d) for s, d in zip(s0, downsample, strict=False))
    translate = tuple(
        t + (float(o) + (float(d) - 1.0) / 2.0) * s
        for t, s, o, d in zip(t0, s0, offset_px, downsample, strict=False)
    )
    return (scale[0], scale[1]), (translate[0], translate[1])


def image_layer_source(image_layer: Any) -> str | None:
    """File path a slide layer was read from (reader metadata), or None for in-memory data."""
    meta = getattr(image_layer, "metadata", None) or {}
    for key in ("source", "path"):
        val = meta.get(key)
        if val:
            return str(val)
    histo = meta.get("napari_histo") or {}
    val = histo.get("source")
    if val:
        return str(val)
    src = getattr(getattr(image_layer, "source", None), "path", None)
    return str(src) if src else None


def _foreground(prob: Any) -> Any:
    """(H, W) foreground probability from (H, W) or (C, H, W) class probabilities."""
    if prob.ndim == 2:
        return prob
    if prob.shape[0] == 2:
        return prob[1]
    return 1.0 - prob[0]


def _threshold(fg: Any, threshold: float) -> Any:
    """Labels (uint8, 1 = foreground) from a foreground probability; lazy for dask input
    and for a store level read on demand (``at_threshold``, :class:`engine.live.StoreLevel`)."""
    at = getattr(fg, "at_threshold", None)
    if at is not None:
        return at(threshold)
    out = fg >= threshold
    if isinstance(out, np.ndarray):
        return out.astype(np.uint8)
    return out.astype(np.uint8)


class CellGrid:
    """Coarse output cells (a patch heatmap's) drawn ``up`` x ``up`` display pixels each.

    ``shape`` is the display grid cut at the slide's edge, so the last row/column of cells
    (which a stride-sized grid lets run past the slide) stops where the tissue does; with
    ``up`` > 1 the Labels outlines (``contour``) are thin lines round each group of cells.
    """

    def __init__(self, up: int, shape: tuple[int, int]) -> None:
        self.up = int(up)
        self.shape = (int(shape[0]), int(shape[1]))

    def render(self, cells: np.ndarray, y0: int = 0, x0: int = 0) -> np.ndarray:
        """Display pixels of the cells block starting at cell ``(y0, x0)``, cut to ``shape``."""
        u = self.up
        out = np.repeat(np.repeat(np.asarray(cells), u, axis=0), u, axis=1)
        return np.ascontiguousarray(out[: max(0, self.shape[0] - y0 * u),
                                        : max(0, self.shape[1] - x0 * u)])


class PredictionLayers:
    """The heatmap + labels pair of one prediction, with a live threshold.

    ``probability`` is the (H, W) foreground probability the heatmap shows (numpy filled in
    place as tiles land, or a lazy array / list of pyramid levels for a streamed slide).
    """

    def __init__(self, heatmap: Any, labels: Any, probability: Any, threshold: float) -> None:
        self.heatmap = heatmap
        self.labels = labels
        self.probability = probability
        self.threshold = float(threshold)
        #: set for coarse cells (patch heatmaps): labels drawn finer and cut at the slide edge
        self.cells: CellGrid | None = None

    def _put_labels(self, y0: int, x0: int, y1: int, x1: int) -> None:
        """Threshold the probability in a box of output pixels into the labels layer."""
        lab = _threshold(self.probability[y0:y1, x0:x1], self.threshold)
        if self.cells is None:
            self.labels.data[y0:y1, x0:x1] = lab
            return
        block = self.cells.render(lab, y0, x0)
        u = self.cells.up
        self.labels.data[y0 * u: y0 * u + block.shape[0], x0 * u: x0 * u + block.shape[1]] = block

    def _labels_full(self) -> Any:
        lab = _threshold(self.probability, self.threshold)
        return lab if self.cells is None else self.cells.render(lab)

    @property
    def multiscale(self) -> bool:
        """True when the data is a pyramid (list of levels)."""
        return isinstance(self.probability, list)

    def paste(self, box: Sequence[int], tile: np.ndarray, *, redraw: bool = True) -> None:
        """Write a finished tile (foreground probability) at ``(y0, x0, y1, x1)``.

        ``redraw=False`` only updates the arrays; call :meth:`redraw` later (coalescing many
        tiles into one texture upload keeps the GUI responsive).
        """
        y0, x0, y1, x1 = (int(v) for v in box)
        self.probability[y0:y1, x0:x1] = tile[: y1 - y0, : x1 - x0]
        self._put_labels(y0, x0, y1, x1)
        if redraw:
            self.redraw()

    def redraw(self) -> None:
        """Ask napari to re-slice both layers (after in-place changes).

        The thumbnails are left alone: they cost a pass over the whole array each, and the
        run's final redraw (:meth:`finish_live`) updates them once.
        """
        self.heatmap.refresh(thumbnail=False)
        self.labels.refresh(thumbnail=False)

    def finish_live(self) -> None:
        """A live layer pair is complete: thumbnails once, outlines if the map is small."""
        self.heatmap.refresh()
        if (self.cells is None and not self.multiscale
                and outline_ok(self.labels.data)):  # patch cells keep contour 1
            self.labels.contour = 2  # recomputes and redraws
        self.labels.refresh()

    def refresh(self, box: Sequence[int] | None = None) -> None:
        """Redraw after the probability changed (only ``box`` when given, numpy data)."""
        if self.multiscale or not isinstance(self.probability, np.ndarray):
            self.heatmap.refresh()
            self.labels.refresh()
            return
        if box is None:
            self.labels.data = self._labels_full()
        else:
            y0, x0, y1, x1 = (int(v) for v in box)
            self._put_labels(y0, x0, y1, x1)
            self.labels.refresh()
        self.heatmap.refresh()

    def set_threshold(self, threshold: float) -> None:
        """Re-threshold the labels layer (live slider)."""
        self.threshold = float(threshold)
        if self.multiscale:
            self.labels.data = [_threshold(lv, self.threshold) for lv in self.probability]
        elif isinstance(self.probability, np.ndarray):
            self.labels.data = self._labels_full()
        else:
            self.labels.data = _threshold(self.probability, self.threshold)
        self.labels.metadata.setdefault("napari_histo", {})["threshold"] = self.threshold

    def set_probability(self, probability: Any) -> None:
        """Replace the whole probability map (e.g. when a run returns)."""
        self.probability = probability
        self.heatmap.data = probability
        self.set_threshold(self.threshold)


def add_prediction_layers(
    viewer: Any,
    image_layer: Any,
    probability: Any,
    *,
    downsample: Sequence[float] = (1.0, 1.0),
    offset_px: Sequence[float] = (0.0, 0.0),
    threshold: float = 0.5,
    name: str | None = None,
    class_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    opacity: float = 0.5,
    owner: str = "segment",
    live: bool = False,
) -> PredictionLayers:
    """Add a heatmap Image and a Labels layer for ``probability`` over ``image_layer``.

    Parameters
    ----------
    probability
        (H, W) foreground or (C, H, W) class probabilities (numpy, dask/zarr), or a list of
        (H, W) pyramid levels, largest first.
    downsample, offset_px
        Output pixel size and top-left corner in the image layer's level-0 pixels.
    name
        What the layers show; default the positive class (``"<slide stem> tumour"``, the
        heatmap ``"... tumour map"``), cut to :data:`NAME_MAX`. Made unique in the viewer.
    owner
        The widget making them: its earlier unedited, unrenamed layers for the same source
        are removed first (:func:`drop_previous_results`).
    live
        The map is still being filled tile by tile (redrawn many times): no outlines, whose
        cost napari pays over the whole array at every redraw (:data:`CONTOUR_MAX_PX`).
    """
    from napari.layers import Image, Labels

    if isinstance(probability, (list, tuple)):
        prob: Any = [_foreground(lv) for lv in probability]
        labels_data: Any = [_threshold(lv, threshold) for lv in prob]
        multiscale = True
    else:
        prob = _foreground(probability)
        labels_data = _threshold(prob, threshold)
        multiscale = False
    scale, translate = placement_on(image_layer, downsample=downsample, offset_px=offset_px)
    cells = None
    if owner in CELL_OWNERS and not multiscale and isinstance(prob, np.ndarray):
        cells = cell_grid(image_layer, np.shape(prob)[-2:], downsample, offset_px)
    units = getattr(image_layer, "units", None)
    positive = None
    if class_names and len(class_names) >= 2:
        positive = str(class_names[1]) if len(class_names) == 2 else "foreground"
    subject = subject_of(image_layer)
    what = name or positive or "prediction"
    drop_previous_results(viewer, owner, subject, roles=("heatmap", "labels"))
    histo = {
        "kind": "prediction",
        "image_layer": image_layer.name,
        "downsample": [float(d) for d in downsample],
        "offset_px": [float(o) for o in offset_px],
        "threshold": float(threshold),
        "positive_class": positive,
        **(metadata or {}),
    }
    common: dict[str, Any] = {"scale": scale, "translate": translate}
    if units is not None:
        common["units"] = tuple(units)[-2:]
    heat = Image(
        prob,
        name=unique_name(viewer, result_name(subject, f"{what} map")),
        colormap=heatmap_colormap(),
        contrast_limits=(0.0, 1.0),
        opacity=opacity,
        blending="translucent",
        multiscale=multiscale,
        metadata={"napari_histo": {**histo, "role": "heatmap"}},
        **common,
    )
    lab_common = dict(common)
    if cells is not None:
        labels_data = cells.render(labels_data)
        lab_common["scale"], lab_common["translate"] = placement_on(
            image_layer, downsample=[float(d) / cells.up for d in downsample],
            offset_px=offset_px)
    labels = Labels(
        labels_data,
        name=unique_name(viewer, result_name(subject, what)),
        multiscale=multiscale,
        colormap=dict(PRED_COLORS),
        opacity=0.9,
        metadata={"napari_histo": {**histo, "role": "labels",
                                   "cell_display_px": None if cells is None else cells.up}},
        **lab_common,
    )
    if cells is not None:
        labels.contour = 1  # thin outlines round groups of cells, the tissue stays visible
    elif not live and outline_ok(labels_data):
        # outlines read best over tissue; napari recomputes them on every redraw, so large
        # (overview / streamed / still filling) maps stay filled
        labels.contour = 2
    tag_result(heat, owner, subject, "heatmap")
    tag_result(labels, owner, subject, "labels")
    viewer.add_layer(heat)
    viewer.add_layer(labels)
    out = PredictionLayers(heat, labels, prob, threshold)
    out.cells = cells
    return out


#: widgets whose output pixels are classifier cells (drawn as outlines, cut at the slide edge)
CELL_OWNERS = ("heatmap",)
#: display pixels per cell side, at most (fewer on big grids: see :func:`cell_grid`)
CELL_UP_MAX = 8


def cell_grid(image_layer: Any, cells_shape: Sequence[int], downsample: Sequence[float],
              offset_px: Sequence[float]) -> CellGrid:
    """How to draw a grid of coarse cells over ``image_layer``: fine enough for thin outlines
    (:data:`CELL_UP_MAX` px per cell, fewer so the display stays under
    :data:`CONTOUR_MAX_PX`), cut where the image (level 0) ends."""
    ch, cw = int(cells_shape[0]), int(cells_shape[1])
    up = int(np.sqrt(CONTOUR_MAX_PX / max(1, ch * cw)))
    up = int(max(1, min(CELL_UP_MAX, up, min(float(d) for d in downsample))))
    h0, w0 = level0_shape(image_layer)
    # nearest display pixel: the edge is off by at most half a display pixel (1/2up cell)
    rows = int(np.round((h0 - float(offset_px[0])) / float(downsample[0]) * up))
    cols = int(np.round((w0 - float(offset_px[1])) / float(downsample[1]) * up))
    return CellGrid(up, (max(0, min(ch * up, rows)), max(0, min(cw * up, cols))))


def outline_ok(labels_data: Any) -> bool:
    """True when napari may draw ``labels_data`` as outlines: one small in-memory array."""
    if isinstance(labels_data, (list, tuple)):
        return False
    return int(np.prod(np.shape(labels_data)[-2:])) <= CONTOUR_MAX_PX


def level0_shape(image_layer: Any) -> tuple[int, int]:
    """(height, width) of the image layer's full-resolution data."""
    data = image_layer.data
    arr = data[0] if getattr(image_layer, "multiscale", False) else data
    shape = arr.shape
    if getattr(image_layer, "rgb", False):
        return int(shape[-3]), int(shape[-2])
    return int(shape[-2]), int(shape[-1])


def _clip_box(box: Sequence[float], shape: Sequence[int]) -> tuple[int, int, int, int] | None:
    y0 = int(np.clip(np.floor(box[0]), 0, shape[0]))
    x0 = int(np.clip(np.floor(box[1]), 0, shape[1]))
    y1 = int(np.clip(np.ceil(box[2]), 0, shape[0]))
    x1 = int(np.clip(np.ceil(box[3]), 0, shape[1]))
    if y1 - y0 < 1 or x1 - x0 < 1:
        return None
    return y0, x0, y1, x1


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    cam = getattr(scene, "camera", None)
    return cam if cam is not None else viewer.camera


def visible_box(viewer: Any, image_layer: Any) -> tuple[int, int, int, int] | None:
    """The part of ``image_layer`` on screen, as a level-0 pixel box (y0, x0, y1, x1).

    From the camera centre and zoom (screen px per world unit) and the canvas size; None when
    the layer is entirely off screen.
    """
    h, w = (float(s) for s in viewer.canvas.size)
    camera = camera_of(viewer)
    center = np.asarray(camera.center, dtype=float)[-2:]
    zoom = float(camera.zoom)
    half = np.array([h, w]) / (2.0 * zoom)
    corners_world = [center - half, center + half]
    ndim = image_layer.ndim
    pts = []
    for cy in (corners_world[0][0], corners_world[1][0]):
        for cx in (corners_world[0][1], corners_world[1][1]):
            world = np.zeros(ndim)
            world[-2:] = (cy, cx)
            pts.append(np.asarray(image_layer.world_to_data(world), dtype=float)[-2:])
    pts_arr = np.asarray(pts)
    # +0.5: napari pixel i spans [i - 0.5, i + 0.5] in data coordinates
    box = (pts_arr[:, 0].min() + 0.5, pts_arr[:, 1].min() + 0.5,
           pts_arr[:, 0].max() + 0.5, pts_arr[:, 1].max() + 0.5)
    return _clip_box(box, level0_shape(image_layer))


def shapes_box(shapes_layer: Any, image_layer: Any) -> tuple[int, int, int, int] | None:
    """Bounding box (level-0 px of ``image_layer``) of the selected shapes, else all shapes."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        return None
    idx = sorted(shapes_layer.selected_data) or list(range(len(shapes_layer.data)))
    pts = []
    for i in idx:
        for v in np.asarray(shapes_layer.data[i], dtype=float):
            world = shapes_layer.data_to_world(v)
            full = np.zeros(image_layer.ndim)
            full[-2:] = np.asarray(world, dtype=float)[-2:]
            pts.append(np.asarray(image_layer.world_to_data(full), dtype=float)[-2:])
    arr = np.asarray(pts)
    box = (arr[:, 0].min() + 0.5, arr[:, 1].min() + 0.5,
           arr[:, 0].max() + 0.5, arr[:, 1].max() + 0.5)
    return _clip_box(box, level0_shape(image_layer))


def layers_of(viewer: Any, kind: str) -> list[tuple[str, Any]]:
    """(name, layer) choices of one napari layer type (``"image"``, ``"labels"``...)."""
    if viewer is None:
        return []
    return [(layer.name, layer) for layer in viewer.layers
            if type(layer).__name__.lower() == kind]
