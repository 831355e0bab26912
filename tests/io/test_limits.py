"""Issue 9, budgets before allocating: hostile headers, pipes and annotation files.

Every hostile input is built here at test time (nothing binary is committed): TIFF, PNG and
OME-Zarr headers claiming absurd sizes, named pipes and sockets, GeoJSON nested 100,000
deep, ASAP XML with 1e300 coordinates. Each must end in one readable HistoError line (or a
warning), before anything proportional to the claimed size is allocated, and never hang.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from napari_histo.core import limits
from napari_histo.core.errors import ConfigError, DataError, HistoError, SlideOpenError
from napari_histo.io.annotations import drop_outside, rasterize_annotations, read_annotations
from napari_histo.io.masks import open_mask
from napari_histo.io.slide import open_slide
from napari_histo.io.sniff import is_supported_slide, sniff_format

MB = 2**20


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _refused(fn: Callable[[], Any], error: type[HistoError], *words: str) -> str:
    """Run ``fn``; it must raise ``error`` with a one-line message holding ``words``, and
    the process's peak memory must not grow by more than a few hundred MB."""
    before = _rss()
    with pytest.raises(error) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg
    for w in words:
        assert w in msg, msg
    assert _rss() - before < 300 * MB
    return msg


def _in_thread(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``fn()`` in a daemon thread: a hang fails the test instead of blocking the run."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "hung (blocked on a non-regular file?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ----------------------------------------------------------------------------- builders


def _patch_tags(path: Path, values: dict[int, int]) -> Path:
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        where = {code: (tags[code].valueoffset, tags[code].dtype) for code in values}
    with open(path, "r+b") as fh:
        for code, value in values.items():
            off, dtype = where[code]
            fh.seek(off)
            fh.write(struct.pack("<I" if dtype == 4 else "<H", value))
    return path


def compressed_strip_bomb(path: Path, side: int) -> Path:
    """A deflate TIFF of one 64x64 strip whose header then claims ``side`` x ``side`` px in
    that single strip: reading any pixel would mean decoding all of it."""
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), compression="zlib", rowsperstrip=64)
    return _patch_tags(path, {256: side, 257: side, 278: side})


def tiled_tiff(path: Path, height: int, width: int) -> Path:
    """A real tiled TIFF whose ImageWidth/ImageLength then claim ``height`` x ``width``."""
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(128, 128),
                     photometric="rgb", compression="zlib")
    return _patch_tags(path, {256: width, 257: height})


def png_claiming(path: Path, height: int, width: int) -> Path:
    """A real PNG whose IHDR claims ``height`` x ``width`` (CRC recomputed)."""
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 180, np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def zarr_claiming(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...] = (3, 64, 64),
                  scale: list[Any] | None = None) -> Path:
    """A small NGFF 0.4 image whose array metadata then claims ``shape``."""
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("0", shape=(3, 128, 128), chunks=chunks, dtype="uint8", fill_value=0)
    g.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "c", "type": "channel"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale or [1.0, 0.5, 0.5]}]}]}]
    meta = json.loads((path / "0" / ".zarray").read_text())
    meta["shape"] = list(shape)
    (path / "0" / ".zarray").write_text(json.dumps(meta))
    return path


def asap(path: Path, polygons: list[list[tuple[str, str]]]) -> Path:
    body = ""
    for k, coords in enumerate(polygons):
        pts = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>'
                      for i, (x, y) in enumerate(coords))
        body += (f'<Annotation Name="A{k}" Type="Polygon" PartOfGroup="_0">'
                 f"<Coordinates>{pts}</Coordinates></Annotation>")
    path.write_text('<?xml version="1.0"?><ASAP_Annotations><Annotations>' + body
                    + "</Annotations><AnnotationGroups/></ASAP_Annotations>")
    return path


# ----------------------------------------------------------------------------- helpers


