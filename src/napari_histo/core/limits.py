"""Budgets and bounds: the one place that says how big anything napari-histo allocates may be.

Every number that comes from a file header, a checkpoint or the command line passes through
one of these helpers before it sizes an allocation, a loop or a model. They raise a
:class:`~napari_histo.core.errors.HistoError` subclass (chosen by the caller) with one line
saying what was asked, what the limit is and what to do, so the CLI prints it and exits 2.

Limits, and why
---------------
- ``MAX_SIDE`` (2**20 px): any image dimension. The largest whole-slide scans are ~250k px
  a side; a header claiming more is corrupt or a decompression bomb.
- ``MAX_PIXELS`` (2**28 px, 16384 x 16384): one array that must be decoded or allocated
  whole (a PNG/JPEG, a TIFF strip, a zarr chunk). Bigger images must be tiled pyramids.
- ``MAX_ARRAY_BYTES`` (4 GiB): any single in-memory array; on top of it an allocation must
  fit in the memory available now (:func:`available_memory`).
- ``MAX_UPSAMPLE`` (4): the working resolution may be at most 4x finer than the slide's
  level 0 (upsampling beyond that invents pixels and multiplies the output 16x or more).
- ``MPP_RANGE``: plausible microns per pixel (10 nm .. 1 mm); anything else is a unit error.
- tile, overlap, batch, readers, stride, context, classes, network width/depth and the
  parameter count of a network (``MAX_PARAMS``, counted on torch's meta device before any
  weight is allocated); ``MAX_BATCH_PIXELS`` bounds batch_size x tile**2.
- ``MAX_TILES``: model inputs in one prediction run (its plan is held in memory).
- annotation files: ``MAX_ANNOTATION_BYTES`` and ``MAX_NESTING``; polygons with
  coordinates beyond ``MAX_COORD`` are skipped.

Also here: :func:`check_regular_file`, which refuses named pipes, sockets and devices
*before* anything opens them (opening a FIFO for reading blocks until a writer appears).
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from napari_histo.core.errors import ConfigError, HistoError, one_line

__all__ = [
    "BATCH_RANGE", "BLOCK_TILES_RANGE", "CONTEXT_RANGE", "DEPTH_RANGE", "IN_CHANNELS_RANGE",
    "MAX_ANNOTATION_BYTES", "MAX_ARRAY_BYTES", "MAX_BATCH_PIXELS", "MAX_CHECKPOINT_BYTES",
    "MAX_COORD",
    "MAX_NESTING", "MAX_PARAMS", "MAX_PIXELS", "MAX_SIDE", "MAX_TILES", "MAX_UPSAMPLE",
    "MPP_RANGE", "NUM_CLASSES_RANGE", "PATCH_RANGE", "READERS_RANGE", "STRIDE_RANGE",
    "TILE_RANGE", "WIDTH_RANGE", "available_memory", "check_alloc", "check_decode",
    "check_disk", "check_image_size", "check_regular_file", "check_upsample", "file_kind",
    "human_bytes", "integer", "number", "one_line",
]

GiB = 1024**3
MiB = 1024**2

#: longest side of any image level (px); headers beyond are refused
MAX_SIDE = 2**20
#: pixels of one array that must be decoded or allocated whole (16384 x 16384)
MAX_PIXELS = 2**28
#: bytes of any single in-memory array
MAX_ARRAY_BYTES = 4 * GiB
#: working resolution at most this many times finer than the slide's level 0
MAX_UPSAMPLE = 4.0
#: plausible microns per pixel (working, model or slide resolution)
MPP_RANGE = (0.01, 1000.0)
#: model input side (px) of a segmentation tile or a classifier patch
TILE_RANGE = (8, 4096)
PATCH_RANGE = (8, 4096)
CONTEXT_RANGE = (8, 4096)
STRIDE_RANGE = (1, 4096)
BATCH_RANGE = (1, 1024)
READERS_RANGE = (1, 64)
BLOCK_TILES_RANGE = (1, 64)
#: model inputs (tiles or patches) of one prediction run
MAX_TILES = 2**23
#: input pixels of one forward batch (batch_size x tile**2)
MAX_BATCH_PIXELS = 2**27
NUM_CLASSES_RANGE = (2, 256)
IN_CHANNELS_RANGE = (1, 64)
#: first-level channels (``base``) of the built-in networks
WIDTH_RANGE = (4, 256)
#: resolution levels of a U-Net
DEPTH_RANGE = (2, 8)
#: parameters of one network (1 GB of float32 weights)
MAX_PARAMS = 250_000_000
#: size of a checkpoint file, and of its contents once unzipped
MAX_CHECKPOINT_BYTES = 4 * GiB
#: size of an annotation file (XML / GeoJSON)
MAX_ANNOTATION_BYTES = 256 * MiB
#: nesting of JSON arrays/objects and GeoJSON geometry collections
MAX_NESTING = 64
#: |coordinate| (level-0 px) beyond which an annotation vertex is nonsense
MAX_COORD = float(4 * MAX_SIDE)


def human_bytes(n: float) -> str:
    """``1.5 GB``-style size (powers of 1024)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


