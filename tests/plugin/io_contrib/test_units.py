"""Every layer the plugin reads or writes is in the slide's units (issue 11, point 4), and
the Pixel size widget places a slide without one (point 3), through real viewers and files.

napari drops the scale bar and shows "Inconsistent units across layers" when one layer is in
``pixel`` and another in ``um``: :func:`_unit_warnings` runs napari's own check and collects
what it would show.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-histo"
CMU = "CMU-1-Small-Region.svs"
TCGA = "tcga-cr-7395-01a-01-ts1.svs"
#: a known region of CMU-1-Small-Region (level-0 px, y0, y1, x0, x1)
BOX = (1000, 1400, 600, 900)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Remembered pixel sizes go to a fresh user folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("NAPARI_HISTO_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _canvas_warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Everything napari's canvas shows about units during the test."""
    import napari._vispy.canvas as canvas_mod

    shown: list[str] = []
    monkeypatch.setattr(canvas_mod, "show_warning", lambda msg: shown.append(str(msg)))
    return shown


def _unit_warnings(viewer, shown: list[str]) -> list[str]:
    """napari's warning text, shown by the canvas or due (its own check: no common units)."""
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # let the canvas draw and run its check
    out = [m for m in shown if "Inconsistent units" in m]
    if viewer.layers.extent.units is None:
        out.append("Inconsistent units across layers; units will not be used for rendering.")
    return out


def _assert_one_unit(viewer, shown: list[str], unit: str = "micrometer") -> None:
    for layer in viewer.layers:
        assert [str(u) for u in layer.units[-2:]] == [unit, unit], layer.name
    assert viewer.layers.extent.units is not None
    assert _unit_warnings(viewer, shown) == []


def _box_labels(viewer, slide_layer):
    """A Labels layer over the slide (level-0 grid, the slide's scale/units) with BOX set."""
    h, w = slide_layer.level_shapes[0][:2]
    data = np.zeros((h, w), dtype=np.uint8)
    y0, y1, x0, x1 = BOX
    data[y0:y1, x0:x1] = 1
    return viewer.add_labels(data, scale=slide_layer.scale, units=slide_layer.units,
                             name="drawn tumor")


def _world_bounds(shapes) -> np.ndarray:
    pts = np.vstack([np.array([shapes.data_to_world(v) for v in poly]) for poly in shapes.data])
    return np.array([pts.min(axis=0), pts.max(axis=0)])


def _expected_bounds(slide_layer) -> np.ndarray:
    """World corners of BOX's pixels (napari centres pixel i at i * scale)."""
    s = np.asarray(slide_layer.scale[-2:], dtype=float)
    y0, y1, x0, x1 = BOX
    return np.array([[(y0 - 0.5) * s[0], (x0 - 0.5) * s[1]],
                     [(y1 - 0.5) * s[0], (x1 - 0.5) * s[1]]])


def test_geojson_round_trip_lands_on_same_tissue(
    make_napari_viewer, shared_data: Path, tmp_path: Path, _canvas_warnings: list[str]
) -> None:
    """Labels saved through the writer reopen (no slide beside them) on the same tissue."""
    viewer = make_napari_viewer()
    (slide,) = viewer.open(shared_data / "wsi" / CMU, plugin=PLUGIN)
    labels = _box_labels(viewer, slide)
    out = tmp_path / "elsewhere" / "tumor.geojson"
    out.parent.mkdir()
    (written,) = labels.save(str(out), plugin=PLUGIN)
    viewer.layers.remove(labels)
    (shapes,) = viewer.open(written, plugin=PLUGIN)
    _assert_one_unit(viewer, _canvas_warnings)
    px = float(slide.scale[-1])
    np.testing.assert_allclose(_world_bounds(shapes), _expected_bounds(slide), atol=px)


def test_annotations_open_in_um_and_prediction_keeps_units(
    make_napari_viewer, shared_data: Path, tmp_path: Path, _canvas_warnings: list[str]
) -> None:
    """Slide + GeoJSON + ASAP XML + a saved prediction store: one unit, no warning."""
    wsi = tmp_path / "wsi"
    wsi.mkdir()
    slide_path = wsi / CMU
    shutil.copy(shared_data / "wsi" / CMU, slide_path)
    viewer = make_napari_viewer()
    (slide,) = viewer.open(slide_path, plugin=PLUGIN)
    labels = _box_labels(viewer, slide)
    geo = wsi / "CMU-1-Small-Region.geojson"  # beside the slide, with its stem
    labels.save(str(geo), plugin=PLUGIN)
    store = tmp_path / "pred.ome.zarr"
    labels.save(str(store), plugin=PLUGIN)
    viewer.layers.remove(labels)
    (shapes,) = viewer.open(geo, plugin=PLUGIN)
    np.testing.assert_allclose(_world_bounds(shapes), _expected_bounds(slide),
                               atol=float(slide.scale[-1]))
    # an ASAP XML from elsewhere (CAMELYON coordinates: level-0 pixels, no slide beside it)
    xml = tmp_path / "tumor_064.xml"
    shutil.copy(shared_data / "camelyon16_annotations" / "tumor_064.xml", xml)
    viewer.open(xml, plugin=PLUGIN)
    viewer.open(store, plugin=PLUGIN)
    _assert_one_unit(viewer, _canvas_warnings)


