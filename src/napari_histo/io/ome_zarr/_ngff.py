"""NGFF (OME-Zarr 0.4 and 0.5) metadata: the one builder and the one parser.

Pure JSON, no zarr import: sniffing a folder, ``napari-histo info`` and the napari reader
read the metadata by the same rules the writers write it.

Per-level transforms follow the spec: level ``k`` downsampled by ``f_k`` from level 0 has
``scale = s_0 * f_k`` and ``translation = t_0 + (f_k - 1) * s_0 / 2``, the centre of its first
pixel, which covers ``f_k`` level-0 pixels starting at level 0's first one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_histo.core.errors import ConfigError, DataError

__all__ = [
    "ATTR",
    "LABEL_COLORS",
    "VERSIONS",
    "axis_letters",
    "check_version",
    "dataset_scale",
    "image_label",
    "is_ngff_image",
    "level0_placement",
    "level_transforms",
    "multiscales",
    "ngff_multiscales",
    "ngff_root",
    "read_attrs",
    "relevel",
    "to_um",
    "wrap",
]

#: NGFF versions napari-histo writes: 0.4 on zarr v2 (widest reader support), 0.5 on zarr v3
VERSIONS = ("0.4", "0.5")
#: our attributes (completion flag, kind, mpp, run metadata), beside the NGFF ones
ATTR = "napari_histo"
#: napari-ome-zarr / ome-zarr-py understand these label colours (RGBA 0-255).
LABEL_COLORS = [
    [0, 0, 0, 0], [255, 0, 0, 255], [0, 170, 0, 255], [0, 0, 255, 255], [255, 170, 0, 255],
    [170, 0, 255, 255], [0, 200, 200, 255], [128, 128, 128, 255],
]  # fmt: skip
#: zarr metadata files bigger than this are not read (real ones are a few kB)
MAX_METADATA_BYTES = 16 * 1024 * 1024
#: at most this many resolution levels are read
MAX_LEVELS = 64
_UNIT_UM = {
    "micrometer": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0, "nanometer": 1e-3, "nm": 1e-3,
    "millimeter": 1e3, "mm": 1e3, "centimeter": 1e4, "cm": 1e4, "meter": 1e6, "m": 1e6,
    "angstrom": 1e-4,
}


def check_version(version: str) -> str:
    """``version`` if napari-histo writes it, else a one-line ConfigError."""
    if version not in VERSIONS:
        msg = f"NGFF version must be one of {', '.join(VERSIONS)}, got {version!r}"
        raise ConfigError(msg)
    return version


# ----------------------------------------------------------------------------- building


def level_transforms(
    scale0: Sequence[float], translation0: Sequence[float], factor: float
) -> tuple[list[float], list[float]]:
    """(scale, translation) of a level downsampled by ``factor`` from level 0 (y, x)."""
    scale = [float(s) * factor for s in scale0]
    trans = [float(t) + (factor - 1) * float(s) / 2 for s, t in zip(scale0, translation0,
                                                                     strict=True)]
    return scale, trans


def multiscales(
    n_levels: int,
    *,
    channels: bool,
    scale0: Sequence[float] = (1.0, 1.0),
    translation0: Sequence[float] = (0.0, 0.0),
    unit: str | None = None,
    name: str,
    version: str,
    kind: str | None = None,
) -> dict[str, Any]:
    """One ``multiscales`` entry: axes ``(c,) y, x``, level k halves k times (factor 2**k).

    ``unit`` None writes pixel space (no unit); ``kind`` ("labels"/"image") records how the
    levels were downsampled (nearest / mean).
    """
    check_version(version)
    extra = {"unit": unit} if unit else {}
    axes: list[dict[str, Any]] = [{"name": "c", "type": "channel"}] if channels else []
    axes += [{"name": "y", "type": "space", **extra}, {"name": "x", "type": "space", **extra}]
    datasets = []
    for k in range(n_levels):
        s, t = level_transforms(scale0, translation0, float(2**k))
        if channels:
            s, t = [1.0, *s], [0.0, *t]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": s}, {"type": "translation", "translation": t}]})
    ms: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version == "0.4":
        ms = {"version": "0.4", **ms}
    if kind is not None:
        ms["type"] = "nearest" if kind == "labels" else "mean"
        ms["metadata"] = {"method": "napari_histo.io.ome_zarr.downsample2", "kind": kind}
    return ms


def relevel(ms: dict[str, Any], n_levels: int) -> dict[str, Any]:
    """``ms`` with ``n_levels`` datasets derived from level 0's transforms (a grown pyramid)."""
    trs = ms["datasets"][0].get("coordinateTransformations") or []
    s0 = next((list(t["scale"]) for t in trs if t.get("type") == "scale"), None)
    if s0 is None:
        s0 = [1.0] * len(ms.get("axes") or [0, 0])
    t0 = next((list(t["translation"]) for t in trs if t.get("type") == "translation"),
              [0.0] * len(s0))
    datasets = []
    for k in range(n_levels):
        s, t = level_transforms(s0[-2:], t0[-2:], float(2**k))
        s, t = [*s0[:-2], *s], [*t0[:-2], *t]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": s}, {"type": "translation", "translation": t}]})
    return {**ms, "datasets": datasets}


