"""The slide-format registry: the one list of what napari-histo opens and writes.

Every place that needs to know a file format reads it from here: content sniffing
(:mod:`napari_histo.io.sniff`), :func:`~napari_histo.io.slide.open_slide` (which opener
reads a file), masks, the napari reader contribution and ``napari.yaml`` (checked against
this table by ``tests/io/test_format_registry.py``), slide discovery for training and the
CLI help. A format listed here has an opener; a format whose opener needs an optional
dependency (OpenSlide) is *offered* only while that dependency imports.

Table
-----
Each :class:`SlideFormat` names its ``suffixes`` (lower case, compound ones such as
``.ome.tif`` included), the ``magic`` bytes its files start with (empty when its content
has no signature of its own), the ``container`` :func:`~napari_histo.io.sniff.sniff_format`
reports for such content, the ``opener`` that reads it (a key of :data:`OPENERS`) and its
capabilities: ``pyramidal`` (can store a multi-resolution pyramid), ``tiled`` (random
access by tiles/chunks), ``has_mpp`` (can record microns per pixel), ``whole_slide`` (the
suffix alone says "whole-slide image": the napari reader claims such a file even when it is
damaged, to report the damage clearly), ``mask`` (searched for as a sibling ground-truth
mask ``<name>_mask<suffix>``) and ``writable`` (napari-histo writes it).

Generic picture suffixes (``.tif``, ``.png``, ``.jpg``...) are not ``whole_slide``: the
napari reader takes such a file only when its content is a slide (see
:func:`napari_histo.io.sniff.looks_like_slide`), leaving plain pictures to napari.

OpenSlide
---------
Vendor formats tifffile cannot read (MIRAX ``.mrxs``, Hamamatsu ``.vms``/``.vmu``, Sakura
``.svslide``, Zeiss ``.czi``) are read through OpenSlide when the optional ``openslide``
extra (``openslide-python`` + ``openslide-bin``) is installed; without it they are not
offered and opening one says, in one line, which extra to install
(:func:`missing_extra_message`).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from napari_histo.io.slide_parts import SlideParts

__all__ = [
    "ANNOTATION_SUFFIXES",
    "FORMATS",
    "OPENERS",
    "Opener",
    "SlideFormat",
    "available_formats",
    "describe_formats",
    "format_for_path",
    "formats_for_container",
    "get_format",
    "is_available",
    "mask_suffixes",
    "missing_extra_message",
    "openslide_available",
    "plain_image_suffixes",
    "reader_patterns",
    "slide_suffixes",
    "strip_suffix",
    "writer_suffixes",
]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


@dataclass(frozen=True)
class Opener:
    """How a family of formats is opened: ``module:function`` (imported on first use).

    The function takes ``(path, *, cache, key, labels)`` and returns the :class:`~napari_histo.io.slide_parts.SlideParts` that
    :func:`napari_histo.io.slide.assemble` turns into a :class:`~napari_histo.io.slide.Slide`.
    ``requires`` is a module that must import for the opener to work and ``extra`` the
    pip extra that provides it (None: always available).
    """

    name: str
    module: str
    function: str
    requires: str | None = None
    extra: str | None = None

    def available(self) -> bool:
        """Whether this opener works in this environment (its dependency imports)."""
        return self.requires is None or _importable(self.requires)

    def load(self) -> Callable[..., SlideParts]:
        """The opener function (imports its module)."""
        fn: Callable[..., SlideParts] = getattr(importlib.import_module(self.module),
                                                self.function)
        return fn


#: opener name -> Opener
OPENERS: dict[str, Opener] = {
    "tiff": Opener("tiff", "napari_histo.io._tiff_open", "open_tiff_slide"),
    "zarr": Opener("zarr", "napari_histo.io.slide", "open_zarr_parts"),
    "plain": Opener("plain", "napari_histo.io.slide", "open_plain_parts"),
    "openslide": Opener("openslide", "napari_histo.io._openslide", "open_openslide_parts",
                        requires="openslide", extra="openslide"),
}


@dataclass(frozen=True)
class SlideFormat:
    """One file format napari-histo reads (see the module docstring for the fields)."""

    name: str
    title: str
    suffixes: tuple[str, ...]
    container: str
    opener: str
    magic: tuple[bytes, ...] = ()
    pyramidal: bool = False
    tiled: bool = False
    has_mpp: bool = False
    whole_slide: bool = False
    mask: bool = False
    writable: bool = False
    directory: bool = False
    vendor: str | None = None

    @property
    def extra(self) -> str | None:
        """The pip extra this format needs (None when the core install reads it)."""
        return OPENERS[self.opener].extra

    def available(self) -> bool:
        """Whether this format can be opened in this environment."""
        return OPENERS[self.opener].available()


class _Flags(TypedDict):
    pyramidal: bool
    tiled: bool
    has_mpp: bool
    whole_slide: bool


_WSI: _Flags = {"pyramidal": True, "tiled": True, "has_mpp": True, "whole_slide": True}

#: every format napari-histo reads; order matters only for :func:`describe_formats`
FORMATS: tuple[SlideFormat, ...] = (
    SlideFormat("svs", "Aperio SVS", (".svs",), "tiff", "tiff", _TIFF_MAGIC,
                vendor="aperio", **_WSI),
    SlideFormat("ndpi", "Hamamatsu NDPI", (".ndpi",), "tiff", "tiff", _TIFF_MAGIC,
                vendor="hamamatsu", **_WSI),
    SlideFormat("scn", "Leica SCN", (".scn",), "tiff", "tiff", _TIFF_MAGIC,
                vendor="leica", **_WSI),
    SlideFormat("bif", "Ventana BIF", (".bif",), "tiff", "tiff", _TIFF_MAGIC,
                vendor="ventana", **_WSI),
    SlideFormat("qptiff", "Akoya QPTIFF", (".qptiff",), "tiff", "tiff", _TIFF_MAGIC,
                vendor="akoya", **_WSI),
    SlideFormat("ome-tiff", "OME-TIFF", (".ome.tif", ".ome.tiff"), "tiff", "tiff",
                _TIFF_MAGIC, pyramidal=True, tiled=True, has_mpp=True, writable=True),
    SlideFormat("tiff", "pyramidal/plain TIFF (incl. CAMELYON16 .tif, Philips TIFF)",
                (".tif", ".tiff", ".btf"), "tiff", "tiff", _TIFF_MAGIC, pyramidal=True,
                tiled=True, has_mpp=True, mask=True),
    SlideFormat("ome-zarr", "OME-Zarr (NGFF 0.4/0.5 directory)", (".ome.zarr", ".zarr"),
                "zarr", "zarr", pyramidal=True, tiled=True, has_mpp=True, whole_slide=True,
                writable=True, directory=True),
    SlideFormat("png", "PNG", (".png",), "png", "plain", (b"\x89PNG\r\n\x1a\n",),
                has_mpp=True, mask=True),
    SlideFormat("jpeg", "JPEG", (".jpg", ".jpeg"), "jpeg", "plain", (b"\xff\xd8\xff",),
                has_mpp=True),
    SlideFormat("bmp", "BMP", (".bmp",), "bmp", "plain", (b"BM",)),
    SlideFormat("gif", "GIF", (".gif",), "gif", "plain", (b"GIF87a", b"GIF89a")),
    # OpenSlide-only vendor formats (the optional ``openslide`` extra)
    SlideFormat("mrxs", "MIRAX (3DHISTECH)", (".mrxs",), "mrxs", "openslide",
                vendor="mirax", **_WSI),
    SlideFormat("vms", "Hamamatsu VMS/VMU", (".vms", ".vmu"), "vms", "openslide",
                (b"[Virtual Microscope Specimen]", b"[Uncompressed Virtual Microscope "
                 b"Specimen]"), vendor="hamamatsu", **_WSI),
    SlideFormat("svslide", "Sakura SVSlide", (".svslide",), "sqlite", "openslide",
                (b"SQLite format 3\x00",), vendor="sakura", **_WSI),
    SlideFormat("czi", "Zeiss CZI", (".czi",), "czi", "openslide", (b"ZISRAWFILE",),
                vendor="zeiss", **_WSI),
)

#: annotation files the reader opens as Shapes and training reads as ground truth
#: (ASAP XML, QuPath GeoJSON; ``.json`` only when its content is GeoJSON)
ANNOTATION_SUFFIXES: tuple[str, ...] = (".xml", ".geojson", ".json")
#: annotation formats napari-histo writes (labels -> QuPath GeoJSON)
ANNOTATION_WRITER_SUFFIXES: tuple[str, ...] = (".geojson",)

_BY_NAME = {f.name: f for f in FORMATS}
#: (suffix, format), longest suffix first so ``.ome.tif`` wins over ``.tif``
_SUFFIXES = sorted(((s, f) for f in FORMATS for s in f.suffixes), key=lambda t: -len(t[0]))


def _check_table() -> None:
    seen: dict[str, str] = {}
    containers: dict[str, str] = {}
    for f in FORMATS:
        if f.opener not in OPENERS:
            raise RuntimeError(f"format {f.name}: unknown opener {f.opener!r}")
        # content is sniffed to a container, and the container picks the opener
        if containers.setdefault(f.container, f.opener) != f.opener:
            raise RuntimeError(f"format {f.name}: container {f.container!r} has two openers")
        for s in f.suffixes:
            if s != s.lower() or not s.startswith(".") or s in seen:
                raise RuntimeError(f"format {f.name}: bad or duplicate suffix {s!r}")
            seen[s] = f.name


_check_table()


@functools.cache
def _importable(module: str) -> bool:
    """Whether ``module`` imports (cached; a broken native library counts as missing)."""
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def openslide_available() -> bool:
    """Whether the optional OpenSlide fallback works here (``openslide`` imports)."""
    return OPENERS["openslide"].available()


def is_available(fmt: SlideFormat) -> bool:
    """Whether ``fmt`` can be opened in this environment."""
    return fmt.available()


def get_format(name: str) -> SlideFormat:
    """The format called ``name`` (KeyError when there is none)."""
    return _BY_NAME[name]


def available_formats() -> tuple[SlideFormat, ...]:
    """The formats that can be opened now (OpenSlide ones only with the extra)."""
    return tuple(f for f in FORMATS if f.available())


def format_for_path(path: str | os.PathLike[str]) -> SlideFormat | None:
    """The format ``path``'s name says (longest matching suffix), or None. Never raises."""
    try:
        name = Path(str(path).rstrip("/\\")).name.lower()
    except (TypeError, ValueError):
        return None
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def strip_suffix(name: str) -> str:
    """``name`` without its registered (possibly compound) suffix: ``a.ome.tif`` -> ``a``."""
    low = name.lower()
    for suffix, _fmt in _SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def formats_for_container(container: str) -> tuple[SlideFormat, ...]:
    """Formats whose content sniffs as ``container`` ("tiff", "png", "zarr"...)."""
    return tuple(f for f in FORMATS if f.container == container)


