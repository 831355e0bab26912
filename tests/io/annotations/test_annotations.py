"""Annotations: ASAP XML / QuPath GeoJSON parsing and rasterization at any level."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import DataError
from napari_histo.io.annotations import (
    Annotation,
    annotations_to_shapes,
    fill_rings,
    parse_asap_xml,
    rasterize_annotations,
    read_annotations,
)

# --------------------------------------------------------------------------- real tumor_064


def test_tumor_064_parses_35_polygons(tumor_064_xml: Path) -> None:
    anns = read_annotations(tumor_064_xml)
    assert len(anns) == 35
    groups = {a.group for a in anns}
    assert groups == {"_0", "_2"}
    tumor = [a for a in anns if a.kind == "tumor"]
    excl = [a for a in anns if a.kind == "exclusion"]
    assert len(tumor) == 11 and len(excl) == 24
    assert all(a.label == 1 for a in tumor) and all(a.label == 0 for a in excl)
    first = anns[0]
    assert first.name == "_0" and first.polygon.shape[1] == 2
    # stored (y, x); the file's first coordinate is X=71004 Y=136719
    np.testing.assert_allclose(first.polygon[0], [136719, 71004])
    np.testing.assert_allclose(first.xy[0], [71004, 136719])
    assert first.color == "#F4FA58"
    assert all(len(a.polygon) >= 3 for a in anns)


def test_tumor_064_patch_centres(tumor_064_xml: Path, tumor_064_patches) -> None:
    """The data README's check: 4 tumor patch centres inside lesions, 22 normal ones outside."""
    anns = read_annotations(tumor_064_xml)
    n_tumor = n_normal = 0
    for label, x, y in tumor_064_patches:
        window = rasterize_annotations(anns, (256, 256), origin=(y, x))
        centre = window[128, 128]
        if label == "tumor":
            n_tumor += 1
            assert centre == 1, (x, y)
            assert window.mean() > 0.5
        else:
            n_normal += 1
            assert centre == 0, (x, y)
    assert (n_tumor, n_normal) == (4, 22)


def test_rasterize_downsampled_matches_level0(tumor_064_xml: Path) -> None:
    anns = read_annotations(tumor_064_xml)
    origin = (160000, 14000)  # inside a lesion, crossing 4 exclusions
    full = rasterize_annotations(anns, (2048, 2048), origin=origin)
    assert 0.3 < full.mean() < 0.95
    ds = rasterize_annotations(anns, (256, 256), origin=origin, downsample=8)
    block = full.reshape(256, 8, 256, 8).mean(axis=(1, 3))
    agree = ((block > 0.5) == (ds > 0)).mean()
    assert agree > 0.98


