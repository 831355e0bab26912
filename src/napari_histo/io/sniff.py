"""Cheap content sniffing: what kind of file is this, judged by its bytes, not its suffix.

``sniff_format(path)`` reads at most 64 bytes (or lists a directory) and never raises; the
magic bytes come from the format registry (:mod:`napari_histo.io.formats`).
``is_supported_slide(path)`` says whether ``open_slide`` reads the content;
``looks_like_slide(path)`` whether it is a slide rather than a plain picture (the napari
reader's rule for ``.tif``/``.png``/``.jpg``; it reads a TIFF's first IFDs or an image
header, never pixels). None of them opens anything that is not a regular file or a
directory: a named pipe would block the read forever, a device could stream without end
(``os.stat`` tells them apart without opening).

A picture with more pixels than ``core.limits.MAX_PIXELS`` counts as a slide: it cannot be
decoded as one array, so napari's own reader cannot show it (napari-histo reads it lazily
or refuses it with a clear message).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from napari_histo.core.limits import MAX_PIXELS
from napari_histo.io.formats import describe_formats, formats_for_container, magic_table

__all__ = ["sniff_format", "is_supported_slide", "looks_like_slide"]

#: bytes read to sniff a file (the longest magic in the registry is 42 bytes)
HEAD_BYTES = 64


def __getattr__(name: str) -> str:
    # computed on use: it names the OpenSlide formats only while the extra imports
    if name == "SUPPORTED_DESCRIPTION":
        return describe_formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """Return the content's container (``"tiff"``, ``"png"``, ``"jpeg"``, ``"bmp"``,
    ``"gif"``, ``"zarr"``, or an OpenSlide-only kind such as ``"czi"``) or None.

    The magic bytes come from the format registry (:mod:`napari_histo.io.formats`). Never
    raises: unreadable, empty or unknown files give None, and so do named pipes, sockets and
    devices (never opened).
    """
    try:
        p = Path(path)
        mode = os.stat(p).st_mode
        if stat.S_ISDIR(mode):
            if (p / "zarr.json").is_file() or (p / ".zattrs").is_file() or (p / ".zgroup").is_file():
                return "zarr"
            return None
        if not stat.S_ISREG(mode):
            return None
        with open(p, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except (OSError, ValueError, TypeError):
        return None
    for magic, kind in magic_table():
        if head.startswith(magic):
            return kind
    return None


def is_supported_slide(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` looks like something :func:`~napari_histo.io.slide.open_slide` reads.

    Cheap (magic bytes; for a zarr directory, its metadata file) and never raises. A True
    answer does not promise the file is intact: ``open_slide`` reports that.
    """
    try:
        kind = sniff_format(path)
        if kind is None:
            return False
        if kind == "zarr":
            return _is_ngff_image(Path(path))
        return any(f.available() for f in formats_for_container(kind))
    except Exception:
        return False


def looks_like_slide(path: str | os.PathLike[str]) -> bool | None:
    """Whether a file's content is a slide rather than a plain picture.

    True for a pyramidal or tiled TIFF, a TIFF with vendor or OME metadata (Aperio, NDPI,
    OME, Leica, Ventana, Philips...), a TIFF/PNG/JPEG whose resolution tags give a
    microscope's microns per pixel (finer than 20 um/px; 72/300 dpi are display defaults),
    an image too large to decode as one array (more than ``core.limits.MAX_PIXELS``), a
    NGFF OME-Zarr image, or an OpenSlide format while that extra is installed.
    False for a readable plain picture (a PNG tile, a photo, a small strip TIFF). None when
    the content cannot be judged (not an image, damaged, unreadable). Reads only headers;
    never raises.
    """
    try:
        kind = sniff_format(path)
        if kind is None:
            return None
        p = Path(path)
        if kind == "zarr":
            return True if _is_ngff_image(p) else None
        if kind == "tiff":
            return _tiff_is_slide(p)
        if kind in ("png", "jpeg", "bmp", "gif"):
            return _picture_is_slide(p)
        return True if any(f.available() for f in formats_for_container(kind)) else None
    except Exception:
        return None


def _tiff_is_slide(p: Path) -> bool | None:
    import logging
    import warnings

    import tifffile

    from napari_histo.io._tiff_meta import MAX_MPP, _resolution_mpp

    logger = logging.getLogger("tifffile")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(p) as tif:
                flags = ("is_svs", "is_ndpi", "is_ome", "is_scn", "is_bif", "is_philips",
                         "is_qpi")
                if any(getattr(tif, f, False) for f in flags):
                    return True
                page = tif.pages[0]
                if page.is_tiled or page.subifds:
                    return True
                h, w = int(page.imagelength), int(page.imagewidth)
                if h * w > MAX_PIXELS:
                    return True
                mpp = _resolution_mpp(page)
                if mpp is not None and max(mpp) < MAX_MPP:
                    return True
                try:
                    second = tif.pages[1]
                except (IndexError, KeyError):
                    return False
                # a page pyramid: the next page is a reduced-resolution copy
                return bool(getattr(second, "is_reduced", False) or (
                    int(second.imagelength) < h and int(second.imagewidth) < w))
    except Exception:
        return None
    finally:
        logger.setLevel(old)


def _picture_is_slide(p: Path) -> bool | None:
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
                dpi = im.info.get("dpi")
    except Exception:
        return None
    if w * h > MAX_PIXELS:
        return True
    if isinstance(dpi, tuple) and len(dpi) == 2:
        try:
            mx, my = 25400.0 / float(dpi[0]), 25400.0 / float(dpi[1])
        except (TypeError, ValueError, ZeroDivisionError):
            return False
        return bool(0 < mx < 20 and 0 < my < 20)  # the PlainImage.mpp rule
    return False



def _is_ngff_image(p: Path) -> bool:
    """NGFF 0.4/0.5 multiscale image (JSON only; the one parser lives in ``io.ome_zarr``)."""
    from napari_histo.io.ome_zarr import is_ngff_image

    return is_ngff_image(p)
