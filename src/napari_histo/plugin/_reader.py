"""napari reader contribution: slides/images (with their ground truth) and annotation files.

``get_reader(path)`` is called by napari for every file the user drops: it looks at the
suffix (formats from :mod:`napari_histo.io.formats`), a few header bytes (a TIFF's first
IFDs, a picture's header) and the names beside the file, returns ``None`` for anything it
cannot handle or that is a plain picture (napari's own reader shows those; see
:func:`_kind` for the rule) and never raises.
The returned reader functions do the real work through ``napari_histo.io`` and
:mod:`napari_histo.plugin._layers`; they raise a ``HistoError`` whose message names the file
and the problem (napari shows it as a notification).

Entry points: :func:`get_reader`, :func:`read_slide_layers`, :func:`read_annotation_layers`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_histo.core.errors import HistoError, SlideOpenError
from napari_histo.io.formats import (
    ANNOTATION_SUFFIXES,
    FORMATS,
    format_for_path,
    slide_suffixes,
    strip_suffix,
)
from napari_histo.plugin._layers import (
    PIXEL,
    UM,
    LayerDataTuple,
    annotations_layer_data,
    layer_placement,
    mask_layer_data,
    slide_layer_data,
)

__all__ = [
    "ANNOTATION_SUFFIXES",
    "SLIDE_SUFFIXES",
    "get_reader",
    "read_annotation_layers",
    "read_paths",
    "read_slide_layers",
]

ReaderFunction = Callable[[Any], list[LayerDataTuple]]

#: every slide/image suffix of the format registry (OpenSlide ones included; see _kind)
SLIDE_SUFFIXES = slide_suffixes(available_only=False, files_only=True)
ZARR_SUFFIXES = tuple(s for f in FORMATS if f.directory for s in f.suffixes)
#: names of the PNG exports of a prediction store NAME.ome.zarr (engine.inference.export)
_PREDICTION_EXPORTS = ("_probability", "_labels")


def _lower_name(path: str | Path) -> str:
    return Path(str(path).rstrip("/\\")).name.lower()


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _is_annotation_file(path: Path) -> bool:
    """ASAP XML or (QuPath) GeoJSON, judged from the suffix and the first bytes."""
    name = path.name.lower()
    if not name.endswith(ANNOTATION_SUFFIXES) or not path.is_file():
        return False
    head = _head(path, 8192)
    if name.endswith(".xml"):
        return b"<ASAP_Annotations" in head or b"<Annotations" in head
    if name.endswith(".geojson"):
        return True
    # plain .json: only claim GeoJSON-looking content
    return b"Feature" in head or b'"geometry"' in head


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "zarr.json").is_file()
        or (path / ".zgroup").is_file()
        or (path / ".zattrs").is_file()
    )


def _looks_like_slide(path: Path) -> bool | None:
    """``io.sniff.looks_like_slide``: True slide, False plain picture, None cannot tell."""
    try:
        from napari_histo.io.sniff import looks_like_slide

        return looks_like_slide(path)
    except Exception:  # a sniff must never break get_reader
        return None


def _has_ground_truth(path: Path) -> bool:
    """A sibling mask (``io.masks.find_ground_truth``) or same-stem annotation file."""
    try:
        from napari_histo.io.masks import find_ground_truth

        if find_ground_truth(path) is not None:
            return True
    except Exception:
        pass
    return _sibling_annotations(path) is not None


def _is_prediction_export(path: Path) -> bool:
    """``NAME_probability.png`` / ``NAME_labels.png`` beside its store ``NAME.ome.zarr``."""
    stem = strip_suffix(path.name)
    for tag in _PREDICTION_EXPORTS:
        if stem.endswith(tag) and len(stem) > len(tag):
            base = stem[: -len(tag)]
            for store in (f"{base}.ome.zarr", f"{base}.zarr"):
                if _prediction_meta(path.with_name(store)) is not None:
                    return True
    return False


def _kind(path: str | Path) -> str | None:
    """``"slide"``, ``"annotations"`` or None (not ours) for one path.

    Acceptance rule for files (formats from :mod:`napari_histo.io.formats`):

    - a whole-slide suffix (``.svs``, ``.ndpi``, ``.scn``...): always ours, even damaged
      (the reader then reports the damage instead of napari saying "no reader found");
    - an OpenSlide-only suffix (``.mrxs``, ``.vms``...): ours only while the ``openslide``
      extra imports, never otherwise;
    - a generic picture suffix (``.tif``, ``.png``, ``.jpg``...) or an unknown one: ours when
      the content is a slide (pyramidal or tiled, vendor or OME metadata, a microscope's
      mpp, too large for one array: ``io.sniff.looks_like_slide``), when a ground-truth
      mask or annotation file sits beside it, or when it is a napari-histo prediction
      export; a damaged file with a registered suffix is ours too (clear error). Anything
      else is a plain picture, left to napari's own reader.
    """
    p = Path(str(path))
    name = _lower_name(p)
    if p.is_dir():
        if name.endswith(ZARR_SUFFIXES) or _is_zarr_dir(p):
            return "slide"
        return None
    if not p.is_file():
        return None
    if name.endswith(ANNOTATION_SUFFIXES):
        return "annotations" if _is_annotation_file(p) else None
    fmt = format_for_path(p)
    if fmt is not None and not fmt.available():
        return None  # e.g. .mrxs without the openslide extra
    if fmt is not None and fmt.whole_slide:
        return "slide"
    verdict = _looks_like_slide(p)
    if verdict:
        return "slide"
    if verdict is None:  # not a readable image: ours only when its suffix says it is one
        return "slide" if fmt is not None else None
    return "slide" if _has_ground_truth(p) or _is_prediction_export(p) else None


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """Return a reader function for ``path`` or None when napari-histo cannot read it.

    Cheap (suffix and a few header bytes) and never raises: napari calls it for every file.
    """
    try:
        if isinstance(path, (list, tuple)):
            if not path or any(_kind(p) is None for p in path):
                return None
            return read_paths
        kind = _kind(str(path))
    except Exception:
        return None
    if kind == "annotations":
        return read_annotation_layers
    if kind == "slide":
        return read_slide_layers
    return None


def read_paths(paths: str | Sequence[str]) -> list[LayerDataTuple]:
    """Read one path or several, concatenating their layers."""
    if isinstance(paths, (str, Path)):
        paths = [str(paths)]
    out: list[LayerDataTuple] = []
    for p in paths:
        if _kind(p) == "annotations":
            out.extend(read_annotation_layers(p))
        else:
            out.extend(read_slide_layers(p))
    return out


def _open_slide(path: Path) -> Any:
    """``io.open_slide`` with every failure turned into a readable SlideOpenError."""
    from napari_histo.io.slide import open_slide

    try:
        return open_slide(path)
    except HistoError:
        raise
    except MemoryError as exc:
        raise SlideOpenError(f"{path.name}: the image is too large to open ({exc})") from exc
    except Exception as exc:
        raise SlideOpenError(
            f"{path.name}: cannot be opened as a slide or image "
            f"({type(exc).__name__}: {exc}). The file may be corrupt, truncated or not an image."
        ) from exc


def read_slide_layers(path: str | Path | Sequence[str]) -> list[LayerDataTuple]:
    """Open a slide/image as a (multiscale) RGB Image layer, plus its ground truth.

    A sibling mask found by ``io.masks.find_ground_truth`` (CAMELYON ``<name>_mask.tif``,
    ``<name>_mask.png``, GlaS ``labels/<name>.png``) is added as a Labels layer stretched over
    the slide's physical extent, and a same-stem ASAP XML / GeoJSON as a Shapes layer. A bad
    mask or annotation only warns: the slide still opens.

    Raises
    ------
    SlideOpenError
        When the slide itself cannot be read (missing, empty, truncated, not an image...).
    """
    if isinstance(path, (list, tuple)):
        return read_paths(list(path))
    p = Path(str(path))
    if p.is_dir():
        ngff = _read_ngff_non_rgb(p)
        if ngff is not None:
            return ngff
    slide = _open_slide(p)
    user_mpp = _user_mpp(slide, p)
    mpp = slide.metadata.mpp or ((user_mpp, user_mpp) if user_mpp else None)
    image = slide_layer_data(slide, user_mpp=user_mpp)
    layers: list[LayerDataTuple] = [image]
    mask_layer = _ground_truth_layer(slide, p, mpp)
    if mask_layer is not None:
        layers.append(mask_layer)
    ann = _sibling_annotations(p)
    if ann is not None:
        try:
            records = _read_annotation_records(ann)
            layers.append(
                annotations_layer_data(
                    records,
                    mpp=mpp,
                    name=f"{slide.name} annotations",
                    source=ann,
                    slide_source=p,
                    simplify=_display_tolerance(),
                )
            )
        except Exception as exc:
            warnings.warn(f"{ann.name}: annotations not shown ({exc})", stacklevel=2)
    viewer = _guard_current_viewer()
    if viewer is not None:
        try:
            from napari_histo.plugin._units import before_slide_added

            before_slide_added(viewer, image[1])
        except Exception:
            pass
    return layers


def _user_mpp(slide: Any, path: Path) -> float | None:
    """The um/px the user set for a slide without one (Pixel size widget), or None."""
    if slide.metadata.mpp is not None:
        return None
    from napari_histo.core.settings import remembered_pixel_size

    try:
        return remembered_pixel_size(path)
    except Exception:  # a broken settings file must not stop the slide from opening
        return None


def _guard_current_viewer() -> Any:
    """Keep the current viewer's layers in one unit (plugin._units); returns the viewer
    (None without one)."""
    try:
        import napari

        from napari_histo.plugin._units import install_units_guard

        viewer = napari.current_viewer()
        if viewer is not None:
            install_units_guard(viewer)
        return viewer
    except Exception:
        return None


def _read_ngff_non_rgb(path: Path) -> list[LayerDataTuple] | None:
    """OME-Zarr label pyramids and heatmaps (not RGB slides) as Labels / plain Image layers.

    Returns None for an RGB uint8 store, which is opened as a slide by ``io.open_slide``.
    """
    try:
        from napari_histo.io.ome_zarr import level0_placement, open_ome_zarr
    except ImportError:
        return None
    try:
        store = open_ome_zarr(path)
        # where napari-ome-zarr puts it: level 0's scale and translation (in um when the
        # axes say so); napari derives the other levels from their shapes
        scale, translate = level0_placement(store.multiscales, store.levels[0].ndim)
    except Exception:
        return None  # not NGFF: let open_slide report what is wrong
    import dask.array as da
    import numpy as np

    from napari_histo.core.limits import check_image_size

    for i, z in enumerate(store.levels):  # a header claiming terapixels: refuse, do not plan it
        check_image_size(z.shape[-2], z.shape[-1], f"{path.name} level {i}",
                         error=SlideOpenError)
    levels = [da.from_zarr(z) for z in store.levels]
    if store.channels:
        levels = [lv.transpose(1, 2, 0) for lv in levels]
    dtype = np.dtype(levels[0].dtype)
    is_rgb8 = store.channels in (3, 4) and dtype == np.uint8
    if store.kind != "labels" and is_rgb8:
        return None
    units = (UM, UM) if store.mpp is not None else (PIXEL, PIXEL)
    prediction = _prediction_meta(path)
    name = _slide_stem(path)
    histo: dict[str, Any] = {"kind": store.kind, "source": str(path), "mpp": list(store.mpp) if store.mpp else None}
    if prediction is not None:  # a napari-histo prediction: named as the widgets name them
        name = f"{prediction.get('slide_name') or name} prediction heatmap"
        histo["prediction"] = _prediction_status(path, prediction)
        if not prediction.get("complete"):
            name += UNFINISHED
            st = histo["prediction"]
            done = (f" ({st['blocks_done']} of {st['blocks_total']} blocks written)"
                    if st.get("blocks_total") else "")
            warnings.warn(f"{path.name} is an unfinished prediction{done}: parts not yet "
                          "predicted show as 0; finish it with napari-histo predict --resume",
                          stacklevel=2)
        if prediction.get("failed_tiles"):
            warnings.warn(f"{path.name}: {prediction['failed_tiles']} slide tile(s) could not be "
                          "decoded during this prediction; their area is unreliable (see the "
                          "layer metadata's failed_boxes)", stacklevel=2)
    kwargs: dict[str, Any] = {
        "name": name,
        "multiscale": len(levels) > 1,
        "scale": scale,
        "translate": translate,
        "units": units,
        "axis_labels": ("y", "x"),
        "metadata": {"source": str(path), "path": str(path), "napari_histo": histo},
    }
    data: Any = levels if len(levels) > 1 else levels[0]
    if store.kind == "labels":
        from napari_histo.plugin._layers import GROUND_TRUTH_COLORS

        kwargs.update(opacity=0.5, colormap=dict(GROUND_TRUTH_COLORS))
        return [(data, kwargs, "labels")]
    if prediction is not None and prediction.get("prob_dtype") == "uint8":
        kwargs.update(contrast_limits=(0.0, 255.0), colormap="inferno", opacity=0.5)
    elif np.issubdtype(dtype, np.floating):
        # probabilities: fixed limits so napari never scans level 0
        kwargs.update(contrast_limits=(0.0, 1.0), colormap="inferno", opacity=0.6)
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        kwargs.update(contrast_limits=(float(info.min), float(info.max)))
    if store.channels and not is_rgb8:
        kwargs["channel_axis"] = 2
        kwargs.pop("axis_labels")
    label_layers = _ngff_label_layers(path, name, prediction is not None)
    if "prediction" in histo:  # the labels carry the store's status too
        for _, lkw, _ in label_layers:
            lkw.setdefault("metadata", {}).setdefault("napari_histo", {})["prediction"] = \
                histo["prediction"]
    return [(data, kwargs, "image"), *label_layers]


#: suffix of the layer names of a prediction store whose run did not finish
UNFINISHED = " (unfinished)"


def _prediction_status(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Completion and failures of a prediction store, for the layer metadata."""

    status: dict[str, Any] = {
        "complete": bool(meta.get("complete")),
        "failed_tiles": int(meta.get("failed_tiles") or 0),
        "failed_boxes": list(meta.get("failed_boxes") or []),
        "skipped_tiles": int(meta.get("skipped_tiles") or 0),
        "total_tiles": int(meta.get("total_tiles") or 0),
    }
    if not status["complete"]:
        from napari_histo.io.prediction_status import block_progress

        done, total = block_progress(path, meta)
        status["blocks_done"] = done
        if total is not None:
            status["blocks_total"] = total
    return status


