"""Label mask -> QuPath GeoJSON -> annotations -> raster: round trips and QuPath format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import OutputExistsError
from napari_histo.io.annotations import rasterize_annotations, read_annotations
from napari_histo.io.geojson import annotations_to_geojson, mask_to_geojson
from napari_histo.io.writers import write_geojson


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_blobs_round_trip(tmp_path: Path, labels: np.ndarray) -> None:
    p = write_geojson(tmp_path / "pred.geojson", labels)  # light simplification (0.5 px)
    anns = read_annotations(p)
    back = rasterize_annotations(anns, labels.shape)
    for cls in (1, 2):
        assert _iou(back == cls, labels == cls) > 0.95, cls
    # unsimplified marching-squares rings rasterize back exactly (same pixel-centre rule)
    exact = rasterize_annotations(
        read_annotations_from(mask_to_geojson(labels, simplify=0)), labels.shape
    )
    np.testing.assert_array_equal(exact, labels)
    fc = json.loads(p.read_text())
    assert fc["type"] == "FeatureCollection"
    f = fc["features"][0]
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["name"] in ("Tumor", "Class 2")
    assert len(f["properties"]["classification"]["color"]) == 3
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed rings, as GeoJSON requires
    # one feature per connected region per class
    from skimage.measure import label

    n_regions = sum(int(label(labels == c, connectivity=2).max()) for c in (1, 2))
    assert len(fc["features"]) == n_regions


def test_holes_kept_and_level0_scaling() -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[5:35, 10:50] = 1
    mask[15:25, 20:30] = 0  # a hole
    mask[18:22, 23:27] = 1  # an island inside the hole: its own feature
    ds, origin = 4.0, (1000.0, 2000.0)
    fc = mask_to_geojson(mask, downsample=ds, origin=origin, simplify=0)
    assert len(fc["features"]) == 2
    big = max(fc["features"], key=lambda f: len(f["geometry"]["coordinates"][0]))
    assert len(big["geometry"]["coordinates"]) == 2  # exterior + hole
    xs = [x for x, _ in big["geometry"]["coordinates"][0]]
    ys = [y for _, y in big["geometry"]["coordinates"][0]]
    # pixel edges at level 0: x from 2000 + 10*4 to 2000 + 50*4, y from 1000 + 5*4 to 1000 + 35*4
    assert min(xs) == pytest.approx(2040, abs=2) and max(xs) == pytest.approx(2200, abs=2)
    assert min(ys) == pytest.approx(1020, abs=2) and max(ys) == pytest.approx(1140, abs=2)
    anns = read_annotations_from(fc)
    back = rasterize_annotations(anns, mask.shape, downsample=ds, origin=origin)
    assert _iou(back == 1, mask == 1) > 0.9
    assert back[20, 21] == 0 and back[20, 25] == 1  # hole empty, island filled
    # the same mask traced at level 0 sits on the same place
    lvl0 = np.kron(mask, np.ones((4, 4), np.uint8))
    back0 = rasterize_annotations(anns, lvl0.shape, origin=origin)
    assert _iou(back0 == 1, lvl0 == 1) > 0.9


def read_annotations_from(fc: dict):  # noqa: ANN201
    from napari_histo.io.geojson import parse_geojson

    return parse_geojson(fc)


def test_orientation_and_class_names() -> None:
    mask = np.zeros((30, 30), np.uint8)
    mask[2:28, 2:28] = 3
    mask[10:20, 10:20] = 0
    fc = mask_to_geojson(mask, class_names={3: "Necrosis"}, colors={3: (1, 2, 3)})
    (f,) = fc["features"]
    assert f["properties"]["classification"] == {"name": "Necrosis", "color": [1, 2, 3]}
    assert f["properties"]["label"] == 3

    def signed(ring):  # noqa: ANN001, ANN202
        x, y = np.array(ring).T
        return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

    ext, hole = f["geometry"]["coordinates"]
    assert signed(ext) > 0 and signed(hole) < 0  # RFC 7946 right-hand rule
    (ann,) = read_annotations_from(fc)
    assert ann.label == 3 and ann.group == "Necrosis" and len(ann.holes) == 1


def test_annotations_export_round_trip(tmp_path: Path, shared_data: Path) -> None:
    anns = read_annotations(shared_data / "camelyon16_annotations" / "tumor_064.xml")
    p = write_geojson(tmp_path / "t64.geojson", anns)
    back = read_annotations(p)
    assert [a.group for a in back] == [a.group for a in anns]
    assert [a.label for a in back] == [a.label for a in anns]
    for a, b in zip(back, anns, strict=True):  # same vertices (the ring may be reversed to CCW)
        assert a.area == pytest.approx(b.area, rel=1e-6)
        np.testing.assert_allclose(
            np.sort(a.polygon, axis=0), np.sort(b.polygon, axis=0), atol=1e-3
        )
    with pytest.raises(OutputExistsError):
        write_geojson(p, anns)
    fc = annotations_to_geojson(anns[:1])
    assert fc["features"][0]["properties"]["classification"]["name"] == "_0"


def test_empty_mask_gives_empty_collection(tmp_path: Path) -> None:
    p = write_geojson(tmp_path / "e.geojson", np.zeros((10, 10), np.uint8))
    assert json.loads(p.read_text()) == {"type": "FeatureCollection", "features": []}
    assert read_annotations(p) == []
