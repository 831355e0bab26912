"""The hostile-input corpus: each case damages a valid asset and says what a user must see.

A case builds its inputs inside its own folder (``case_dir``), returns the command to run and
names the outcome a user is owed:

- ``error``: exit code 2 and exactly one readable line on stderr;
- ``ok``: exit code 0 (``expect_out`` may ask for words in the output, such as a warning);
- ``either``: 0 or 2, and when 2, exactly one line on stderr.

For every case the runner also checks: no traceback, no hang, peak memory under the ceiling,
and no file outside the case's ``out/`` folder changed (inputs are hashed before and after).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Builder = Callable[[Path, Any], list[str]]


@dataclass
class Case:
    """One hostile input and the outcome a user is owed."""

    name: str
    surface: str            # info | reader | predict | evaluate | train
    build: Builder          # (case_dir, assets) -> argv
    expect: str = "error"   # error | ok | either
    expect_err: str | None = None   # a word the stderr must hold (case-insensitive)
    expect_out: str | None = None   # a word stdout + stderr must hold
    mount: tuple[str, int, bool] | None = None  # (sub-folder, size kB, read-only): a tmpfs
    close_stdout_early: bool = False
    timeout: float = 90.0
    fault: str = ""         # the class of fault, for the report
    forbid: tuple[str, ...] = field(default_factory=tuple)  # files that must not appear


# ----------------------------------------------------------------------------- helpers


def copy(src: Path, dst: Path) -> Path:
    """Copy a file or tree."""
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def tiff_with_patched_size(path: Path, height: int, width: int) -> Path:
    """A real tiled TIFF whose header then claims ``height`` x ``width`` pixels."""
    import tifffile

    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(128, 128),
                     photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = {k: tags[k].valueoffset for k in ("ImageWidth", "ImageLength")}
        assert tags["ImageWidth"].dtype == 4  # LONG: room for big values
    with open(path, "r+b") as fh:
        fh.seek(offsets["ImageWidth"])
        fh.write(struct.pack("<I", width))
        fh.seek(offsets["ImageLength"])
        fh.write(struct.pack("<I", height))
    return path


def tiff_with_patched_tag(path: Path, tag: str, value: int) -> Path:
    """A real tiled TIFF with one LONG/SHORT tag overwritten."""
    import tifffile

    tifffile.imwrite(path, np.full((256, 256, 3), 120, np.uint8), tile=(128, 128),
                     photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        t = tif.pages[0].tags[tag]
        off, fmt = t.valueoffset, "<I" if t.dtype == 4 else "<H"
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(struct.pack(fmt, value))
    return path


def png_with_patched_size(path: Path, height: int, width: int) -> Path:
    """A real PNG whose IHDR then claims ``height`` x ``width`` (CRC recomputed)."""
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 180, np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def ome_zarr_claiming(path: Path, shape: tuple[int, ...]) -> Path:
    """A small NGFF 0.4 image whose array metadata then claims ``shape``."""
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("0", shape=(3, 64, 64), chunks=(3, 64, 64), dtype="uint8", fill_value=0)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}], "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]}]
    meta = json.loads((path / "0" / ".zarray").read_text())
    meta["shape"] = list(shape)
    (path / "0" / ".zarray").write_text(json.dumps(meta))
    return path


def checkpoint_variant(src: Path, dst: Path, mutate: Callable[[dict[str, Any]], Any]) -> Path:
    """Load a real checkpoint, change its contents, save it again (as an attacker could)."""
    import torch

    payload = torch.load(src, map_location="cpu", weights_only=True)
    mutate(payload)
    torch.save(payload, dst)
    return dst


def pickled_payload(dst: Path, marker: Path) -> Path:
    """A .pt whose unpickling would create ``marker`` (code execution)."""
    import torch

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "napari-histo-checkpoint", "state_dict": Exploit()}, dst)
    return dst


def asap_xml(path: Path, coords: list[tuple[str, str]], group: str = "_0") -> Path:
    pts = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(coords))
    path.write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        f'<Annotation Name="A" Type="Polygon" PartOfGroup="{group}">'
        f"<Coordinates>{pts}</Coordinates></Annotation></Annotations>"
        "<AnnotationGroups/></ASAP_Annotations>")
    return path


def geojson(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def nested_geojson(path: Path, depth: int) -> Path:
    path.write_text('{"type": "FeatureCollection", "features": [' + "[" * depth + "]" * depth
                    + "]}")
    return path


def unfinished_store(src: Path, dst: Path) -> Path:
    """A copy of a finished prediction store made to look like a killed run."""
    copy(src, dst)
    attrs = json.loads((dst / ".zattrs").read_text())
    attrs["napari_histo"]["complete"] = False
    (dst / ".zattrs").write_text(json.dumps(attrs))
    return dst


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def yaml_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