# ----------------------------------------------------------------------------- numbers


def _fail(error: type[HistoError], name: str, text: str, value: Any) -> HistoError:
    shown = repr(value) if not isinstance(value, float) else f"{value:g}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return error(f"{name} {text}, got {shown}")


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None, *,
            error: type[HistoError] = ConfigError, allow_none: bool = False) -> Any:
    """``value`` as an int in ``[lo, hi]``; integral floats (8.0) are accepted.

    Raises ``error`` naming ``name`` for None (unless ``allow_none``), bools, strings,
    fractions, NaN/inf and values out of range.
    """
    if value is None:
        if allow_none:
            return None
        raise error(f"{name} is required (an integer)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(error, name, "must be an integer", value)
    if isinstance(value, numbers.Integral):
        v = int(value)
    else:
        f = float(value)
        if not math.isfinite(f) or not f.is_integer():
            raise _fail(error, name, "must be an integer", value)
        v = int(f)
    if lo is not None and v < lo:
        raise _fail(error, name, f"must be >= {lo}" + (f" (and <= {hi})" if hi is not None else ""), v)
    if hi is not None and v > hi:
        raise _fail(error, name, f"must be <= {hi}" + (f" (and >= {lo})" if lo is not None else ""), v)
    return v


def number(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False, error: type[HistoError] = ConfigError,
           allow_none: bool = False) -> Any:
    """``value`` as a finite float in the range (``lo_open``: ``> lo`` instead of ``>=``).

    Raises ``error`` naming ``name`` for None (unless ``allow_none``), bools, strings,
    NaN, infinities and values out of range.
    """
    if value is None:
        if allow_none:
            return None
        raise error(f"{name} is required (a number)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(error, name, "must be a number", value)
    v = float(value)
    if not math.isfinite(v):
        raise _fail(error, name, "must be a finite number", value)
    low = lo is not None and (v <= lo if lo_open else v < lo)
    high = hi is not None and (v >= hi if hi_open else v > hi)
    if low or high:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        raise _fail(error, name, "must be " + " and ".join(parts), v)
    return v


def check_upsample(work_mpp: float, slide_mpp: float, what: str, *,
                   error: type[HistoError] = ConfigError) -> None:
    """Refuse a working resolution more than ``MAX_UPSAMPLE`` times finer than the slide's."""
    if slide_mpp > 0 and work_mpp * MAX_UPSAMPLE < slide_mpp * (1 - 1e-9):
        raise error(
            f"{what}: working resolution {work_mpp:g} um/px is {slide_mpp / work_mpp:.3g}x finer "
            f"than the slide's level 0 ({slide_mpp:g} um/px); at most {MAX_UPSAMPLE:g}x "
            "upsampling is allowed: choose a coarser --mpp (or check the checkpoint's mpp)")


# ----------------------------------------------------------------------------- memory


def available_memory() -> int | None:
    """Bytes this process can still allocate (RAM available, capped by a cgroup limit).

    None when it cannot be told (non-Linux without psutil).
    """
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except Exception:
            avail = None
    try:  # cgroup v2 limit of a container
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = max(0, int(limit) - used)
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def check_alloc(nbytes: float, what: str, *, error: type[HistoError] = ConfigError,
                hint: str = "") -> None:
    """Refuse allocating ``nbytes`` for ``what`` beyond ``MAX_ARRAY_BYTES`` or free memory."""
    tail = f"; {hint}" if hint else ""
    if nbytes > MAX_ARRAY_BYTES:
        raise error(f"{what} would need {human_bytes(nbytes)} in memory, more than the "
                    f"{human_bytes(MAX_ARRAY_BYTES)} napari-histo allows for one array{tail}")
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise error(f"{what} would need {human_bytes(nbytes)} in memory but only "
                    f"{human_bytes(avail)} is available{tail}")


def check_image_size(height: Any, width: Any, what: str, *,
                     error: type[HistoError] = ConfigError) -> tuple[int, int]:
    """Refuse image dimensions that are not integers in ``1..MAX_SIDE``."""
    try:
        h, w = int(height), int(width)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{what}: image size {height!r} x {width!r} is not a pair of integers") from None
    if h < 1 or w < 1:
        raise error(f"{what}: image has no pixels ({w} x {h} px)")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise error(f"{what}: header claims {w} x {h} px, beyond the {MAX_SIDE} px a side "
                    "napari-histo reads; the file is corrupt or not a real image")
    return h, w


def check_decode(height: int, width: int, what: str, *, channels: int = 3, itemsize: int = 1,
                 error: type[HistoError] = ConfigError, hint: str = "") -> None:
    """Refuse decoding a ``height x width`` array whole beyond ``MAX_PIXELS`` or memory."""
    pixels = int(height) * int(width)
    tail = f"; {hint}" if hint else ""
    if pixels > MAX_PIXELS:
        raise error(f"{what}: {int(width)} x {int(height)} px ({pixels / 1e6:.0f} Mpx) must be "
                    f"decoded in one piece, more than the {MAX_PIXELS / 1e6:.0f} Mpx napari-histo "
                    f"decodes at once{tail}")
    check_alloc(pixels * max(1, int(channels)) * max(1, int(itemsize)), what, error=error,
                hint=hint)


# ----------------------------------------------------------------------------- disk


def check_disk(path: str | os.PathLike[str], nbytes: float, what: str, *,
               error: type[HistoError] = ConfigError) -> None:
    """Refuse writing about ``nbytes`` under ``path`` when its file system has less free."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return
    if nbytes > free:
        raise error(f"{what} needs about {human_bytes(nbytes)} but only {human_bytes(free)} is "
                    f"free on the disk of {p}; free some space or write elsewhere")


# ----------------------------------------------------------------------------- files

_KINDS = (
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def file_kind(mode: int) -> str | None:
    """"named pipe", "socket", "character device", "block device", or None (file/dir)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None


def check_regular_file(path: str | os.PathLike[str], *, what: str | None = None,
                       error: type[HistoError] = ConfigError, allow_dir: bool = False,
                       max_bytes: int | None = None) -> os.stat_result:
    """``os.stat`` of ``path`` after refusing anything that is not a regular file.

    ``stat`` never opens the file, so a named pipe is refused before a read could block on
    it. ``allow_dir`` accepts directories (OME-Zarr stores); ``max_bytes`` refuses files
    larger than that.
    """
    p = Path(path)
    label = what or p.name or str(p)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{p}: no such file or directory") from None
    except OSError as err:
        raise error(f"{label}: cannot read ({one_line(err.strerror or err)})") from None
    kind = file_kind(st.st_mode)
    if kind is not None:
        raise error(f"{label} is not a regular file ({kind}); give a file")
    if stat.S_ISDIR(st.st_mode) and not allow_dir:
        raise error(f"{label} is a directory, not a file")
    if max_bytes is not None and stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
        raise error(f"{label} is {human_bytes(st.st_size)}, more than the "
                    f"{human_bytes(max_bytes)} napari-histo reads for this kind of file")
    return st