def magic_table() -> tuple[tuple[bytes, str], ...]:
    """(magic bytes, container) pairs, in registry order, without duplicates."""
    out: dict[bytes, str] = {}
    for f in FORMATS:
        for m in f.magic:
            out.setdefault(m, f.container)
    return tuple(out.items())


def slide_suffixes(*, available_only: bool = True, files_only: bool = False,
                   formats: Iterable[SlideFormat] | None = None) -> tuple[str, ...]:
    """Every registered suffix (of the formats that open now, by default)."""
    fmts = FORMATS if formats is None else tuple(formats)
    return tuple(s for f in fmts
                 if (f.available() or not available_only) and not (files_only and f.directory)
                 for s in f.suffixes)


def plain_image_suffixes() -> tuple[str, ...]:
    """Suffixes of untiled single-image formats (PNG, JPEG, BMP, GIF): decoded whole."""
    return tuple(s for f in FORMATS if f.opener == "plain" for s in f.suffixes)


def mask_suffixes() -> tuple[str, ...]:
    """Suffixes of sibling ground-truth masks (``<name>_mask<suffix>``), in search order."""
    return tuple(s for f in FORMATS if f.mask for s in f.suffixes)


def reader_patterns() -> tuple[str, ...]:
    """napari reader ``filename_patterns``: every slide and annotation suffix as ``*.x``.

    OpenSlide formats are listed too (the manifest is static); ``get_reader`` declines them
    while the extra is missing.
    """
    return tuple(f"*{s}" for s in (*slide_suffixes(available_only=False),
                                   *ANNOTATION_SUFFIXES))