def _prediction_meta(path: Path) -> dict[str, Any] | None:
    """napari-histo's metadata when ``path`` is one of its prediction stores.

    Read from the group's JSON (``.zattrs`` or ``zarr.json``) here rather than through the
    engine, which would import torch just to open a file.
    """
    from napari_histo.io.ome_zarr import ATTR, read_attrs

    meta = (read_attrs(path) or {}).get(ATTR)
    return meta if isinstance(meta, dict) and "task" in meta else None


def _ngff_label_layers(path: Path, image_name: str, prediction: bool) -> list[LayerDataTuple]:
    """The NGFF image-labels of an image store (``labels/<name>``) as Labels layers."""
    from napari_histo.io.ome_zarr import ngff_root, read_attrs

    listed = ngff_root(read_attrs(path / "labels") or {}).get("labels") or []
    if not isinstance(listed, list):
        return []
    out: list[LayerDataTuple] = []
    for label in listed:
        layers = _read_ngff_non_rgb(path / "labels" / str(label)) or []
        for data, kwargs, kind in layers:
            if kind != "labels":
                continue
            if prediction:
                from napari_histo.plugin._result_layers import PRED_COLORS

                # "X prediction heatmap (unfinished)" -> "X prediction labels (unfinished)"
                kwargs.update(name=image_name.replace(" heatmap", " labels"),
                              colormap=dict(PRED_COLORS), opacity=0.7)
            out.append((data, kwargs, kind))
    return out


