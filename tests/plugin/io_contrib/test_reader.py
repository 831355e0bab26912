"""Reader contribution through real napari viewers (``viewer.open(..., plugin="napari-histo")``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._reader import get_reader

pytestmark = pytest.mark.gui

PLUGIN = "napari-histo"


def _world_extent(layer) -> tuple[np.ndarray, np.ndarray]:
    """(min corner, max corner) of the layer's pixels in world units (y, x)."""
    shape = np.asarray(layer.level_shapes[0][:2] if layer.multiscale else layer.data.shape[:2])
    scale = np.asarray(layer.scale[-2:], dtype=float)
    translate = np.asarray(layer.translate[-2:], dtype=float)
    lo = translate - 0.5 * scale
    hi = translate + (shape - 0.5) * scale
    return lo, hi


def test_open_synthetic_pyramid_with_mask(
    make_napari_viewer, synthetic_slide: Path, slide_spec
) -> None:
    MPP, SLIDE_SHAPE = slide_spec.mpp, slide_spec.shape
    MASK_DOWNSAMPLE, TUMOR_BOX = slide_spec.mask_downsample, slide_spec.tumor_box
    viewer = make_napari_viewer()
    layers = viewer.open(synthetic_slide, plugin=PLUGIN)
    kinds = {type(layer).__name__ for layer in layers}
    assert {"Image", "Labels"} <= kinds
    image = next(layer for layer in layers if type(layer).__name__ == "Image")
    labels = next(layer for layer in layers if type(layer).__name__ == "Labels")

    assert image.multiscale and image.rgb
    assert len(image.data) == 3
    assert tuple(image.data[0].shape) == (*SLIDE_SHAPE, 3)
    assert tuple(image.contrast_limits) == (0, 255)
    np.testing.assert_allclose(image.scale, (MPP, MPP))
    assert all(str(u) == "micrometer" for u in image.units)
    assert image.metadata["source"] == str(synthetic_slide)
    assert image.metadata["napari_histo"]["mpp"] == [MPP, MPP]
    assert image.metadata["mpp"] == [MPP, MPP]

    assert labels.name == "slide_a ground truth"
    assert 0.3 <= labels.opacity <= 0.5
    # same physical extent although the mask has 1/4 of the resolution
    lo_i, hi_i = _world_extent(image)
    lo_l, hi_l = _world_extent(labels)
    np.testing.assert_allclose(lo_l, lo_i, atol=1e-9)
    np.testing.assert_allclose(hi_l, hi_i, atol=1e-9)
    np.testing.assert_allclose(labels.scale, (MPP * MASK_DOWNSAMPLE,) * 2)
    # a world point inside the tumor box lands on label 1, one outside on 0
    y0, y1, x0, x1 = TUMOR_BOX
    inside = np.array([(y0 + y1) / 2, (x0 + x1) / 2]) * MPP
    outside = np.array([50, 50]) * MPP
    mask = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    for world, want in ((inside, 1), (outside, 0)):
        idx = np.round(labels.world_to_data(world)).astype(int)
        assert mask[tuple(idx)] == want
    # the tumor colour is red-ish
    rgba = labels.colormap.map(np.array([1]))[0]
    assert rgba[0] > 0.8 and rgba[1] < 0.3 and rgba[2] < 0.3


def test_open_real_svs(make_napari_viewer, shared_data: Path) -> None:
    viewer = make_napari_viewer()
    for svs in sorted((shared_data / "wsi").glob("*.svs")):
        viewer.layers.clear()  # one slide at a time: their units differ (um vs pixel)
        layers = viewer.open(svs, plugin=PLUGIN)
        image = layers[0]
        assert type(image).__name__ == "Image"
        assert image.rgb
        assert tuple(image.contrast_limits) == (0, 255)
        assert image.metadata["source"] == str(svs)
        level0 = image.data[0] if image.multiscale else image.data
        assert level0.dtype == np.uint8 and level0.shape[-1] == 3
        if svs.name == "CMU-1-Small-Region.svs":
            assert tuple(level0.shape[:2]) == (2967, 2220)  # (h, w)
            np.testing.assert_allclose(image.scale, (0.499, 0.499), atol=1e-3)
            assert all(str(u) == "micrometer" for u in image.units)
        else:  # TCGA JPEG 2000 slide: 2 levels, no mpp -> pixels
            assert image.multiscale and len(image.data) >= 2
            assert tuple(image.data[0].shape[:2]) == (3567, 4443)
            assert tuple(image.data[1].shape[:2]) == (1783, 2221)
            assert all(str(u) == "pixel" for u in image.units)
        # a level-0 region in the middle decodes to real tissue (not blank)
        cy, cx = level0.shape[0] // 2, level0.shape[1] // 2
        region = np.asarray(level0[cy - 128 : cy + 128, cx - 128 : cx + 128])
        assert region.std() > 1


def test_glas_image_opens_with_aligned_mask(make_napari_viewer, shared_data: Path) -> None:
    glas = shared_data / "glas_gland_segmentation"
    viewer = make_napari_viewer()
    layers = viewer.open(glas / "images" / "train_1.png", plugin=PLUGIN)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    image, labels = layers
    assert labels.name == "train_1 ground truth"
    lo_i, hi_i = _world_extent(image)
    lo_l, hi_l = _world_extent(labels)
    np.testing.assert_allclose(lo_l, lo_i, atol=1e-9)
    np.testing.assert_allclose(hi_l, hi_i, atol=1e-9)
    from PIL import Image as PILImage

    truth = np.asarray(PILImage.open(glas / "labels" / "train_1.png"))
    data = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert data.shape == truth.shape
    # foreground where the GlaS mask is 255, background where it is 0
    assert np.array_equal(data > 0, truth > 0)