def writer_suffixes() -> tuple[str, ...]:
    """Suffixes napari-histo's writers produce (napari.yaml ``filename_extensions``)."""
    return (*(s for f in FORMATS if f.writable for s in f.suffixes),
            *ANNOTATION_WRITER_SUFFIXES)


def describe_formats(*, probe: bool = True) -> str:
    """One line naming the formats napari-histo reads, for error messages and help.

    ``probe``: say which optional formats open now (imports their dependency, e.g.
    ``openslide``); ``probe=False`` imports nothing and names what each extra would add
    (CLI ``--help`` stays fast).
    """
    names = [f.title for f in FORMATS if f.extra is None or (probe and f.available())]
    by_extra: dict[str, list[str]] = {}
    for f in FORMATS:
        if f.extra is not None and not (probe and f.available()):
            by_extra.setdefault(f.extra, []).append(f.title)
    text = ", ".join(names)
    for extra, titles in by_extra.items():
        text += f"; with the '{extra}' extra also {', '.join(titles)}"
    return text


def missing_extra_message(path: str | os.PathLike[str]) -> str | None:
    """One line saying which extra opens ``path``, or None when nothing is missing."""
    fmt = format_for_path(path)
    if fmt is None or fmt.available():
        return None
    name = Path(str(path)).name
    return (f"{name}: {fmt.title} slides are read through OpenSlide, an optional extra: "
            f"pip install 'napari-histo[{fmt.extra}]'")