def test_number_helpers_refuse_types_nan_and_range() -> None:
    assert limits.integer("tile", 8.0, 8, 16) == 8
    assert limits.number("mpp", 1, 0.0, lo_open=True) == 1.0
    assert limits.integer("x", None, allow_none=True) is None
    for bad in (True, "8", 7.5, float("nan"), float("inf"), [8]):
        with pytest.raises(ConfigError, match="tile must be an integer"):
            limits.integer("tile", bad, 8, 16)
    with pytest.raises(ConfigError, match="tile must be >= 8"):
        limits.integer("tile", 4, 8, 16)
    with pytest.raises(ConfigError, match="tile must be <= 16"):
        limits.integer("tile", 17, 8, 16)
    for bad in (float("nan"), float("-inf"), "1.0", None, False):
        with pytest.raises(DataError, match="mpp"):
            limits.number("mpp", bad, error=DataError)
    with pytest.raises(ConfigError, match="must be > 0"):
        limits.number("mpp", 0.0, 0.0, lo_open=True)
    assert limits.one_line("a\n  b\tc") == "a; b c"


def test_check_alloc_and_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="more than the 4.0 GB"):
        limits.check_alloc(5 * 2**30, "the thing")
    monkeypatch.setattr(limits, "available_memory", lambda: 10 * MB)
    with pytest.raises(ConfigError, match="only 10.0 MB is available"):
        limits.check_alloc(20 * MB, "the thing")
    limits.check_alloc(5 * MB, "the thing")
    free = limits.shutil.disk_usage(tmp_path).free
    limits.check_disk(tmp_path / "new" / "store.zarr", 1, "a store")
    with pytest.raises(ConfigError, match="free on the disk"):
        limits.check_disk(tmp_path / "new" / "store.zarr", free * 2, "a store")


def test_available_memory_is_plausible() -> None:
    avail = limits.available_memory()
    assert avail is None or 0 <= avail < 2**50


# ----------------------------------------------------------------------------- no hangs


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this OS")
def test_named_pipe_is_refused_unopened(tmp_path: Path) -> None:
    fifo = tmp_path / "x.svs"
    os.mkfifo(fifo)
    assert _in_thread(lambda: sniff_format(fifo)) is None
    assert _in_thread(lambda: is_supported_slide(fifo)) is False
    msg = _refused(lambda: _in_thread(lambda: open_slide(fifo)), SlideOpenError,
                   "x.svs", "not a regular file (named pipe)")
    assert msg.startswith("x.svs")
    _refused(lambda: _in_thread(lambda: open_mask(fifo)), SlideOpenError, "named pipe")
    ann = tmp_path / "a.geojson"
    os.mkfifo(ann)
    _refused(lambda: _in_thread(lambda: read_annotations(ann)), DataError, "named pipe")


def test_socket_and_device_are_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "s.tif"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(str(sock_path))
        assert sniff_format(sock_path) is None
        _refused(lambda: _in_thread(lambda: open_slide(sock_path)), SlideOpenError, "(socket)")
    finally:
        srv.close()
    if Path("/dev/zero").exists():
        assert sniff_format("/dev/zero") is None
        _refused(lambda: _in_thread(lambda: open_slide("/dev/zero")), SlideOpenError,
                 "character device")
        _refused(lambda: _in_thread(lambda: read_annotations("/dev/zero")), DataError,
                 "character device")


# ----------------------------------------------------------------------------- bombs


def test_tiff_strip_claiming_a_terapixel_is_refused_at_open(tmp_path: Path) -> None:
    p = compressed_strip_bomb(tmp_path / "bomb.tif", 1_000_000)
    _refused(lambda: open_slide(p), SlideOpenError, "bomb.tif", "1000000 x 1000000",
             "decoded in one piece")


def test_tiff_header_beyond_max_side(tmp_path: Path) -> None:
    p = tiled_tiff(tmp_path / "wide.tif", 256, 2 * limits.MAX_SIDE)
    _refused(lambda: open_slide(p), SlideOpenError, "wide.tif", str(2 * limits.MAX_SIDE))
    q = tiled_tiff(tmp_path / "million.tif", 1_000_000, 1_000_000)
    _refused(lambda: open_slide(q), SlideOpenError, "million.tif", "1000000 x 1000000")


def test_png_bomb_is_one_line_slide_open_error(tmp_path: Path) -> None:
    p = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    _refused(lambda: open_slide(p), SlideOpenError, "bomb.png", "tiled pyramidal TIFF")
    _refused(lambda: open_mask(p), SlideOpenError, "bomb.png")
    assert is_supported_slide(p)  # the sniffer only looks at magic bytes


