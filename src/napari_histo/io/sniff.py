"""Cheap content sniffing: what kind of file is this, judged by its bytes, not its suffix.

``sniff_format(path)`` reads at most 16 bytes (or lists a directory) and never raises;
``is_supported_slide(path)`` is what the napari reader's ``get_reader`` calls. Neither opens
anything that is not a regular file or a directory: a named pipe would block the read
forever, a device could stream without end (``os.stat`` tells them apart without opening).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["sniff_format", "is_supported_slide", "SUPPORTED_DESCRIPTION"]

SUPPORTED_DESCRIPTION = (
    "Aperio SVS, Hamamatsu NDPI, pyramidal/plain TIFF (incl. CAMELYON16 .tif, OME-TIFF), "
    "OME-Zarr (NGFF 0.4/0.5 directory), PNG, JPEG, BMP"
)

_MAGIC = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """Return ``"tiff"``, ``"png"``, ``"jpeg"``, ``"bmp"``, ``"gif"``, ``"zarr"`` or None.

    Never raises: unreadable, empty or unknown files give None, and so do named pipes,
    sockets and devices (never opened).
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
            head = fh.read(16)
    except (OSError, ValueError, TypeError):
        return None
    for magic, kind in _MAGIC:
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
            from napari_histo.io.ome_zarr import is_ngff_image  # NGFF 0.4/0.5, JSON only

            return is_ngff_image(path)
        return True
    except Exception:
        return False

