"""Synthetic pyramidal TIFFs: levels, tile-aligned chunks, mpp, pixels, laziness, threads."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_histo.io import _tiff
from napari_histo.io.slide import open_slide
from napari_histo.io.synthetic import write_synthetic_slide


def test_levels_shapes_chunks_and_mpp(synthetic_slide: tuple[Path, Path]) -> None:
    path, _ = synthetic_slide
    with open_slide(path) as s:
        m = s.metadata
        assert m.level_shapes == ((1024, 1536), (512, 768), (256, 384))
        assert m.level_native == (True, True, True)
        assert m.mpp == pytest.approx((0.5, 0.5))
        assert [v for yx in m.level_mpps for v in yx] == pytest.approx([0.5, 0.5, 1, 1, 2, 2])
        assert m.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        for lvl in s.levels:
            assert lvl.dtype == np.uint8 and lvl.ndim == 3 and lvl.shape[2] == 3
            assert lvl.chunksize[:2] == (256, 256)  # aligned to the file's tiles
        assert s.name == "synth" and s.shape == (1024, 1536)
        assert s.level_for_mpp(1.0) == 1 and s.level_for_mpp(0.3) == 0 and s.level_for_mpp(9) == 2


def test_pixels_equal_tifffile(synthetic_slide: tuple[Path, Path]) -> None:
    path, _ = synthetic_slide
    ref0 = tifffile.imread(path)
    with tifffile.TiffFile(path) as tf:
        ref1 = tf.series[0].levels[1].asarray()
    with open_slide(path) as s:
        np.testing.assert_array_equal(np.asarray(s.levels[0]), ref0)
        np.testing.assert_array_equal(s.levels[1][100:300, 50:700].compute(), ref1[100:300, 50:700])
        region = s.read_region((300, 500), 0, (256, 256))  # unaligned: 4 tiles
        np.testing.assert_array_equal(region, ref0[300:556, 500:756])
        # level-1 read: location in level-0 pixels
        np.testing.assert_array_equal(s.read_region((200, 100), 1, (64, 80)), ref1[100:164, 50:130])
        # outside the slide is white
        edge = s.read_region((1000, 1500), 0, (64, 64))
        assert edge.shape == (64, 64, 3)
        np.testing.assert_array_equal(edge[:24, :36], ref0[1000:, 1500:])
        assert (edge[24:] == 255).all() and (edge[:, 36:] == 255).all()
        # numpy-style slicing of the raw level arrays
        la = s.level_arrays[0]
        np.testing.assert_array_equal(la[10:20, ::-3, 1], ref0[10:20, ::-3, 1])
        np.testing.assert_array_equal(la[5, 7], ref0[5, 7])


def test_opening_decodes_nothing(synthetic_slide: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = synthetic_slide
    calls: list[tuple[int, int]] = []
    orig = _tiff.TiffLevel._decode_segment

    def counting(self: _tiff.TiffLevel, sy: int, sx: int) -> np.ndarray:
        calls.append((sy, sx))
        return orig(self, sy, sx)

    monkeypatch.setattr(_tiff.TiffLevel, "_decode_segment", counting)
    s = open_slide(path)
    _ = [lvl[:10, :10] for lvl in s.levels]  # building slices of the dask graph is free too
    assert calls == []
    s.read_region((0, 0), 0, (10, 10))
    assert calls == [(0, 0)]
    s.read_region((0, 0), 0, (10, 10))
    assert calls == [(0, 0)]  # second read from the decoded-tile cache
    assert s.cache is not None and s.cache.hits >= 1
    s.close()


def test_thread_safe_reads(synthetic_slide: tuple[Path, Path]) -> None:
    path, _ = synthetic_slide
    ref = tifffile.imread(path)
    rng = np.random.default_rng(0)
    locs = [(int(rng.integers(0, 900)), int(rng.integers(0, 1400))) for _ in range(64)]
    with open_slide(path, cache_bytes=0) as s:
        with ThreadPoolExecutor(8) as ex:
            out = list(ex.map(lambda yx: s.read_region(yx, 0, (100, 120)), locs))
        for (y, x), r in zip(locs, out, strict=False):
            h, w = min(100, 1024 - y), min(120, 1536 - x)
            np.testing.assert_array_equal(r[:h, :w], ref[y : y + h, x : x + w])
        # dask threaded compute of a large slice (many tiles decoded in parallel)
        np.testing.assert_array_equal(s.levels[0][:, :].compute(scheduler="threads"), ref)


def test_pages_layout_and_single_level_computed(tmp_path: Path) -> None:
    p, m = write_synthetic_slide(tmp_path / "pages.tif", shape=(1200, 2600), tile=128, levels=2,
                                 layout="pages", mpp=0.25, with_mask=False)
    assert m is None
    with open_slide(p) as s:
        # 2 native levels (2600 -> 1300 px) + computed ones until <= 1024 px
        assert s.metadata.level_native == (True, True, False)
        assert s.metadata.level_shapes == ((1200, 2600), (600, 1300), (300, 650))
        assert s.metadata.level_mpps[2] == pytest.approx((1.0, 1.0))
        ref1 = np.asarray(s.levels[1]).astype(np.uint16)
        expected = ((ref1[0::2, 0::2] + ref1[1::2, 0::2] + ref1[0::2, 1::2] + ref1[1::2, 1::2] + 2) // 4)
        np.testing.assert_array_equal(np.asarray(s.levels[2]), expected.astype(np.uint8))
        assert s.levels[2].chunksize[:2] == (128, 128)


def test_levels_pickle_and_reopen(synthetic_slide: tuple[Path, Path]) -> None:
    path, _ = synthetic_slide
    with open_slide(path) as s:
        lvl = pickle.loads(pickle.dumps(s.levels[1]))
        np.testing.assert_array_equal(lvl[:50, :50].compute(), s.levels[1][:50, :50].compute())


def test_odd_sizes_and_uint16_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img16 = rng.integers(0, 4096, size=(333, 517, 3), dtype=np.uint16)  # 12-bit data
    p = tmp_path / "rgb12.tif"
    tifffile.imwrite(p, img16, tile=(64, 64), photometric="rgb", bitspersample=12 if False else None)
    with open_slide(p) as s:
        got = np.asarray(s.levels[0])
        # no BitsPerSample < 16 in the file: full 16-bit range maps to 0..255
        np.testing.assert_array_equal(got, ((img16.astype(np.uint32) + 128) // 257).astype(np.uint8))
        assert s.metadata.source_dtype == "uint16"


@pytest.mark.parametrize("compression", [None, "zlib", "jpeg"])
def test_stripped_single_level_tiff(tmp_path: Path, he_image: np.ndarray, compression: str | None) -> None:
    img = np.tile(he_image, (2, 2, 1))[:1300, :1700]  # > 1024: gets a computed level
    p = tmp_path / "strips.tif"
    tifffile.imwrite(p, img, photometric="rgb", compression=compression, rowsperstrip=37)
    ref = tifffile.imread(p)
    with tifffile.TiffFile(p) as tf:
        rps = tf.pages[0].rowsperstrip  # JPEG rounds it up to the MCU height
    with open_slide(p) as s:
        assert s.metadata.level_native == (True, False)
        if compression is not None:  # uncompressed data is read in virtual strips instead
            assert s.level_arrays[0].seg_shape == (rps, 1700)
            assert s.levels[0].chunksize[0] % rps == 0  # chunk rows aligned to strips
        np.testing.assert_array_equal(np.asarray(s.levels[0]), ref)
        np.testing.assert_array_equal(s.read_region((500, 900), 0, (100, 300)), ref[500:600, 900:1200])


def test_planar_separate_rgb(tmp_path: Path, he_image: np.ndarray) -> None:
    p = tmp_path / "planar.tif"
    tifffile.imwrite(p, np.moveaxis(he_image, -1, 0), photometric="rgb", planarconfig="separate",
                     tile=(128, 128), compression="zlib")
    with open_slide(p) as s:
        np.testing.assert_array_equal(np.asarray(s.levels[0]), he_image)
        np.testing.assert_array_equal(s.read_region((100, 130), 0, (200, 300)), he_image[100:300, 130:430])


def test_uncompressed_single_strip_reads_rows_directly(tmp_path: Path, he_image: np.ndarray) -> None:
    img = np.tile(he_image, (3, 2, 1))  # 2100 x 1800, written by tifffile as ONE strip
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, img, photometric="rgb")
    big16 = (np.arange(1500 * 1300, dtype=np.uint32).reshape(1500, 1300) % 65536).astype(">u2")
    p16 = tmp_path / "be16.tif"
    tifffile.imwrite(p16, big16, byteorder=">")
    with open_slide(p) as s:
        la = s.level_arrays[0]
        assert la.seg_shape[0] < 2100  # virtual strips, not the whole image per chunk
        np.testing.assert_array_equal(np.asarray(s.levels[0]), img)
        np.testing.assert_array_equal(s.read_region((1000, 700), 0, (333, 444)), img[1000:1333, 700:1144])
        assert s.metadata.level_native == (True, False, False)
    with open_slide(p16) as s:
        got = np.asarray(s.levels[0])[..., 0]
        np.testing.assert_array_equal(got, ((big16.astype(np.uint32) + 128) // 257).astype(np.uint8))