def _ground_truth_layer(slide: Any, path: Path,
                       mpp: Any = None) -> LayerDataTuple | None:
    """Labels layer of the slide's sibling mask, or None (warning when it is unusable)."""
    try:
        from napari_histo.io.masks import find_ground_truth, mask_scale_for, open_mask
    except ImportError:
        return None
    try:
        mask_path = find_ground_truth(path)
    except Exception:
        return None
    if mask_path is None:
        return None
    mask_path = Path(mask_path)
    try:
        mask = open_mask(mask_path)
        mask_scale_for(slide, mask)  # refuses a mask whose aspect ratio is not the slide's
        scale, units = layer_placement(mpp if mpp is not None else slide.metadata.mpp)
        return mask_layer_data(
            mask,
            slide_shape=slide.shape,
            slide_scale=scale,
            slide_units=units,
            name=f"{slide.name} ground truth",
            source=mask_path,
            slide_source=path,
        )
    except Exception as exc:
        warnings.warn(f"{mask_path.name}: ground-truth mask not shown ({exc})", stacklevel=2)
        return None


def _sibling_annotations(path: Path) -> Path | None:
    """``<stem>.xml`` / ``<stem>.geojson`` next to a slide, if it is an annotation file."""
    stem = _slide_stem(path)
    for suffix in ANNOTATION_SUFFIXES:
        cand = path.with_name(stem + suffix)
        if cand.is_file() and _is_annotation_file(cand):
            return cand
    return None


