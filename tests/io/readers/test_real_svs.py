"""The real Aperio slides in ../shared/data/wsi (JPEG and JPEG 2000)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_histo.cli import main
from napari_histo.io.slide import open_slide


def test_cmu_small_region(shared_data: Path) -> None:
    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    with open_slide(path) as s:
        m = s.metadata
        assert (m.format, m.vendor) == ("svs", "aperio")
        assert m.level_shapes[0] == (2967, 2220)  # (height, width)
        assert m.mpp == pytest.approx((0.499, 0.499))
        assert m.objective_power == 20
        assert m.native_level_count == 1 and len(s.levels) == 3  # 2 computed levels
        assert s.levels[0].chunksize[:2] == (240, 240)
        assert set(m.associated) == {"thumbnail", "label", "macro"}
        assert s.associated_image("label").shape == (463, 387, 3)
        with pytest.raises(KeyError):
            s.associated_image("nope")
        ref = tifffile.imread(path)
        np.testing.assert_array_equal(s.read_region((1000, 700), 0, (300, 500)), ref[1000:1300, 700:1200])


def test_cmu_matches_openslide(shared_data: Path) -> None:
    openslide = pytest.importorskip("openslide")
    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    with open_slide(path) as s, openslide.OpenSlide(str(path)) as o:
        ours = s.read_region((500, 400), 0, (256, 256)).astype(int)
        theirs = np.asarray(o.read_region((400, 500), 0, (256, 256)))[..., :3].astype(int)
        assert np.abs(ours - theirs).mean() < 1.0  # same JPEG, libjpeg versions may differ by 1


def test_tcga_jpeg2000_both_levels(shared_data: Path) -> None:
    path = shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as s:
        m = s.metadata
        assert m.level_shapes[:2] == ((3567, 4443), (1783, 2221))
        assert m.level_native[:2] == (True, True)
        assert m.mpp is None and m.objective_power is None
        assert m.compression and "jpeg2000" in m.compression
        assert "thumbnail" in m.associated
        with tifffile.TiffFile(path) as tf:
            ref1 = tf.series[0].levels[1].asarray()
        np.testing.assert_array_equal(np.asarray(s.levels[1][800:1000, 1000:1300]), ref1[800:1000, 1000:1300])


def test_info_cli_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(shared_data / "wsi" / "CMU-1-Small-Region.svs"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["width"], info["height"]) == (2220, 2967)
    assert info["mpp"] == {"y": pytest.approx(0.499), "x": pytest.approx(0.499)}
    assert info["vendor"] == "aperio" and info["objective_power"] == 20
    assert info["levels"][0]["width"] == 2220 and info["levels"][0]["native"] is True
    assert info["associated_images"] == ["thumbnail", "label", "macro"]
    assert main(["info", str(shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    native = [lv for lv in info["levels"] if lv["native"]]
    assert [(lv["width"], lv["height"]) for lv in native] == [(4443, 3567), (2221, 1783)]


def test_info_cli_table_and_errors(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(shared_data / "wsi" / "CMU-1-Small-Region.svs")]) == 0
    out = capsys.readouterr().out
    assert "2220 x 2967 px (width x height)" in out and "0.499" in out and "(computed)" in out
    assert main(["info", str(tmp_path / "missing.svs")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"])
def test_openslide_opener_reads_like_tifffile(shared_data: Path, name: str) -> None:
    """The OpenSlide fallback (for MRXS, VMS, ... when the extra is installed), run on real
    slides both openers can read: same levels, pixel size and level-0 pixels."""
    pytest.importorskip("openslide")
    from napari_histo.io._cache import TileCache
    from napari_histo.io._openslide import open_openslide_parts
    from napari_histo.io.slide import assemble

    path = shared_data / "wsi" / name
    cache = TileCache(64 << 20)
    parts = open_openslide_parts(path, cache=cache, key="os-test", labels=False)
    with open_slide(path) as ours, assemble(path, parts, cache=cache, token="os-test") as other:
        assert other.metadata.level_shapes[0] == ours.metadata.level_shapes[0]
        assert other.metadata.mpp == ours.metadata.mpp
        h, w = ours.metadata.level_shapes[0]
        y, x = h // 3, w // 3
        a = ours.read_region((y, x), 0, (256, 256)).astype(int)
        b = other.read_region((y, x), 0, (256, 256))[..., :3].astype(int)
        assert np.abs(a - b).mean() < 1.0