def test_whole_slide_thumbnail_and_exclusions(tumor_064_xml: Path) -> None:
    anns = read_annotations(tumor_064_xml)
    thumb = rasterize_annotations(anns, (220000 // 64, 100000 // 64), downsample=64)
    no_cut = rasterize_annotations(
        [a for a in anns if a.kind == "tumor"], thumb.shape, downsample=64
    )
    assert thumb.sum() > 0
    assert (thumb <= no_cut).all() and thumb.sum() < no_cut.sum()  # exclusions cut out
    # a window far from every lesion draws nothing
    empty = rasterize_annotations(anns, (512, 512), origin=(0, 0))
    assert not empty.any()


# --------------------------------------------------------------------------- rasterize rules


def _square(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def test_rasterize_pixel_exact_rules() -> None:
    tumor = Annotation("t", "_0", 1, "tumor", _square(10, 20, 50, 60))
    excl = Annotation("e", "_2", 0, "exclusion", _square(20, 30, 30, 40))
    other = Annotation("o", "Stroma", 2, "other", _square(0, 0, 5, 5))
    out = rasterize_annotations([excl, tumor, other], (64, 64))
    expect = np.zeros((64, 64), np.uint8)
    expect[10:50, 20:60] = 1
    expect[20:30, 30:40] = 0  # exclusion applied after filling, whatever the file order
    expect[0:5, 0:5] = 2
    np.testing.assert_array_equal(out, expect)
    # a window with an origin and a downsample: level-0 pixels 8..72 at 2 px per pixel
    win = rasterize_annotations([tumor, excl], (32, 32), origin=(8, 8), downsample=2)
    c = 8 + 2 * np.arange(32) + 1.0  # level-0 coordinates of the output pixel centres
    cy, cx = c[:, None], c[None, :]
    inside = (cy >= 10) & (cy < 50) & (cx >= 20) & (cx < 60)
    cut = (cy >= 20) & (cy < 30) & (cx >= 30) & (cx < 40)
    np.testing.assert_array_equal(win, (inside & ~cut).astype(np.uint8))
    # group_labels override; a group mapped to 0 becomes an exclusion
    relab = rasterize_annotations([tumor, other], (64, 64), group_labels={"_0": 5, "Stroma": 0})
    assert relab[15, 25] == 5 and relab[2, 2] == 0
    with pytest.raises(DataError, match="label 300"):
        rasterize_annotations([tumor], (8, 8), origin=(10, 20), group_labels={"_0": 300})


def test_holes_are_cut_out() -> None:
    ann = Annotation(
        "h", "Tumor", 1, "tumor", _square(0, 0, 40, 40), holes=(_square(10, 10, 20, 20),)
    )
    out = rasterize_annotations([ann], (40, 40))
    assert out[5, 5] == 1 and out[15, 15] == 0 and out.sum() == 1600 - 100
    assert ann.area == pytest.approx(1500)


def test_fill_rings_matches_skimage_polygon() -> None:
    from skimage.draw import polygon

    rng = np.random.default_rng(1)
    for _ in range(100):
        ring = rng.uniform(-5, 45, (int(rng.integers(3, 12)), 2))
        ours = fill_rings([ring], (40, 37))
        ref = np.zeros((40, 37), bool)
        # skimage puts pixel centres on integers; ours (QuPath/ASAP) on half-integers
        rr, cc = polygon(ring[:, 0] - 0.5, ring[:, 1] - 0.5, (40, 37))
        ref[rr, cc] = True
        np.testing.assert_array_equal(ours, ref)


def test_to_microns_and_shapes() -> None:
    ann = Annotation("t", "_0", 1, "tumor", _square(10, 20, 50, 60))
    np.testing.assert_allclose(ann.to_microns(0.25)[0], [2.5, 5.0])
    np.testing.assert_allclose(ann.to_microns((0.5, 0.25))[2], [25.0, 15.0])
    data, props = annotations_to_shapes([ann], mpp=0.5)
    np.testing.assert_allclose(data[0], ann.polygon * 0.5)
    assert props["kind"] == ["tumor"] and props["label"] == [1]


# --------------------------------------------------------------------------- XML details


def test_short_polygons_skipped_with_warning(tmp_path: Path) -> None:
    xml = (
        "<ASAP_Annotations><Annotations>"
        '<Annotation Name="ok" PartOfGroup="_1" Type="Polygon"><Coordinates>'
        '<Coordinate Order="2" X="10,5" Y="0"/><Coordinate Order="0" X="0" Y="0"/>'
        '<Coordinate Order="1" X="0" Y="10"/></Coordinates></Annotation>'
        '<Annotation Name="line" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="5" Y="5"/>'
        "</Coordinates></Annotation>"
        '<Annotation Name="dot" Type="Dot" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="0" X="0" Y="0"/></Coordinates></Annotation>'
        "</Annotations></ASAP_Annotations>"
    )
    p = tmp_path / "a.xml"
    p.write_text(xml)
    with pytest.warns(UserWarning, match="skipped") as rec:
        anns = read_annotations(p)
    assert len(rec) == 2
    assert [a.name for a in anns] == ["ok"]
    # coordinates sorted by Order, decimal comma accepted, group _1 is tumor
    np.testing.assert_allclose(anns[0].xy, [[0, 0], [0, 10], [10.5, 0]])
    assert anns[0].kind == "tumor" and anns[0].label == 1


def test_empty_annotation_list_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "none.xml"
    p.write_text("<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    assert read_annotations(p) == []
    assert parse_asap_xml(p) == []
    assert not rasterize_annotations([], (4, 4)).any()


# --------------------------------------------------------------------------- GeoJSON


def _feature(coords, cls=None, geom="Polygon", **props):
    p = dict(props)
    if cls is not None:
        p["classification"] = {"name": cls, "color": [255, 0, 0]}
    p.setdefault("objectType", "annotation")
    return {"type": "Feature", "geometry": {"type": geom, "coordinates": coords}, "properties": p}


def test_geojson_variants(tmp_path: Path) -> None:
    sq = [[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]]
    hole = [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]
    far = [[100, 100], [120, 100], [120, 110], [100, 110], [100, 100]]
    feats = [
        _feature([sq, hole], "Tumor", name="lesion"),
        _feature([[far], [[[200, 0], [210, 0], [210, 10]]]], "Stroma", geom="MultiPolygon"),
        _feature([[[30, 30], [35, 30], [35, 35], [30, 35]]], "Ignore*"),
        _feature([[0, 0], [1, 1]], "Tumor", geom="LineString"),
        _feature([sq], "My class"),
    ]
    fc = tmp_path / "fc.geojson"
    fc.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    bare = tmp_path / "bare.json"  # QuPath exports a bare list of features
    bare.write_text(json.dumps(feats))
    one = tmp_path / "one.geojson"
    one.write_text(json.dumps(feats[0]))
    with pytest.warns(UserWarning, match="LineString"):
        a = read_annotations(fc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = read_annotations(bare)
    assert [x.group for x in a] == [x.group for x in b]
    assert [x.group for x in a] == ["Tumor", "Stroma", "Stroma", "Ignore*", "My class"]
    lesion = a[0]
    assert lesion.name == "lesion" and lesion.label == 1 and len(lesion.holes) == 1
    assert lesion.color == "#ff0000" and lesion.object_type == "annotation"
    assert a[1].label == 2 and a[1].kind == "other"  # QuPath's Stroma class
    assert a[3].kind == "exclusion" and a[3].label == 0
    assert a[4].label == 9  # unknown class: next free label
    single = read_annotations(one)
    assert len(single) == 1 and single[0].name == "lesion"
    m = rasterize_annotations(a[:4], (128, 256))
    assert m[5, 5] == 1 and m[15, 15] == 0  # hole
    assert m[32, 32] == 0  # Ignore* cut out
    assert m[105, 110] == 2  # MultiPolygon part
    assert m[3, 203] == 2


def test_geojson_label_property_and_colors() -> None:
    from napari_histo.io.geojson import parse_geojson

    sq = [[[0, 0], [4, 0], [4, 4], [0, 4]]]
    f = _feature(sq, "Class 3", label=7)
    f["properties"]["classification"]["color"] = -16776961  # QuPath < 0.4 packed ARGB: blue
    (ann,) = parse_geojson(json.dumps([f]))
    assert ann.label == 7 and ann.color == "#0000ff"
    (ann,) = parse_geojson({"type": "Polygon", "coordinates": sq})
    assert ann.group == "" and ann.label == 1


def test_geojson_short_ring_skipped() -> None:
    from napari_histo.io.geojson import parse_geojson

    with pytest.warns(UserWarning, match="< 3"):
        out = parse_geojson(json.dumps([_feature([[[0, 0], [1, 1], [0, 0]]], "Tumor")]))
    assert out == []


# --------------------------------------------------------------------------- malformed corpus


def test_malformed_files_give_one_data_error(malformed_file: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_annotations(malformed_file)
    msg = str(exc.value)
    assert str(malformed_file) in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert exc.value.__cause__ is None  # no chained ElementTree/json traceback


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_annotations(tmp_path / "nope.xml")
