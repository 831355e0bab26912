"""Ground-truth masks: discovery, label values, alignment by physical extent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_histo.core.errors import SlideOpenError
from napari_histo.io.masks import find_ground_truth, mask_scale_for, open_mask
from napari_histo.io.slide import open_slide
from napari_histo.io.synthetic import write_synthetic_slide


def test_find_ground_truth_layouts(tmp_path: Path, synthetic_slide: tuple[Path, Path]) -> None:
    slide, mask = synthetic_slide
    assert find_ground_truth(slide) == mask
    assert find_ground_truth(mask) is None
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img = tmp_path / "images" / "train_9.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    assert find_ground_truth(img) is None
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "labels" / "train_9.png")
    assert find_ground_truth(img) == tmp_path / "labels" / "train_9.png"
    png = tmp_path / "case.tif"
    png.write_bytes(b"")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "case_mask.png")
    assert find_ground_truth(png) == tmp_path / "case_mask.png"
    assert find_ground_truth(tmp_path / "nothing" / "x.svs") is None


def test_synthetic_mask_levels_and_alignment(synthetic_slide: tuple[Path, Path]) -> None:
    slide_path, mask_path = synthetic_slide
    with open_slide(slide_path) as s, open_mask(mask_path) as m:
        assert m.levels[0].ndim == 2 and m.levels[0].dtype == np.uint8
        assert m.levels[0].shape == s.levels[0].shape[:2]
        assert not m.binary_255
        values = np.unique(np.asarray(m.levels[0]))
        assert set(values.tolist()) == {0, 1}
        assert mask_scale_for(s, m) == (1.0, 1.0)
        assert m.read_region((0, 0), 0, (4, 4)).shape == (4, 4)
        assert (m.read_region((2000, 2000), 0, (4, 4)) == 0).all()  # outside: 0, not white


def test_low_res_mask_scale(tmp_path: Path) -> None:
    slide, mask = write_synthetic_slide(tmp_path / "s.tif", shape=(1024, 2048), levels=2,
                                        mask_downsample=4, seed=2)
    assert mask is not None
    with open_slide(slide) as s, open_mask(mask) as m:
        assert m.shape == (256, 512)
        assert mask_scale_for(s, m) == (4.0, 4.0)
        assert m.mpp == pytest.approx((2.0, 2.0))


def test_png_0_255_becomes_0_1_and_classes_kept(tmp_path: Path) -> None:
    binary = np.zeros((40, 60), np.uint8)
    binary[10:20, 10:30] = 255
    Image.fromarray(binary).save(tmp_path / "b.png")
    with open_mask(tmp_path / "b.png") as m:
        assert m.binary_255
        np.testing.assert_array_equal(np.asarray(m.levels[0]), binary // 255)
    classes = np.arange(40 * 60).reshape(40, 60).astype(np.uint8) % 5
    Image.fromarray(classes).save(tmp_path / "c.png")
    with open_mask(tmp_path / "c.png") as m:
        assert not m.binary_255
        np.testing.assert_array_equal(np.asarray(m.levels[0]), classes)
    tiff255 = tmp_path / "t_mask.tif"
    tifffile.imwrite(tiff255, np.kron(binary, np.ones((40, 40), np.uint8)), tile=(256, 256))
    with open_mask(tiff255) as m:
        assert m.binary_255
        assert set(np.unique(np.asarray(m.levels[0])).tolist()) == {0, 1}
        assert all(not nat or lv.dtype == np.uint8 for lv, nat in zip(m.levels, m.metadata.level_native, strict=False))
        assert m.levels[-1].ndim == 2  # computed levels stay labels (nearest sampling)
        assert set(np.unique(np.asarray(m.levels[-1])).tolist()) <= {0, 1}


def test_uint16_mask_and_rgb_mask_take_first_channel(tmp_path: Path) -> None:
    lab = (np.arange(64 * 64).reshape(64, 64) % 700).astype(np.uint16)
    tifffile.imwrite(tmp_path / "u16.tif", lab)
    with open_mask(tmp_path / "u16.tif") as m:
        assert m.levels[0].dtype == np.uint16
        np.testing.assert_array_equal(np.asarray(m.levels[0]), lab)


def test_aspect_mismatch_is_refused(tmp_path: Path, synthetic_slide: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad_mask.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(bad)  # square vs 1024 x 1536
    with open_slide(synthetic_slide[0]) as s, open_mask(bad) as m:
        with pytest.raises(SlideOpenError, match="aspect ratios differ"):
            mask_scale_for(s, m)
    ok = tmp_path / "ok_mask.png"
    Image.fromarray(np.zeros((101, 153), np.uint8)).save(ok)  # rounding: within 1 px
    with open_slide(synthetic_slide[0]) as s, open_mask(ok) as m:
        sy, sx = mask_scale_for(s, m)
        assert sy == pytest.approx(1024 / 101) and sx == pytest.approx(1536 / 153)


def test_glas_image_with_mask(shared_data: Path) -> None:
    img = shared_data / "glas_gland_segmentation" / "images" / "train_1.png"
    mask = find_ground_truth(img)
    assert mask == shared_data / "glas_gland_segmentation" / "labels" / "train_1.png"
    with open_slide(img) as s, open_mask(mask) as m:
        assert m.binary_255 and m.shape == s.shape
        assert set(np.unique(np.asarray(m.levels[0])).tolist()) == {0, 1}
        assert mask_scale_for(s, m) == (1.0, 1.0)


def test_ome_zarr_label_mask(tmp_path: Path) -> None:
    import zarr

    lab = np.zeros((300, 400), np.uint8)
    lab[50:100, 60:200] = 3
    root = zarr.open_group(str(tmp_path / "m.ome.zarr"), mode="w", zarr_format=3)
    arr = root.create_array("0", shape=lab.shape, chunks=(128, 128), dtype=lab.dtype)
    arr[:] = lab
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 2.0]}]}],
    }]}
    with open_mask(tmp_path / "m.ome.zarr") as m:
        assert m.levels[0].dtype == np.uint8 and m.levels[0].chunksize == (128, 128)
        np.testing.assert_array_equal(np.asarray(m.levels[0]), lab)
        assert m.mpp == pytest.approx((2.0, 2.0))
