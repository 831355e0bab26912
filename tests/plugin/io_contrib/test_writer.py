"""Writer contributions: layers saved through napari, reopened, compared."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-histo"


def _labels_pyramid() -> list[da.Array]:
    """A 3-level dask label pyramid (each level half the previous), two classes."""
    lab = np.zeros((512, 768), dtype=np.uint8)
    lab[64:192, 96:320] = 1
    lab[300:420, 500:700] = 2
    return [da.from_array(lab[:: 2**k, :: 2**k], chunks=128) for k in range(3)]


def test_labels_round_trip_ome_zarr(make_napari_viewer, tmp_path: Path) -> None:
    from napari_histo.io.ome_zarr import open_ome_zarr

    viewer = make_napari_viewer()
    levels = _labels_pyramid()
    layer = viewer.add_labels(levels, multiscale=True, scale=(2.0, 2.0), units="um", name="lab")
    out = tmp_path / "lab.ome.zarr"
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert written == [str(out)]
    store = open_ome_zarr(out, require_complete=True)
    assert store.kind == "labels"
    np.testing.assert_allclose(store.mpp, (2.0, 2.0))
    assert store.n_levels == 3
    for k in range(3):
        np.testing.assert_array_equal(np.asarray(store.levels[k]), np.asarray(levels[k]))

    # and napari-histo reads it back as a Labels layer at the same physical scale
    (back,) = viewer.open(out, plugin=PLUGIN)
    assert type(back).__name__ == "Labels"
    np.testing.assert_allclose(back.scale, (2.0, 2.0))
    data0 = back.data[0] if back.multiscale else back.data
    np.testing.assert_array_equal(np.asarray(data0), np.asarray(levels[0]))


def test_image_round_trip_ome_zarr_and_tiff(
    make_napari_viewer, synthetic_slide: Path, slide_spec, tmp_path: Path
) -> None:
    """A multiscale dask-backed slide layer saved as OME-Zarr and OME-TIFF reopens equal."""
    viewer = make_napari_viewer()
    layers = viewer.open(synthetic_slide, plugin=PLUGIN)
    image = layers[0]
    assert image.multiscale
    src0 = np.asarray(image.data[0])
    for name in ("slide.ome.zarr", "slide.ome.tif"):
        out = tmp_path / name
        viewer.layers.selection = {image}
        written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
        assert written == [str(out)]
        back = viewer.open(out, plugin=PLUGIN)[0]
        assert type(back).__name__ == "Image" and back.rgb
        np.testing.assert_allclose(back.scale, (slide_spec.mpp, slide_spec.mpp), rtol=1e-6)
        got = np.asarray(back.data[0] if back.multiscale else back.data)
        np.testing.assert_array_equal(got, src0)  # lossless writers
        assert back.multiscale
        viewer.layers.remove(back)


def test_labels_ome_tiff_round_trip(make_napari_viewer, tmp_path: Path) -> None:
    import tifffile

    viewer = make_napari_viewer()
    levels = _labels_pyramid()
    layer = viewer.add_labels(levels[0], scale=(0.25, 0.25), units="um", name="lab")
    viewer.layers.selection = {layer}
    out = tmp_path / "lab.ome.tif"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN) == [str(out)]
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert len(series.levels) >= 2
        np.testing.assert_array_equal(series.levels[0].asarray(), np.asarray(levels[0]))
        xres = tif.pages[0].tags["XResolution"].value
        assert abs(1e4 * xres[1] / xres[0] - 0.25) < 1e-6


@pytest.mark.parametrize("origin", ["ground_truth", "prediction"])
def test_labels_to_geojson_in_slide_pixels(make_napari_viewer, tmp_path: Path, origin) -> None:
    """A labels layer at 1/4 of the slide's resolution (reader ground truth, or a prediction
    made by the widgets) exports polygons in slide level-0 pixels, which read back rasterize
    to the same mask."""
    from napari_histo.io.annotations import rasterize_annotations, read_annotations
    from napari_histo.plugin._layers import mask_layer_data

    mask = np.zeros((64, 96), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    data, kwargs, _ = mask_layer_data(
        mask, slide_shape=(256, 384), slide_scale=(0.5, 0.5), name="gt"
    )
    if origin == "prediction":  # what plugin._result_layers puts on its layers
        kwargs["metadata"] = {"napari_histo": {"downsample": [4.0, 4.0], "offset_px": [0, 0]}}
    viewer = make_napari_viewer()
    layer = viewer.add_labels(data, **kwargs)
    viewer.layers.selection = {layer}
    out = tmp_path / "gt.geojson"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN) == [str(out)]
    obj = json.loads(out.read_text())
    assert obj["type"] == "FeatureCollection" and len(obj["features"]) == 1
    xs = [p[0] for p in obj["features"][0]["geometry"]["coordinates"][0]]
    ys = [p[1] for p in obj["features"][0]["geometry"]["coordinates"][0]]
    # mask pixels 20..50 x 10..30 at downsample 4 -> slide pixels 80..200 x 40..120
    assert min(xs) == pytest.approx(80, abs=2.5) and max(xs) == pytest.approx(200, abs=2.5)
    assert min(ys) == pytest.approx(40, abs=2.5) and max(ys) == pytest.approx(120, abs=2.5)
    anns = read_annotations(out)
    back = rasterize_annotations(anns, (64, 96), downsample=4.0)
    assert (back != mask).sum() <= 0.05 * mask.sum()


def test_writer_functions_direct(tmp_path: Path) -> None:
    """The contribution functions work without a viewer (what napari calls)."""
    from napari_histo.io.ome_zarr import open_ome_zarr
    from napari_histo.plugin._writer import layer_mpp, write_labels_zarr

    attrs = {"name": "m", "scale": (1.0, 1.0), "units": ("pixel", "pixel"), "metadata": {}}
    assert layer_mpp(attrs) is None
    assert layer_mpp({"scale": (0.5, 0.25), "units": ("um", "um")}) == (0.5, 0.25)
    assert layer_mpp({"scale": (0.5, 0.5), "units": ("mm", "mm")}) == (500.0, 500.0)
    lab = np.zeros((100, 130), dtype=np.int32)
    lab[5:50, 7:70] = 3
    out = write_labels_zarr(str(tmp_path / "m.zarr"), lab, attrs)
    store = open_ome_zarr(out[0])
    assert store.mpp is None
    np.testing.assert_array_equal(np.asarray(store.levels[0]), lab.astype(np.uint32))


def test_geojson_geometry_for_lower_levels() -> None:
    """Tracing level k of a multiscale layer scales coordinates by its downsample."""
    from napari_histo.plugin._writer import geojson_geometry

    attrs = {
        "scale": (2.0, 2.0),
        "translate": (0.75, 0.75),
        "metadata": {"napari_histo": {"slide_scale": [0.5, 0.5]}},
    }
    d0, o0 = geojson_geometry(attrs, (100, 100), (100, 100))
    d2, o2 = geojson_geometry(attrs, (25, 25), (100, 100))
    assert d0 == pytest.approx(4.0) and d2 == pytest.approx(16.0)
    assert o0 == pytest.approx((0.0, 0.0)) and o2 == o0
    # a plain pixel-space layer: its own pixels are level-0 pixels, translate kept
    d, o = geojson_geometry({"scale": (1, 1), "translate": (10, 20)}, (8, 8), (8, 8))
    assert d == 1.0 and o == pytest.approx((10.0, 20.0))
