"""Fixtures for the slide-reader tests: synthetic pyramids and a corpus of bad files.

Everything is written at test time with tifffile/zarr/PIL into tmp folders (nothing binary
is committed). ``bad_corpus`` writes one file per kind of broken input the readers must
answer with a clear error (or a warning plus a usable slide).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_histo.io.synthetic import synthetic_he, write_synthetic_slide


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-level JPEG pyramid (SubIFDs) 1024 x 1536 px at 0.5 um/px, with its mask."""
    d = tmp_path_factory.mktemp("synthetic")
    slide, mask = write_synthetic_slide(d / "synth.tif", shape=(1024, 1536), tile=256, levels=3,
                                        mpp=0.5, seed=1)
    assert mask is not None
    return slide, mask


@pytest.fixture(scope="session")
def he_image() -> np.ndarray:
    """A 700 x 900 H&E-like RGB image (uint8)."""
    return synthetic_he((700, 900), seed=3)[0]


def write_huge_header_tiff(path: Path, side: int = 1_000_000, *, strips: bool = False) -> Path:
    """A classic TIFF whose header claims ``side`` x ``side`` RGB px with 196 kB of data.

    Tiled: one tile offset for 15 million tiles. Stripped: one uncompressed strip whose byte
    count claims the whole (3 TB) image, which a lazy reader can open without allocating.
    """
    tile = 256
    data = bytes(tile * tile * 3)
    entries = [  # (tag, type, count, value) ; type 3 SHORT, 4 LONG
        (256, 4, 1, side), (257, 4, 1, side), (258, 3, 3, None), (259, 3, 1, 1),
        (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
        (324, 4, 1, None), (325, 4, 1, len(data)),
    ]
    if strips:  # StripOffsets, RowsPerStrip, StripByteCounts (clamped to 32 bits)
        entries = entries[:7] + [(273, 4, 1, None), (278, 4, 1, side),
                                 (279, 4, 1, min(side * side * 3, 2**32 - 1))]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bps_offset = ifd_offset + ifd_size
    data_offset = bps_offset + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            out += struct.pack("<HHII", tag, typ, count, bps_offset)
        elif tag in (273, 324):
            out += struct.pack("<HHII", tag, typ, count, data_offset)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHH", 8, 8, 8)
    out += data
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(scope="session")
def bad_corpus(
    tmp_path_factory: pytest.TempPathFactory, synthetic_slide: tuple[Path, Path], he_image: np.ndarray
) -> dict[str, Path]:
    """Write the corpus of bad inputs into a tmp folder (once); returns name -> path.

    Tests only read these files.
    """
    from PIL import Image

    tmp_path = tmp_path_factory.mktemp("bad_corpus")
    slide, _ = synthetic_slide
    c: dict[str, Path] = {}
    c["missing"] = tmp_path / "does_not_exist.svs"
    c["empty"] = tmp_path / "empty.tif"
    c["empty"].write_bytes(b"")
    raw = slide.read_bytes()
    c["truncated_header"] = tmp_path / "truncated_header.tif"
    c["truncated_header"].write_bytes(raw[:6])
    c["truncated_data"] = tmp_path / "truncated_data.tif"
    # level 0 IFD is at the start of a tifffile-written file; cut most of the tile data
    with tifffile.TiffFile(slide) as tf:
        page = tf.pages[0]
        offs, counts = page.dataoffsets, page.databytecounts
        cut = int(offs[len(offs) // 2])
        # corrupt copy: overwrite tile 1 with garbage
        corrupt = bytearray(raw)
        o, n = int(offs[1]), int(counts[1])
        corrupt[o : o + n] = bytes((i * 37) % 251 for i in range(n))
    c["truncated_data"].write_bytes(raw[:cut])
    c["corrupt_tile"] = tmp_path / "corrupt_tile.tif"
    c["corrupt_tile"].write_bytes(bytes(corrupt))
    c["png_named_svs"] = tmp_path / "actually_png.svs"
    Image.fromarray(he_image).save(c["png_named_svs"], format="PNG")
    c["huge_header"] = write_huge_header_tiff(tmp_path / "huge_header.tif")
    c["huge_header_strips"] = write_huge_header_tiff(tmp_path / "huge_strips.tif", strips=True)
    gray16 = (np.linspace(0, 65535, 300 * 400).reshape(300, 400)).astype(np.uint16)
    c["gray16_tiff"] = tmp_path / "gray16.tif"
    tifffile.imwrite(c["gray16_tiff"], gray16, tile=(128, 128))
    c["gray8_tiff"] = tmp_path / "gray8.tif"
    tifffile.imwrite(c["gray8_tiff"], (gray16 >> 8).astype(np.uint8))
    c["gray16_png"] = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(c["gray16_png"])
    rgba = np.dstack([he_image, np.full(he_image.shape[:2], 255, np.uint8)])
    rgba[:50, :50, 3] = 0
    c["rgba_png"] = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(c["rgba_png"])
    c["text_as_tif"] = tmp_path / "notes.tif"
    c["text_as_tif"].write_text("this is not an image\n")
    c["plain_dir"] = tmp_path / "not_a_zarr"
    c["plain_dir"].mkdir()
    c["float_tiff"] = tmp_path / "float.tif"
    tifffile.imwrite(c["float_tiff"], np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64))
    return c


@pytest.fixture
def copy_of(tmp_path: Path):  # noqa: ANN201 - small factory
    """Copy a file into tmp_path under a new name."""

    def _copy(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copyfile(src, dst)
        return dst

    return _copy