def _slide_stem(path: Path) -> str:
    return strip_suffix(Path(str(path).rstrip("/\\")).name)


def _sibling_slide(path: Path) -> Path | None:
    """The slide with the annotation's stem in the same folder, if any."""
    stem = Path(path).stem
    for fmt in FORMATS:
        if not fmt.available():
            continue
        for suffix in fmt.suffixes:
            cand = path.with_name(stem + suffix)
            if cand.exists():
                return cand
    return None


def _display_tolerance() -> float:
    """Polygon simplification (level-0 px) for display: none with a compiled triangulator.

    Without bermuda/PartSegCore napari triangulates in pure Python (about a minute for
    CAMELYON16 tumor_064's 25k vertices); 4 px (~1 um at 40x) keeps it to seconds and is
    invisible at any zoom where a whole lesion is on screen.
    """
    import importlib.util

    for mod in ("bermuda", "PartSegCore_compiled_backend"):
        if importlib.util.find_spec(mod) is not None:
            return 0.0
    return 4.0


def _read_annotation_records(path: Path) -> Any:
    from napari_histo.io.annotations import read_annotations

    return read_annotations(path)


def read_annotation_layers(path: str | Path | Sequence[str]) -> list[LayerDataTuple]:
    """Open ASAP XML / QuPath GeoJSON annotations as a Shapes layer.

    Polygons are in um when a slide with the same stem sits next to the file (its mpp is
    used), in level-0 pixels otherwise.

    Raises
    ------
    HistoError
        When the file is not valid ASAP XML / GeoJSON (the message says what is wrong).
    """
    if isinstance(path, (list, tuple)):
        return read_paths(list(path))
    p = Path(str(path))
    try:
        records = _read_annotation_records(p)
    except HistoError:
        raise
    except Exception as exc:
        raise SlideOpenError(
            f"{p.name}: cannot be read as ASAP XML or GeoJSON annotations "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    mpp = None
    slide_path = _sibling_slide(p)
    if slide_path is not None:
        try:
            with _open_slide(slide_path) as slide:
                mpp = slide.metadata.mpp
                if mpp is None and (user := _user_mpp(slide, slide_path)):
                    mpp = (user, user)
        except Exception:
            slide_path = None
    viewer = _guard_current_viewer()
    if slide_path is None and viewer is not None:
        # no slide beside it: level-0 pixels of the slide the viewer shows in microns
        try:
            from napari_histo.plugin._units import slide_in_um

            ref = slide_in_um(viewer)
            if ref is not None:
                mpp = tuple(float(v) for v in ref.scale[-2:])
                src = (ref.metadata.get("napari_histo") or {}).get("source")
                slide_path = Path(src) if src else None
        except Exception:
            mpp = None
    return [
        annotations_layer_data(
            records,
            mpp=mpp,
            name=f"{p.stem} annotations",
            source=p,
            slide_source=slide_path,
            simplify=_display_tolerance(),
        )
    ]


read_slide = read_slide_layers  # name of the first minimal version, kept for callers