def test_annotations_open_as_shapes(make_napari_viewer, shared_data: Path) -> None:
    xml = shared_data / "camelyon16_annotations" / "tumor_064.xml"
    viewer = make_napari_viewer()
    layers = viewer.open(xml, plugin=PLUGIN)
    assert len(layers) == 1
    shapes = layers[0]
    assert type(shapes).__name__ == "Shapes"
    assert shapes.name == "tumor_064 annotations"
    assert len(shapes.data) >= 35
    feats = shapes.features
    assert {"name", "group", "kind"} <= set(feats.columns)
    assert set(feats["group"]) == {"_0", "_2"}
    kinds = set(feats["kind"])
    assert {"tumor", "exclusion"} <= kinds
    # tumor and exclusion polygons are drawn in different colours
    tumor_edge = shapes.edge_color[np.flatnonzero(feats["kind"] == "tumor")[0]]
    excl_edge = shapes.edge_color[np.flatnonzero(feats["kind"] == "exclusion")[0]]
    assert not np.allclose(tumor_edge, excl_edge)
    # no slide next to it: level-0 pixel coordinates of tumor_064 (a ~100k x 200k slide)
    assert all(str(u) == "pixel" for u in shapes.units)
    top = max(float(np.max(poly[:, 1])) for poly in shapes.data)
    assert top > 10_000


def test_annotations_next_to_slide_are_in_microns(
    make_napari_viewer, synthetic_slide: Path, slide_spec, tmp_path: Path
) -> None:
    """An ASAP file with the slide's stem is placed in um using the slide's mpp."""
    MPP = slide_spec.mpp
    import shutil

    slide = tmp_path / "case.tif"
    shutil.copy(synthetic_slide, slide)
    xml = tmp_path / "case.xml"
    xml.write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        '<Annotation Name="A" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="0" X="100" Y="200"/><Coordinate Order="1" X="300" Y="200"/>'
        '<Coordinate Order="2" X="300" Y="400"/></Coordinates></Annotation>'
        '<Annotation Name="B" Type="Polygon" PartOfGroup="_2"><Coordinates>'
        '<Coordinate Order="0" X="150" Y="250"/><Coordinate Order="1" X="200" Y="250"/>'
        '<Coordinate Order="2" X="200" Y="300"/></Coordinates></Annotation>'
        "</Annotations></ASAP_Annotations>"
    )
    viewer = make_napari_viewer()
    (shapes,) = viewer.open(xml, plugin=PLUGIN)
    assert all(str(u) == "micrometer" for u in shapes.units)
    np.testing.assert_allclose(shapes.data[0][0], (200 * MPP, 100 * MPP))
    assert list(shapes.features["kind"]) == ["tumor", "exclusion"]


def test_get_reader_returns_none_for_junk(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    data = tmp_path / "table.csv"
    data.write_text("a,b\n1,2\n")
    other_json = tmp_path / "config.json"
    other_json.write_text('{"learning_rate": 0.1}')
    other_xml = tmp_path / "pom.xml"
    other_xml.write_text("<project><modelVersion>4</modelVersion></project>")
    plain_dir = tmp_path / "folder"
    plain_dir.mkdir()
    for p in (junk, data, other_json, other_xml, plain_dir, tmp_path / "missing.svs"):
        assert get_reader(str(p)) is None, p
    assert get_reader([str(junk)]) is None
    assert get_reader(12345) is None  # type: ignore[arg-type]


def test_corrupt_file_gives_clear_message(make_napari_viewer, tmp_path: Path) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00" + b"\x00" * 10)  # TIFF magic, truncated header
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    viewer = make_napari_viewer()
    for path in (bad, empty):
        assert get_reader(str(path)) is not None
        with pytest.raises(Exception) as info:
            viewer.open(path, plugin=PLUGIN)
        # napari wraps the plugin error; the chain carries our message naming the file
        texts = []
        exc: BaseException | None = info.value
        while exc is not None:
            texts.append(str(exc))
            exc = exc.__cause__ or exc.__context__
        joined = " | ".join(texts)
        assert path.name in joined, joined
        assert "Traceback" not in joined
    assert len(viewer.layers) == 0


def test_malformed_annotation_gives_clear_message(make_napari_viewer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations><Annotation")
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(bad, plugin=PLUGIN)
    chain = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("bad.xml" in t for t in chain), chain


def test_mismatched_mask_warns_and_slide_still_opens(
    make_napari_viewer, pyramid_writer, he_image, tmp_path: Path
) -> None:
    """A sibling mask with another aspect ratio is refused with a clear warning."""
    import tifffile

    slide = pyramid_writer(tmp_path / "case.tif", he_image((512, 768)), mpp=0.5, levels=2)
    tifffile.imwrite(tmp_path / "case_mask.tif", np.ones((300, 100), dtype=np.uint8))
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="case_mask.tif"):
        layers = viewer.open(slide, plugin=PLUGIN)
    assert [type(layer).__name__ for layer in layers] == ["Image"]


def test_plain_picture_is_left_to_napari(make_napari_viewer, tmp_path: Path) -> None:
    """A PNG without slide metadata or a mask beside it is napari's own reader's: no
    competing napari-histo reader (issue 13); with a mask beside it, it is ours again."""
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(png)
    assert get_reader(str(png)) is None
    viewer = make_napari_viewer()
    (layer,) = viewer.open(png)
    assert type(layer).__name__ == "Image"
    assert "napari_histo" not in layer.metadata
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "photo_mask.png")
    assert get_reader(str(png)) is not None
