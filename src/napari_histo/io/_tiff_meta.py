"""Vendor metadata of TIFF-family slides normalised to format, vendor, mpp and objective power.

Sources, in order of trust: Aperio ``MPP``/``AppMag`` in the SVS ImageDescription; NDPI
``Magnification`` tag and resolution tags (centimetres); OME-XML ``PhysicalSizeX/Y`` with
their units and ``NominalMagnification``; TIFF ``X/YResolution`` with ``ResolutionUnit``
(inch or centimetre; ``NONE`` means unknown). A resolution coarser than ``MAX_MPP`` um/px at
level 0 is treated as unknown: it is a display default (72/96/300 dpi), not a microscope scan.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from napari_histo.core.limits import MPP_RANGE

__all__ = ["tiff_kind", "tiff_metadata", "MAX_MPP"]

MAX_MPP = 20.0

_UNIT_TO_UM = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "μm": 1.0,
    "nm": 1e-3, "pm": 1e-6, "Å": 1e-4, "in": 25400.0, "inch": 25400.0,
}


def tiff_kind(tif: Any) -> tuple[str, str | None]:
    """(format, vendor) of an open TiffFile."""
    if tif.is_svs:
        return "svs", "aperio"
    if tif.is_ndpi:
        return "ndpi", "hamamatsu"
    if tif.is_ome:
        return "ome-tiff", None
    if getattr(tif, "is_philips", False):
        return "philips-tiff", "philips"
    if getattr(tif, "is_scn", False):
        return "scn", "leica"
    if getattr(tif, "is_bif", False):
        return "bif", "ventana"
    return "tiff", None


def _resolution_mpp(page: Any) -> tuple[float, float] | None:
    tags = page.tags
    if 282 not in tags or 283 not in tags:
        return None
    unit = int(page.resolutionunit)
    per_unit_um = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}.get(unit)
    if per_unit_um is None:
        return None
    xres, yres = page.resolution
    if not xres or not yres or xres <= 0 or yres <= 0:
        return None
    return (per_unit_um / float(yres), per_unit_um / float(xres))


def _svs(page: Any) -> tuple[tuple[float, float] | None, float | None, dict[str, Any]]:
    from tifffile.tifffile import svs_description_metadata

    try:
        props = svs_description_metadata(page.description)
    except Exception:  # malformed description: keep going without it
        return None, None, {}
    mpp = None
    if isinstance(props.get("MPP"), (int, float)) and props["MPP"] > 0:
        mpp = (float(props["MPP"]), float(props["MPP"]))
    mag = props.get("AppMag")
    mag = float(mag) if isinstance(mag, (int, float)) and mag > 0 else None
    props = {f"aperio.{k}": v for k, v in props.items() if isinstance(v, (int, float, str))}
    return mpp, mag, props


def _ndpi(page: Any) -> tuple[tuple[float, float] | None, float | None, dict[str, Any]]:
    tags = page.ndpi_tags or {}
    mag = tags.get("Magnification")
    mag = float(mag) if isinstance(mag, (int, float)) and mag > 0 else None
    props = {f"hamamatsu.{k}": v for k, v in tags.items() if isinstance(v, (int, float, str))}
    return _resolution_mpp(page), mag, props


def _ome(xml: str) -> tuple[tuple[float, float] | None, float | None, dict[str, Any]]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None, {}
    ns = ""
    m = re.match(r"\{.*\}", root.tag)
    if m:
        ns = m.group(0)
    pixels = root.find(f"{ns}Image/{ns}Pixels")
    mpp = None
    props: dict[str, Any] = {}
    if pixels is not None:
        sizes = []
        for ax in ("Y", "X"):
            value = pixels.get(f"PhysicalSize{ax}")
            unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")
            try:
                sizes.append(float(value) * _UNIT_TO_UM[unit] if value else None)
            except (KeyError, ValueError):
                sizes.append(None)
        if sizes[0] and sizes[1] and sizes[0] > 0 and sizes[1] > 0:
            mpp = (sizes[0], sizes[1])
        props["ome.DimensionOrder"] = pixels.get("DimensionOrder")
    mag = None
    obj = root.find(f"{ns}Instrument/{ns}Objective")
    if obj is not None and obj.get("NominalMagnification"):
        try:
            mag = float(obj.get("NominalMagnification") or 0) or None
        except ValueError:
            mag = None
    image = root.find(f"{ns}Image")
    if image is not None and image.get("Name"):
        props["ome.Image.Name"] = image.get("Name")
    return mpp, mag, props


def tiff_metadata(tif: Any, page: Any) -> dict[str, Any]:
    """Normalised metadata of ``tif`` whose level 0 is ``page``.

    Returns a dict with format, vendor, mpp (y, x) or None, objective_power, properties.
    """
    fmt, vendor = tiff_kind(tif)
    mpp: tuple[float, float] | None = None
    mag: float | None = None
    props: dict[str, Any] = {}
    if fmt == "svs":
        mpp, mag, props = _svs(tif.pages.first)
    elif fmt == "ndpi":
        mpp, mag, props = _ndpi(page)
    elif fmt == "ome-tiff" and tif.ome_metadata:
        mpp, mag, props = _ome(tif.ome_metadata)
    if mpp is None:
        mpp = _resolution_mpp(page)
    if mpp is not None and not all(
        math.isfinite(v) and MPP_RANGE[0] <= v <= MAX_MPP for v in mpp
    ):  # NaN, zero, sub-10 nm or display-default resolutions are not a microscope's
        props["napari_histo.ignored_mpp"] = mpp
        mpp = None
    for code, name in ((305, "tiff.Software"), (271, "tiff.Make"), (272, "tiff.Model")):
        if code in page.tags:
            value = page.tags[code].value
            if isinstance(value, str):
                props[name] = value
    desc = page.description
    if desc and fmt == "tiff" and len(desc) < 2000:
        props["tiff.ImageDescription"] = desc
    props["tiff.Compression"] = _compression_name(page.compression)
    return {"format": fmt, "vendor": vendor, "mpp": mpp, "objective_power": mag,
            "properties": props}


def _compression_name(code: Any) -> str:
    names = {1: "none", 5: "lzw", 7: "jpeg", 6: "ojpeg", 8: "deflate", 32946: "deflate",
             33003: "jpeg2000-aperio-ycbcr", 33005: "jpeg2000-aperio-rgb", 34712: "jpeg2000",
             50000: "zstd", 34887: "lerc", 50001: "webp", 34933: "png", 34892: "jpeg-lossy"}
    try:
        return names.get(int(code), str(getattr(code, "name", code)).lower())
    except (TypeError, ValueError):
        return str(code)
