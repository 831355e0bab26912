"""OME-TIFF, OME-Zarr (NGFF 0.4 and 0.5), plain images and the RGB conversion policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_histo.io.slide import open_slide


def _downsample(a: np.ndarray) -> np.ndarray:
    return a[::2, ::2]


def test_ome_tiff_subifds(tmp_path: Path, he_image: np.ndarray) -> None:
    p = tmp_path / "img.ome.tif"
    levels = [he_image, _downsample(he_image), _downsample(_downsample(he_image))]
    with tifffile.TiffWriter(p) as tw:
        tw.write(levels[0], tile=(128, 128), photometric="rgb", subifds=2, compression="jpeg",
                 metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.26,
                           "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
        for lv in levels[1:]:
            tw.write(lv, tile=(128, 128), photometric="rgb", subfiletype=1, compression="jpeg")
    with open_slide(p) as s:
        assert s.metadata.format == "ome-tiff"
        assert s.name == "img"
        assert s.metadata.level_shapes == ((700, 900), (350, 450), (175, 225))
        assert s.mpp == pytest.approx((0.26, 0.25))
        assert s.levels[0].chunksize[:2] == (128, 128)
        ref = tifffile.imread(p)
        np.testing.assert_array_equal(np.asarray(s.levels[0]), ref)


def test_ome_tiff_channel_planes_via_zarr_path(tmp_path: Path, he_image: np.ndarray) -> None:
    p = tmp_path / "planes.ome.tif"
    cyx = np.moveaxis(he_image, -1, 0).copy()
    tifffile.imwrite(p, cyx, tile=(128, 128), metadata={"axes": "CYX"})
    with open_slide(p) as s:
        np.testing.assert_array_equal(np.asarray(s.levels[0]), he_image)


def _write_ngff(path: Path, image: np.ndarray, *, version: str, mpp: float) -> None:
    levels = [image, _downsample(image)]
    fmt = 3 if version == "0.5" else 2
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    datasets = []
    for i, lv in enumerate(levels):
        cyx = np.moveaxis(lv, -1, 0)
        arr = root.create_array(str(i), shape=cyx.shape, chunks=(3, 128, 128), dtype=cyx.dtype)
        arr[:] = cyx
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, mpp * 2**i, mpp * 2**i]}]})
    ms = [{"axes": [{"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"}],
           "datasets": datasets, "name": "he"}]
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    else:
        ms[0]["version"] = "0.4"
        root.attrs["multiscales"] = ms


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr(tmp_path: Path, he_image: np.ndarray, version: str) -> None:
    p = tmp_path / "img.ome.zarr"
    _write_ngff(p, he_image, version=version, mpp=0.5)
    with open_slide(p) as s:
        assert s.metadata.format == "ome-zarr"
        assert s.metadata.properties["ngff.version"] == version
        assert s.metadata.level_shapes == ((700, 900), (350, 450))
        assert s.mpp == pytest.approx((0.5, 0.5))
        assert s.metadata.level_mpps[1] == pytest.approx((1.0, 1.0))
        assert s.levels[0].chunksize[:2] == (128, 128)
        np.testing.assert_array_equal(np.asarray(s.levels[0]), he_image)
        np.testing.assert_array_equal(s.read_region((100, 100), 1, (50, 60)), he_image[::2, ::2][50:100, 50:110])


def test_plain_png_jpeg(tmp_path: Path, he_image: np.ndarray) -> None:
    png = tmp_path / "a.png"
    Image.fromarray(he_image).save(png, dpi=(50800, 50800))  # 0.5 um/px
    with open_slide(png) as s:
        assert s.metadata.format == "png" and s.mpp == pytest.approx((0.5, 0.5), rel=1e-3)
        np.testing.assert_array_equal(np.asarray(s.levels[0]), he_image)
    jpg = tmp_path / "a.jpg"
    Image.fromarray(he_image).save(jpg, quality=95)
    with open_slide(jpg) as s:
        assert s.metadata.format == "jpeg" and s.mpp is None  # 72 dpi default is not physical
        assert np.abs(np.asarray(s.levels[0]).astype(int) - he_image).mean() < 4


def test_plain_big_image_gets_computed_levels(tmp_path: Path) -> None:
    img = np.zeros((2100, 1500, 3), np.uint8)
    img[:, 750:] = 200
    p = tmp_path / "big.png"
    Image.fromarray(img).save(p)
    with open_slide(p) as s:
        assert s.metadata.level_shapes == ((2100, 1500), (1050, 750), (525, 375))
        assert s.metadata.level_native == (True, False, False)
        lv2 = np.asarray(s.levels[2])
        assert (lv2[:, :187] == 0).all() and (lv2[:, 188:] == 200).all()


def test_rgb_policy_gray_rgba_16bit(bad_corpus: dict[str, Path]) -> None:
    with open_slide(bad_corpus["gray16_tiff"]) as s:
        raw = tifffile.imread(bad_corpus["gray16_tiff"])
        got = np.asarray(s.levels[0])
        assert got.shape == (300, 400, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got[..., 0], ((raw.astype(np.uint32) + 128) // 257))
        assert (got[..., 0] == got[..., 2]).all()
    with open_slide(bad_corpus["gray16_png"]) as s:
        assert np.asarray(s.levels[0])[-1, -1, 0] == 255
    with open_slide(bad_corpus["rgba_png"]) as s:
        rgb = np.asarray(s.levels[0])
        assert (rgb[:50, :50] == 255).all()  # transparent -> white
    with open_slide(bad_corpus["float_tiff"]) as s:
        f = np.asarray(s.levels[0])
        assert f[0, 0, 0] == 0 and f[-1, -1, 0] == 255


def test_sniff_and_is_supported(bad_corpus: dict[str, Path], synthetic_slide: tuple[Path, Path], tmp_path: Path, he_image: np.ndarray) -> None:
    from napari_histo.io.sniff import is_supported_slide, sniff_format

    assert sniff_format(synthetic_slide[0]) == "tiff"
    assert sniff_format(bad_corpus["png_named_svs"]) == "png"
    assert is_supported_slide(bad_corpus["png_named_svs"])
    for bad in ("missing", "empty", "text_as_tif", "plain_dir"):
        assert not is_supported_slide(bad_corpus[bad])
    assert not is_supported_slide(None)  # type: ignore[arg-type]
    p = tmp_path / "x.ome.zarr"
    _write_ngff(p, he_image[:256, :256], version="0.5", mpp=1.0)
    assert is_supported_slide(p)
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    assert not is_supported_slide(tmp_path / "plain.zarr")