def test_png_within_budget_but_not_in_memory(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    p = tmp_path / "ok.png"
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(p)
    with open_slide(p) as s:  # opening reads the header only
        monkeypatch.setattr(limits, "available_memory", lambda: 1000)
        _refused(lambda: s.read_region((0, 0), 0, (10, 10)), SlideOpenError, "ok.png",
                 "available")
        monkeypatch.undo()
        assert s.read_region((0, 0), 0, (10, 10)).shape == (10, 10, 3)


def test_ome_zarr_claiming_1e12_px(tmp_path: Path) -> None:
    p = zarr_claiming(tmp_path / "bomb.ome.zarr", (3, 10**12, 10**12))
    _refused(lambda: open_slide(p), SlideOpenError, "bomb.ome.zarr", "1000000000000")


def test_ome_zarr_chunk_too_big_to_decode(tmp_path: Path) -> None:
    p = zarr_claiming(tmp_path / "chunky.ome.zarr", (3, 600_000, 600_000),
                      chunks=(3, 64, 64))
    meta = json.loads((p / "0" / ".zarray").read_text())
    meta["chunks"] = [3, 600_000, 600_000]
    (p / "0" / ".zarray").write_text(json.dumps(meta))
    _refused(lambda: open_slide(p), SlideOpenError, "chunky.ome.zarr", "decoded in one piece")


def test_big_but_valid_lazy_store_still_opens(tmp_path: Path) -> None:
    """A 200k x 200k px image whose chunks are simply absent is valid: it opens, reads."""
    p = zarr_claiming(tmp_path / "big.ome.zarr", (3, 200_000, 200_000), chunks=(3, 512, 512))
    before = _rss()
    with open_slide(p) as s:
        assert s.shape == (200_000, 200_000)
        assert s.mpp == (0.5, 0.5)
        assert s.read_region((150_000, 150_000), 0, (64, 64)).shape == (64, 64, 3)
        assert max(s.metadata.level_shapes[-1]) <= 1024
    assert _rss() - before < 300 * MB


@pytest.mark.parametrize("scale", [[1.0, "NaN", "NaN"], [1.0, 0.0, 0.0], [1.0, -1, -1],
                                   [1.0, 1e-9, 1e-9], [1.0, "big", 2]])
def test_ome_zarr_nonsense_scale_means_unknown_mpp(tmp_path: Path, scale: list[Any]) -> None:
    p = zarr_claiming(tmp_path / "s.ome.zarr", (3, 128, 128), scale=scale)
    text = (p / ".zattrs").read_text().replace('"NaN"', "NaN")
    (p / ".zattrs").write_text(text)
    with open_slide(p) as s:
        assert s.mpp is None


def test_ome_zarr_malformed_metadata_is_one_line(tmp_path: Path) -> None:
    p = zarr_claiming(tmp_path / "m.ome.zarr", (3, 128, 128))
    attrs = json.loads((p / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"] = [{"nopath": 1}]
    (p / ".zattrs").write_text(json.dumps(attrs))
    _refused(lambda: open_slide(p), SlideOpenError, "m.ome.zarr")


# ----------------------------------------------------------------------------- annotations


def test_geojson_nested_100000_deep(tmp_path: Path) -> None:
    p = tmp_path / "deep.geojson"
    depth = 100_000
    p.write_text('{"type": "FeatureCollection", "features": [' + "[" * depth + "]" * depth + "]}")
    _refused(lambda: read_annotations(p), DataError, "deep.geojson",
             f"nested deeper than {limits.MAX_NESTING} levels")


def test_geometry_collections_nested_within_json_limits(tmp_path: Path) -> None:
    geom: dict[str, Any] = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10]]]}
    for _ in range(200):
        geom = {"type": "GeometryCollection", "geometries": [geom]}
    p = tmp_path / "gc.geojson"
    p.write_text(json.dumps({"type": "Feature", "geometry": geom, "properties": {}}))
    _refused(lambda: read_annotations(p), DataError, "nested deeper")
    from napari_histo.io.geojson import parse_geojson

    with pytest.raises(DataError, match="nested deeper"):
        parse_geojson({"type": "Feature", "geometry": geom, "properties": {}})


def test_normal_nesting_and_brackets_in_names_still_parse(tmp_path: Path) -> None:
    feat = {"type": "Feature", "properties": {"name": "[" * 100},
            "geometry": {"type": "MultiPolygon",
                         "coordinates": [[[[0, 0], [10, 0], [10, 10]]]]}}
    p = tmp_path / "ok.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    anns = read_annotations(p)
    assert len(anns) == 1 and anns[0].name == "[" * 100


