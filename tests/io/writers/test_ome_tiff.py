"""Pyramidal OME-TIFF writer: round trips, SubIFD levels, physical sizes, atomic writes."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_histo.core.errors import ConfigError, OutputExistsError
from napari_histo.io.ome_zarr import downsample2
from napari_histo.io.slide import open_slide
from napari_histo.io.writers import write_ome_tiff, write_ome_zarr


def _levels(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tf:
        assert tf.is_ome and len(tf.series) == 1
        return [lvl.asarray() for lvl in tf.series[0].levels]


def test_labels_round_trip(tmp_path: Path, labels: np.ndarray) -> None:
    p = write_ome_tiff(tmp_path / "mask.ome.tif", labels, mpp=0.5, tile=128)
    lv = _levels(p)
    assert [a.shape for a in lv] == [(600, 700), (300, 350), (150, 175), (75, 88)]
    for k, a in enumerate(lv):
        np.testing.assert_array_equal(a, labels[:: 2**k, :: 2**k])
    with tifffile.TiffFile(p) as tf:
        page = tf.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (128, 128)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert len(page.subifds) == 3  # lower levels in SubIFDs, one top-level page
        assert len(tf.pages) == 1
        ome = tf.ome_metadata
        assert 'PhysicalSizeX="0.5"' in ome and 'PhysicalSizeXUnit="µm"' in ome
        xres = page.tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1e4 / 0.5)  # px per cm


def test_rgb_dask_jpeg(tmp_path: Path, rgb: np.ndarray) -> None:
    d = da.from_array(rgb, chunks=(333, 333, 3))
    p = write_ome_tiff(
        tmp_path / "he.ome.tiff", d, mpp=(0.25, 0.25), kind="image", compression="jpeg", quality=95
    )
    lv = _levels(p)
    assert [a.shape for a in lv] == [(1000, 1000, 3), (500, 500, 3), (250, 250, 3)]
    err = np.abs(lv[0].astype(int) - rgb.astype(int)).mean()
    assert err < 3.0  # lossy, but close on real tissue
    ref1 = np.moveaxis(downsample2(np.moveaxis(rgb, -1, 0), "image"), 0, -1)
    assert np.abs(lv[1].astype(int) - ref1.astype(int)).mean() < 3.0
    with tifffile.TiffFile(p) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.JPEG
    # the project's own reader opens it as a pyramid, in microns
    with open_slide(p) as slide:
        assert slide.mpp == pytest.approx((0.25, 0.25))
        assert [lvl.shape for lvl in slide.levels][:2] == [(1000, 1000, 3), (500, 500, 3)]
        region = slide.read_region((100, 200), 0, (64, 64))
        np.testing.assert_array_equal(region, lv[0][100:164, 200:264])


def test_float_heatmap_lossless(tmp_path: Path, heatmap: np.ndarray) -> None:
    p = write_ome_tiff(tmp_path / "hm.ome.tif", heatmap.astype(np.float16), kind="image", tile=64)
    lv = _levels(p)
    assert lv[0].dtype == np.float32  # OME has no half float: widened losslessly
    np.testing.assert_array_equal(lv[0], heatmap.astype(np.float16).astype(np.float32))
    assert lv[1].shape == (257, 195)


def test_multiscale_list_and_zstd(tmp_path: Path, labels: np.ndarray) -> None:
    ms = [labels, labels[::2, ::2]]
    p = write_ome_tiff(tmp_path / "ms.ome.tif", ms, compression="zstd")
    lv = _levels(p)
    assert len(lv) == 2
    np.testing.assert_array_equal(lv[1], ms[1])


def test_crash_inside_tile_generator_leaves_nothing(tmp_path: Path, make_failing_dask) -> None:
    arr = make_failing_dask((1024, 1024), (256, 256), bad_block=9)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_ome_tiff(tmp_path / "crash.ome.tif", arr)
    assert list(tmp_path.iterdir()) == []


def test_exists_overwrite_and_bad_options(tmp_path: Path, labels: np.ndarray) -> None:
    out = tmp_path / "x.ome.tif"
    write_ome_tiff(out, labels)
    with pytest.raises(OutputExistsError):
        write_ome_tiff(out, labels)
    write_ome_tiff(out, labels[:64, :64], overwrite=True)
    assert _levels(out)[0].shape == (64, 64)
    with pytest.raises(ConfigError, match="JPEG"):
        write_ome_tiff(tmp_path / "j.tif", labels, compression="jpeg")
    with pytest.raises(ConfigError, match="multiple of 16"):
        write_ome_tiff(tmp_path / "t.tif", labels, tile=100)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.ome.tif"]


def test_zarr_output_opens_with_project_reader(tmp_path: Path, rgb: np.ndarray) -> None:
    p = write_ome_zarr(tmp_path / "he.ome.zarr", rgb[:512, :768], mpp=0.5, kind="image")
    with open_slide(p) as slide:
        assert slide.mpp == pytest.approx((0.5, 0.5))
        assert slide.levels[0].shape == (512, 768, 3)
        np.testing.assert_array_equal(np.asarray(slide.levels[0]), rgb[:512, :768])
