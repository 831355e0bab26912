"""Every OME-Zarr the io writers produce is valid NGFF 0.4 / 0.5 for third-party readers
(ome_zarr_models, ome-zarr-py), with the spec's per-level transforms, and one completeness
rule holds for stores with and without napari-histo's attributes."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_histo.io.ome_zarr import (
    create_ome_zarr,
    is_complete,
    level0_placement,
    multiscales,
    open_ome_zarr,
    write_ome_zarr,
)
from napari_histo.io.ome_zarr._ngff import level_transforms, relevel
from napari_histo.io.slide import open_slide

NGFF = ["0.4", "0.5"]


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(13)
    if kind == "labels":
        return rng.integers(0, 4, (600, 520)).astype(np.uint8)
    if kind == "rgb":
        return rng.integers(0, 256, (600, 520, 3)).astype(np.uint8)
    return rng.random((600, 520)).astype(np.float32)


@pytest.mark.parametrize("ngff", NGFF)
@pytest.mark.parametrize("kind", ["labels", "rgb", "heatmap"])
def test_write_ome_zarr_validates(tmp_path: Path, ngff: str, kind: str, ngff_check) -> None:
    path = tmp_path / f"{kind}.ome.zarr"
    write_ome_zarr(path, _data(kind), mpp=(0.25, 0.5), kind="labels" if kind == "labels"
                   else "image", chunks=128, ngff_version=ngff)
    scale, trans = ngff_check.store(path, ngff, labels=kind == "labels")
    assert scale == pytest.approx((0.25, 0.5)) and trans == (0.0, 0.0)
    store = open_ome_zarr(path)
    assert store.n_levels == 3 and store.version == ngff and is_complete(path)
    # level 2 (factor 4): first pixel centred on level-0 pixels 0..3, i.e. 1.5 px in
    tr = store.multiscales["datasets"][2]["coordinateTransformations"][1]["translation"]
    assert tr[-2:] == pytest.approx([1.5 * 0.25, 1.5 * 0.5])


@pytest.mark.parametrize("ngff", NGFF)
def test_streamed_store_validates(tmp_path: Path, ngff: str, ngff_check) -> None:
    lab = _data("labels")
    store = create_ome_zarr(tmp_path / "s.ome.zarr", lab.shape, np.uint8, chunks=128,
                            kind="labels", ngff_version=ngff)
    for y in range(0, lab.shape[0], 128):
        for x in range(0, lab.shape[1], 128):
            store.write_block(y, x, lab[y : y + 128, x : x + 128])
    store.build_pyramid()
    assert not is_complete(store.path)  # valid NGFF, but its writer has not finished
    store.mark_complete()
    assert ngff_check.store(store.path, ngff, labels=True) == ((1.0, 1.0), (0.0, 0.0))
    assert is_complete(store.path)


def test_dask_and_unknown_mpp_is_pixel_space(tmp_path: Path, ngff_check) -> None:
    path = write_ome_zarr(tmp_path / "px.ome.zarr", da.from_array(_data("heatmap"), chunks=100),
                          kind="image", chunks=128)
    ms = zarr.open_group(str(path), mode="r").attrs["multiscales"][0]
    assert all("unit" not in a for a in ms["axes"])
    assert ngff_check.store(path, "0.4") == ((1.0, 1.0), (0.0, 0.0))
    assert open_ome_zarr(path).mpp is None


def test_level_transforms_follow_the_spec() -> None:
    assert level_transforms((0.5, 0.25), (10.0, 20.0), 1.0) == ([0.5, 0.25], [10.0, 20.0])
    assert level_transforms((0.5, 0.25), (10.0, 20.0), 4.0) == ([2.0, 1.0], [10.75, 20.375])
    ms = multiscales(3, channels=True, scale0=(0.5, 0.5), translation0=(1.0, 2.0),
                     unit="micrometer", name="x", version="0.4")
    last = ms["datasets"][2]["coordinateTransformations"]
    assert last == [{"type": "scale", "scale": [1.0, 2.0, 2.0]},
                    {"type": "translation", "translation": [0.0, 1.75, 2.75]}]
    # a one-level store grown later (streamed inference) gets the same transforms
    one = multiscales(1, channels=True, scale0=(0.5, 0.5), translation0=(1.0, 2.0),
                      unit="micrometer", name="x", version="0.4")
    assert relevel(one, 3)["datasets"] == ms["datasets"]
    assert level0_placement(ms, 3) == ((0.5, 0.5), (1.0, 2.0))


@pytest.mark.parametrize("ngff", NGFF)
def test_is_complete_one_rule(tmp_path: Path, ngff: str) -> None:
    """Complete = NGFF image with every level, and our flag set when our attrs are there."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    foreign = tmp_path / "foreign.ome.zarr"
    fmt = FormatV04() if ngff == "0.4" else FormatV05()
    group = zarr.open_group(str(foreign), mode="w", zarr_format=2 if ngff == "0.4" else 3)
    write_image(_data("heatmap"), group, axes="yx", fmt=fmt)
    assert is_complete(foreign)  # another tool's store: written whole
    assert open_ome_zarr(foreign).n_levels >= 2
    ours = create_ome_zarr(tmp_path / "ours.ome.zarr", (300, 300), np.uint8, ngff_version=ngff)
    assert not is_complete(ours.path)
    ours.mark_complete()
    assert is_complete(ours.path)
    (tmp_path / "plain").mkdir()
    assert not is_complete(tmp_path / "plain") and not is_complete(tmp_path / "missing")


@pytest.mark.parametrize("ngff", NGFF)
def test_rgb_store_opens_as_slide_placed_like_ngff(tmp_path: Path, ngff: str) -> None:
    path = write_ome_zarr(tmp_path / "rgb.ome.zarr", _data("rgb"), mpp=0.5, kind="image",
                          chunks=128, ngff_version=ngff)
    with open_slide(path) as slide:
        assert slide.metadata.mpp == pytest.approx((0.5, 0.5))
        assert slide.metadata.level_shapes[:3] == ((600, 520), (300, 260), (150, 130))
        assert slide.metadata.level_downsamples_yx[1] == pytest.approx((2.0, 2.0))
        np.testing.assert_array_equal(np.asarray(slide.levels[0]), _data("rgb"))