def image_label(version: str, colors: Mapping[int, Sequence[int]] | None = None,
                source: str | None = None) -> dict[str, Any]:
    """NGFF ``image-label`` metadata: ``colors`` maps label values to RGBA (0-255)."""
    table = colors if colors is not None else dict(enumerate(LABEL_COLORS))
    out: dict[str, Any] = {"colors": [
        {"label-value": int(v), "rgba": list(c)} for v, c in table.items()]}
    if source is not None:
        out["source"] = {"image": source}
    if version == "0.4":
        out = {"version": "0.4", **out}
    return out


def wrap(meta: dict[str, Any], version: str) -> dict[str, Any]:
    """NGFF keys as group attributes: top level for 0.4, under ``"ome"`` for 0.5."""
    return {"ome": {"version": "0.5", **meta}} if check_version(version) == "0.5" else meta


# ----------------------------------------------------------------------------- parsing


def ngff_root(attrs: dict[str, Any]) -> dict[str, Any]:
    """The dict holding the NGFF keys: ``attrs["ome"]`` (0.5) or ``attrs`` (0.4)."""
    ome = attrs.get("ome")
    return ome if isinstance(ome, dict) else attrs


def ngff_multiscales(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The ``multiscales`` list of NGFF 0.5 (``attrs['ome']``) or 0.4 (top level) metadata."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return list(ome["multiscales"]), str(ome.get("version", "0.5"))
    ms = attrs.get("multiscales")
    if ms and isinstance(ms, list):
        first = ms[0] if isinstance(ms[0], dict) else {}
        return list(ms), str(first.get("version", "0.4"))
    return [], None


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A zarr group's attributes from ``.zattrs`` (v2) or ``zarr.json`` (v3); never raises.

    None when there is no readable metadata (or it is over ``MAX_METADATA_BYTES``).
    """
    p = Path(path)
    for name in ("zarr.json", ".zattrs"):
        f = p / name
        try:
            if not f.is_file() or f.stat().st_size > MAX_METADATA_BYTES:
                continue
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        if name == "zarr.json":
            doc = doc.get("attributes") or {}
            if not isinstance(doc, dict):
                return None
        return doc
    return None


def is_ngff_image(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds NGFF ``multiscales`` metadata (0.4 or 0.5); never raises."""
    attrs = read_attrs(path)
    if attrs is None:
        return False
    ome = attrs.get("ome")
    return (isinstance(ome, dict) and "multiscales" in ome) or "multiscales" in attrs


def axis_letters(ms: dict[str, Any], ndim: int) -> tuple[str, list[str | None]]:
    """(upper-case axis letters, units) of a multiscale; 0.3-style defaults from ``ndim``."""
    raw = ms.get("axes") or ["t", "c", "z", "y", "x"][-ndim:]
    names, units = [], []
    for ax in raw:
        if isinstance(ax, dict):
            names.append(str(ax.get("name", "?"))[:1].upper())
            u = ax.get("unit")
            units.append(str(u) if u else None)
        else:
            names.append(str(ax)[:1].upper())
            units.append(None)
    return "".join(names), units


def _positive(v: Any) -> float | None:
    """``v`` as a finite float > 0, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def dataset_scale(ds: dict[str, Any], ndim: int) -> list[float] | None:
    """A dataset's scale (one positive finite number per axis), else None (unknown)."""
    scale = None
    for tr in ds.get("coordinateTransformations", []) or []:
        if isinstance(tr, dict) and tr.get("type") == "scale":
            sc = [_positive(v) for v in tr.get("scale") or []]
            scale = sc if len(sc) == ndim and all(sc) else None
    return scale  # type: ignore[return-value]


def _translation(ds: dict[str, Any], ndim: int) -> list[float]:
    for tr in ds.get("coordinateTransformations", []) or []:
        if isinstance(tr, dict) and tr.get("type") == "translation":
            t = tr.get("translation") or []
            try:
                vals = [float(v) for v in t]
            except (TypeError, ValueError):
                break
            if len(vals) == ndim and all(math.isfinite(v) for v in vals):
                return vals
    return [0.0] * ndim


def to_um(unit: str | None) -> float | None:
    """Micrometres per ``unit`` (None for an unknown unit)."""
    return _UNIT_UM.get(str(unit).lower()) if unit else None


def level0_placement(
    ms: dict[str, Any], ndim: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translation) of level 0 on (y, x), in um when the unit says so.

    Only level 0 places a multiscale layer (napari and napari-ome-zarr derive the other
    levels from their shapes), so no per-level translation is read here. Without a scale the
    layer lives in pixels (1, 1); an unknown or absent unit keeps the store's numbers.
    """
    axes, units = axis_letters(ms, ndim)
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"NGFF axes {axes!r} have no y and x")
    yi, xi = axes.index("Y"), axes.index("X")
    ds = ms["datasets"][0]
    sc = dataset_scale(ds, len(axes)) or [1.0] * len(axes)
    tr = _translation(ds, len(axes))
    fy, fx = to_um(units[yi]) or 1.0, to_um(units[xi]) or 1.0
    return (sc[yi] * fy, sc[xi] * fx), (tr[yi] * fy, tr[xi] * fx)