def test_huge_and_non_finite_coordinates_are_skipped_with_a_warning(tmp_path: Path) -> None:
    ok = [("10", "10"), ("100", "10"), ("100", "100")]
    p = asap(tmp_path / "a.xml", [[("1e300", "0"), ("1e300", "1e300"), ("0", "1e300")],
                                  [("nan", "0"), ("1", "1"), ("2", "2")], ok])
    with pytest.warns(UserWarning) as rec:
        anns = read_annotations(p)
    assert len(anns) == 1
    texts = " ".join(str(r.message) for r in rec)
    assert "beyond any slide" in texts and "non-finite" in texts
    g = tmp_path / "a.geojson"
    g.write_text('{"type": "Polygon", "coordinates": [[[0, 0], [1e400, 0], [5, 5]]]}')
    with pytest.warns(UserWarning, match="non-finite"):
        assert read_annotations(g) == []


def test_asap_order_overflow_is_a_data_error(tmp_path: Path) -> None:
    p = asap(tmp_path / "o.xml", [[("1", "1"), ("5", "1"), ("5", "5")]])
    p.write_text(p.read_text().replace('Order="0"', 'Order="1e400"'))
    _refused(lambda: read_annotations(p), DataError, "bad coordinate")


def test_polygons_outside_the_slide_are_counted_and_skipped(tmp_path: Path) -> None:
    inside = [("10", "10"), ("100", "10"), ("100", "100")]
    edge = [("150", "150"), ("230", "150"), ("230", "230")]  # overhangs a 200 px slide a bit
    away = [("5000", "5000"), ("5100", "5000"), ("5100", "5100")]
    beside = [("250", "10"), ("280", "10"), ("280", "40")]  # wholly outside, but near
    p = asap(tmp_path / "b.xml", [inside, edge, away, beside])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_annotations(p)) == 4  # no extent: nothing to judge against
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 polygon.*1 reach far.*1 lie wholly"):
        anns = read_annotations(p, extent=(200, 200))
    assert [a.name for a in anns] == ["A0", "A1"]
    mask = rasterize_annotations(anns, (200, 200))
    assert mask[50, 50] == 1 and mask[199, 199] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert drop_outside(anns, (200, 200)) == anns


def test_annotation_file_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_histo.io.annotations as annotations

    p = asap(tmp_path / "big.xml", [[("1", "1"), ("5", "1"), ("5", "5")]] * 20)
    monkeypatch.setattr(annotations, "MAX_ANNOTATION_BYTES", 1000)
    _refused(lambda: read_annotations(p), DataError, "big.xml", "more than the")


def test_prediction_store_reader_refuses_terapixel_headers(tmp_path: Path) -> None:
    from napari_histo.io.ome_zarr import open_ome_zarr

    p = zarr_claiming(tmp_path / "bomb.ome.zarr", (3, 10**12, 10**12))
    _refused(lambda: open_ome_zarr(p), DataError, "bomb.ome.zarr", "1000000000000")


def test_xml_entity_declarations_are_refused(tmp_path: Path) -> None:
    ents = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    p = tmp_path / "lol.xml"
    p.write_text(f'<?xml version="1.0"?><!DOCTYPE lolz [{ents}]><ASAP_Annotations>'
                 '<Annotations><Annotation Name="&a9;" Type="Polygon" PartOfGroup="_0">'
                 "</Annotation></Annotations></ASAP_Annotations>")
    _refused(lambda: read_annotations(p), DataError, "lol.xml", "entities")


def test_garbage_colours_do_not_refuse_a_file(tmp_path: Path) -> None:
    from napari_histo.io.geojson import annotations_to_geojson

    feat = {"type": "Feature", "properties": {"classification": {"name": "Tumor",
                                                                 "color": ["x", 1e400, None]}},
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10]]]}}
    p = tmp_path / "c.geojson"
    p.write_text(json.dumps(feat).replace("Infinity", "1e400"))
    anns = read_annotations(p)
    assert len(anns) == 1 and anns[0].color is None
    x = asap(tmp_path / "c.xml", [[("1", "1"), ("5", "1"), ("5", "5")]])
    x.write_text(x.read_text().replace('PartOfGroup="_0"', 'PartOfGroup="_0" Color="#zzzzzz"'))
    out = annotations_to_geojson(read_annotations(x))
    assert out["features"][0]["properties"]["classification"]["color"] == [200, 0, 0]
