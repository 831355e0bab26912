"""Pure conversions of plugin._layers: io objects -> LayerDataTuple, no viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._layers import (
    annotations_layer_data,
    extent_aligned_placement,
    layer_placement,
    mask_layer_data,
    slide_layer_data,
)


def test_layer_placement_units() -> None:
    assert layer_placement((0.25, 0.3)) == ((0.25, 0.3), ("um", "um"))
    assert layer_placement(None) == ((1.0, 1.0), ("pixel", "pixel"))
    assert layer_placement((0.0, 0.5)) == ((1.0, 1.0), ("pixel", "pixel"))
    assert layer_placement((float("nan"), 0.5))[1] == ("pixel", "pixel")


@pytest.mark.parametrize(
    ("big", "small"), [((1000, 3000), (250, 750)), ((775, 522), (775, 522)), ((97, 45), (13, 7))]
)
def test_extent_aligned_placement_matches_edges(big, small) -> None:
    slide_scale = (0.5, 0.25)
    scale, translate = extent_aligned_placement(big, slide_scale, small)
    for ax in range(2):
        lo_big = -0.5 * slide_scale[ax]
        hi_big = (big[ax] - 0.5) * slide_scale[ax]
        lo = translate[ax] - 0.5 * scale[ax]
        hi = translate[ax] + (small[ax] - 0.5) * scale[ax]
        assert lo == pytest.approx(lo_big) and hi == pytest.approx(hi_big)


def test_slide_layer_data_from_real_slide(synthetic_slide: Path, slide_spec) -> None:
    from napari_histo.io.slide import open_slide

    slide = open_slide(synthetic_slide)
    data, kwargs, kind = slide_layer_data(slide)
    assert kind == "image"
    assert isinstance(data, list) and len(data) == 3
    assert kwargs["multiscale"] and kwargs["rgb"]
    assert kwargs["contrast_limits"] == (0, 255)
    assert kwargs["scale"] == pytest.approx((slide_spec.mpp, slide_spec.mpp))
    assert kwargs["units"] == ("um", "um")
    histo = kwargs["metadata"]["napari_histo"]
    assert histo["source"] == str(synthetic_slide)
    assert histo["level_shapes"][0] == list(slide_spec.shape)
    # lazy: nothing was computed to build the tuple
    import dask.array as da

    assert all(isinstance(level, da.Array) for level in data)


def test_mask_layer_data_multiscale_and_dtype() -> None:
    import dask.array as da

    lv0 = da.zeros((400, 600), dtype=np.int64, chunks=100)
    lv1 = da.zeros((200, 300), dtype=np.int64, chunks=100)
    data, kwargs, kind = mask_layer_data(
        [lv0, lv1], slide_shape=(1600, 2400), slide_scale=(0.25, 0.25), name="x ground truth"
    )
    assert kind == "labels" and kwargs["multiscale"] and len(data) == 2
    assert kwargs["scale"] == pytest.approx((1.0, 1.0))
    assert kwargs["translate"] == pytest.approx((0.375, 0.375))
    assert kwargs["colormap"][1][0] > 0.8  # tumor red
    assert kwargs["colormap"][0][3] == 0  # background transparent
    assert kwargs["metadata"]["napari_histo"]["slide_scale"] == [0.25, 0.25]
    # an RGB-encoded mask keeps one channel, a boolean mask becomes uint8
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    d, _, _ = mask_layer_data(rgb, slide_shape=(10, 10), slide_scale=(1, 1), name="m")
    assert d.shape == (10, 10)
    d, _, _ = mask_layer_data(
        np.zeros((4, 4), bool), slide_shape=(4, 4), slide_scale=(1, 1), name="m"
    )
    assert d.dtype == np.uint8


def test_annotations_layer_data_groups_and_microns() -> None:
    from napari_histo.io.annotations import parse_asap_xml

    xml = (
        b"<ASAP_Annotations><Annotations>"
        b'<Annotation Name="T" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        b'<Coordinate Order="0" X="10" Y="20"/><Coordinate Order="1" X="30" Y="20"/>'
        b'<Coordinate Order="2" X="30" Y="40"/></Coordinates></Annotation>'
        b'<Annotation Name="E" Type="Polygon" PartOfGroup="_2"><Coordinates>'
        b'<Coordinate Order="0" X="12" Y="22"/><Coordinate Order="1" X="14" Y="22"/>'
        b'<Coordinate Order="2" X="14" Y="24"/></Coordinates></Annotation>'
        b"</Annotations></ASAP_Annotations>"
    )
    anns = parse_asap_xml(xml)
    polys, kwargs, kind = annotations_layer_data(anns, mpp=(0.25, 0.25), name="a")
    assert kind == "shapes" and len(polys) == 2
    np.testing.assert_allclose(polys[0][0], (20 * 0.25, 10 * 0.25))
    assert kwargs["units"] == ("um", "um")
    assert kwargs["features"]["kind"] == ["tumor", "exclusion"]
    assert kwargs["features"]["group"] == ["_0", "_2"]
    assert not np.allclose(kwargs["edge_color"][0], kwargs["edge_color"][1])
    # pixel corners on integers -> napari pixel centres: half a pixel
    assert kwargs["translate"] == pytest.approx((-0.125, -0.125))
    polys_px, kw_px, _ = annotations_layer_data(anns, mpp=None, name="a")
    np.testing.assert_allclose(polys_px[0][0], (20, 10))
    assert kw_px["units"] == ("pixel", "pixel")


def test_slide_without_mpp_is_placed_in_pixels(plain_slide: Path) -> None:
    from napari_histo.io.slide import open_slide

    data, kwargs, _ = slide_layer_data(open_slide(plain_slide))
    assert kwargs["scale"] == (1.0, 1.0)
    assert kwargs["units"] == ("pixel", "pixel")
    assert kwargs["metadata"]["mpp"] is None
    assert kwargs["multiscale"] and len(data) >= 2