def test_new_shapes_button_on_the_slide_has_its_units(
    make_napari_viewer, shared_data: Path, _canvas_warnings: list[str]
) -> None:
    """napari's "new Shapes/Points layer" with the slide selected: no warning at all."""
    from napari._app_model.actions._file import new_points, new_shapes

    viewer = make_napari_viewer()
    (slide,) = viewer.open(shared_data / "wsi" / CMU, plugin=PLUGIN)
    viewer.layers.selection.active = slide
    new_shapes(viewer)
    new_points(viewer)
    assert len(viewer.layers) == 3
    _assert_one_unit(viewer, _canvas_warnings)


def test_drawn_shapes_take_the_slide_units(
    make_napari_viewer, shared_data: Path, _canvas_warnings: list[str]
) -> None:
    """A Shapes/Points layer made in pixels (nothing selected, or from the console) is put
    in microns as it is inserted, before napari's canvas draws it, so the scale bar stays
    and napari never says "Inconsistent units"."""
    viewer = make_napari_viewer()
    viewer.open(shared_data / "wsi" / CMU, plugin=PLUGIN)
    viewer.layers.selection.clear()
    shapes = viewer.add_shapes(name="my region")  # napari's default: pixel units
    points = viewer.add_points(name="my points")
    assert _canvas_warnings == []
    _assert_one_unit(viewer, _canvas_warnings)
    assert tuple(shapes.scale) == (1.0, 1.0) and tuple(points.scale) == (1.0, 1.0)
    shapes.add_rectangles(np.array([[100.0, 100.0], [200.0, 300.0]]))  # drawn in um
    _assert_one_unit(viewer, _canvas_warnings)


def test_annotations_opened_before_the_slide_follow_it(
    make_napari_viewer, shared_data: Path, _canvas_warnings: list[str]
) -> None:
    viewer = make_napari_viewer()
    (shapes,) = viewer.open(shared_data / "camelyon16_annotations" / "tumor_064.xml",
                            plugin=PLUGIN)
    first = shapes.data_to_world(shapes.data[0][0])
    (slide,) = viewer.open(shared_data / "wsi" / CMU, plugin=PLUGIN)
    _assert_one_unit(viewer, _canvas_warnings)
    np.testing.assert_allclose(shapes.data_to_world(shapes.data[0][0]),
                               np.asarray(first) * float(slide.scale[-1]), rtol=1e-6)


def test_pixel_size_widget_sets_scale_and_is_remembered(
    make_napari_viewer, shared_data: Path, tmp_path: Path, _canvas_warnings: list[str]
) -> None:
    from napari_histo.core.settings import remembered_pixel_size
    from napari_histo.plugin._pixel_size import PixelSizeWidget

    src = tmp_path / TCGA
    shutil.copy(shared_data / "wsi" / TCGA, src)
    viewer = make_napari_viewer()
    (slide,) = viewer.open(src, plugin=PLUGIN)
    assert [str(u) for u in slide.units] == ["pixel", "pixel"]
    drawn = viewer.add_shapes([np.array([[100, 100], [100, 300], [300, 300], [300, 100]])],
                              name="region")
    before = _world_bounds(drawn)
    widget = PixelSizeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._image_combo.value = slide
    assert "no pixel size" in widget._info.value
    widget._mpp_spin.value = 0.25
    widget._apply_button.clicked.emit()
    np.testing.assert_allclose(slide.scale, (0.25, 0.25))
    _assert_one_unit(viewer, _canvas_warnings)
    np.testing.assert_allclose(_world_bounds(drawn), before * 0.25)  # same tissue
    assert remembered_pixel_size(src) == pytest.approx(0.25)
    assert "0.25 um/px" in widget._info.value

    # every widget reads it: the writer's mpp and Segment's resolution
    from napari_histo.plugin._segment_widget import SegmentWidget
    from napari_histo.plugin._writer import layer_mpp

    assert layer_mpp({"scale": slide.scale, "units": [str(u) for u in slide.units]}) == (
        pytest.approx(0.25), pytest.approx(0.25))
    assert SegmentWidget._resolution_for(str(src), slide) == {"slide_mpp": pytest.approx(0.25)}

    # reopening the file applies it
    viewer2 = make_napari_viewer()
    (again,) = viewer2.open(src, plugin=PLUGIN)
    np.testing.assert_allclose(again.scale, (0.25, 0.25))
    assert [str(u) for u in again.units] == ["micrometer", "micrometer"]
    assert again.metadata["napari_histo"]["mpp_source"] == "user"

    # back to pixels forgets it
    widget._pixels_button.clicked.emit()
    np.testing.assert_allclose(slide.scale, (1.0, 1.0))
    _assert_one_unit(viewer, _canvas_warnings, unit="pixel")
    assert remembered_pixel_size(src) is None


