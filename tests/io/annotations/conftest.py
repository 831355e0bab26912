"""Fixtures for annotation tests: the real CAMELYON16 tumor_064 XML and a malformed-file corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tumor_064_xml(shared_data: Path) -> Path:
    """Real ASAP XML of CAMELYON16 tumor_064 (35 polygons)."""
    return shared_data / "camelyon16_annotations" / "tumor_064.xml"


@pytest.fixture(scope="session")
def tumor_064_patches(shared_data: Path) -> list[tuple[str, int, int]]:
    """(label, x, y) of the 26 tumor_064 patches: level-0 top-left corners, 256 px."""
    rows = []
    for line in (shared_data / "camelyon16_patches" / "labels.csv").read_text().splitlines()[1:]:
        path, label, _, slide, x, y = line.split(",")
        if slide == "tumor_064":
            rows.append((label, int(x), int(y)))
    return rows


_ASAP_HEAD = '<?xml version="1.0"?>\n<ASAP_Annotations><Annotations>'
_ASAP_TAIL = "</Annotations></ASAP_Annotations>"

#: name -> (file name, bytes): each must give one DataError naming the file.
MALFORMED = {
    "empty_xml": ("empty.xml", b""),
    "blank_json": ("blank.geojson", b"  \n\t "),
    "truncated_xml": ("trunc.xml", (_ASAP_HEAD + '<Annotation Name="a"><Coordinates>').encode()),
    "not_asap_xml": ("svg.xml", b'<?xml version="1.0"?><svg><rect/></svg>'),
    "bad_coordinate": (
        "badcoord.xml",
        (
            _ASAP_HEAD
            + '<Annotation Name="a" PartOfGroup="_0"><Coordinates>'
            + '<Coordinate Order="0" X="abc" Y="1"/></Coordinates></Annotation>'
            + _ASAP_TAIL
        ).encode(),
    ),
    "truncated_json": ("trunc.geojson", b'{"type": "FeatureCollection", "features": [{"type": '),
    "json_not_geojson": ("other.json", json.dumps({"hello": "world"}).encode()),
    "features_not_list": ("feat.geojson", b'{"type": "FeatureCollection", "features": 3}'),
    "string_coords": (
        "strcoords.geojson",
        json.dumps(
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [[["a", "b"], ["c", "d"]]]},
            }
        ).encode(),
    ),
    "geometry_not_object": (
        "geom.geojson",
        json.dumps([{"type": "Feature", "geometry": [1, 2], "properties": {}}]).encode(),
    ),
    "binary": ("slide.xml", bytes(range(256)) * 4),
    "utf16_garbage": ("bad.geojson", b"{\xff\xfe\x00"),
}


@pytest.fixture(params=sorted(MALFORMED))
def malformed_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """One file of the generated malformed-annotation corpus."""
    name, data = MALFORMED[request.param]
    p = tmp_path / name
    p.write_bytes(data)
    return p