def test_pixel_size_moves_the_glas_mask_too(
    make_napari_viewer, shared_data: Path, tmp_path: Path, _canvas_warnings: list[str]
) -> None:
    from napari_histo.plugin._pixel_size import apply_pixel_size

    glas = tmp_path / "glas"
    (glas / "images").mkdir(parents=True)
    (glas / "labels").mkdir()
    src = shared_data / "glas_gland_segmentation"
    shutil.copy(src / "images" / "train_1.png", glas / "images" / "train_1.png")
    shutil.copy(src / "labels" / "train_1.png", glas / "labels" / "train_1.png")
    viewer = make_napari_viewer()
    image, mask = viewer.open(glas / "images" / "train_1.png", plugin=PLUGIN)
    apply_pixel_size(viewer, image, 0.62)
    _assert_one_unit(viewer, _canvas_warnings)
    np.testing.assert_allclose(mask.scale, image.scale)  # the GlaS mask has the image's grid
    assert mask.metadata["napari_histo"]["slide_scale"] == pytest.approx([0.62, 0.62])
    # reopened: the image and its mask both in microns at the remembered size
    viewer2 = make_napari_viewer()
    image2, mask2 = viewer2.open(glas / "images" / "train_1.png", plugin=PLUGIN)
    np.testing.assert_allclose(image2.scale, (0.62, 0.62))
    np.testing.assert_allclose(mask2.scale, image2.scale)
    _assert_one_unit(viewer2, _canvas_warnings)


def test_file_mpp_is_not_overridden(make_napari_viewer, shared_data: Path) -> None:
    from napari_histo.plugin._pixel_size import apply_pixel_size

    viewer = make_napari_viewer()
    (slide,) = viewer.open(shared_data / "wsi" / CMU, plugin=PLUGIN)
    with pytest.raises(ValueError, match="pixel size in its file"):
        apply_pixel_size(viewer, slide, 0.25)


def test_segment_says_when_the_slide_has_no_pixel_size(
    make_napari_viewer, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import napari.utils.notifications as notes

    from napari_histo.plugin._segment_widget import SegmentWidget

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_warning", lambda msg: shown.append(str(msg)))
    viewer = make_napari_viewer()
    src = shared_data / "wsi" / TCGA
    (slide,) = viewer.open(src, plugin=PLUGIN)
    assert SegmentWidget._resolution_for(str(src), slide) == {"level": 0}
    assert len(shown) == 1 and "no pixel size" in shown[0] and "Pixel size" in shown[0]


def test_drawn_shapes_round_trip_through_geojson(
    make_napari_viewer, shared_data: Path, tmp_path: Path, _canvas_warnings: list[str]
) -> None:
    """A rectangle drawn in microns, saved as GeoJSON and reopened, covers the same tissue;
    saving the reopened annotations again gives the same file coordinates."""
    import json

    viewer = make_napari_viewer()
    (slide,) = viewer.open(shared_data / "wsi" / CMU, plugin=PLUGIN)
    viewer.layers.selection.active = slide
    s = float(slide.scale[-1])
    y0, y1, x0, x1 = BOX
    # the outline of BOX's pixels in world microns
    rect = np.array([[(y0 - 0.5) * s, (x0 - 0.5) * s], [(y1 - 0.5) * s, (x1 - 0.5) * s]])
    drawn = viewer.add_shapes([rect], shape_type="rectangle", units=slide.units, name="drawn")
    out = tmp_path / "drawn.geojson"
    drawn.save(str(out), plugin=PLUGIN)
    coords = np.asarray(json.loads(out.read_text())["features"][0]["geometry"]["coordinates"][0])
    np.testing.assert_allclose(coords.min(axis=0), (x0, y0), atol=1.0)  # level-0 px (x, y)
    np.testing.assert_allclose(coords.max(axis=0), (x1, y1), atol=1.0)
    (shapes,) = viewer.open(out, plugin=PLUGIN)
    _assert_one_unit(viewer, _canvas_warnings)
    np.testing.assert_allclose(_world_bounds(shapes), _world_bounds(drawn), atol=s)
    again = tmp_path / "again.geojson"
    shapes.save(str(again), plugin=PLUGIN)
    coords2 = np.asarray(json.loads(again.read_text())["features"][0]["geometry"]["coordinates"][0])
    np.testing.assert_allclose(coords2.min(axis=0), coords.min(axis=0), atol=1.0)
    np.testing.assert_allclose(coords2.max(axis=0), coords.max(axis=0), atol=1.0)


def test_remembered_pixel_sizes_survive_a_broken_file(_home: Path, tmp_path: Path) -> None:
    from napari_histo.core.settings import (
        pixel_sizes_file,
        remember_pixel_size,
        remembered_pixel_size,
    )

    slide = tmp_path / "a.svs"
    pixel_sizes_file().parent.mkdir(parents=True)
    pixel_sizes_file().write_text("{not json", encoding="utf-8")
    assert remembered_pixel_size(slide) is None
    remember_pixel_size(slide, 0.5)
    assert remembered_pixel_size(tmp_path / "." / "a.svs") == 0.5  # same file, other spelling
    remember_pixel_size(slide, None)
    assert remembered_pixel_size(slide) is None
