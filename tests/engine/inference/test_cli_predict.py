"""``napari-histo predict`` and ``evaluate`` end to end on synthetic slides with masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from napari_histo.cli import main
from napari_histo.engine.inference import is_complete


def test_cli_predict_then_evaluate_many(seg_ckpt: Path, syn_slide: Path, tmp_path: Path,
                                        capsys) -> None:
    slides = []
    for name in ("a", "b"):
        p = tmp_path / f"{name}.tif"
        shutil.copy(syn_slide, p)
        shutil.copy(syn_slide.with_name("syn_mask.tif"), tmp_path / f"{name}_mask.tif")
        slides.append(p)
    out = tmp_path / "out"
    args = ["predict", *map(str, slides), "--model", str(seg_ckpt), "--out", str(out),
            "--tile", "128", "--overlap", "32", "--batch-size", "4", "--quiet",
            "--format", "geojson"]
    assert main(args) == 0
    for name in ("a", "b"):
        assert is_complete(out / f"{name}.ome.zarr")
        assert (out / f"{name}.geojson").is_file()
    capsys.readouterr()
    # an existing output is never silently overwritten
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    capsys.readouterr()
    code = main(["evaluate", "--pred", str(out / "a.ome.zarr"), "--pred", str(out / "b.ome.zarr"),
                 "--truth", str(tmp_path / "a_mask.tif"), "--truth", str(tmp_path / "b_mask.tif"),
                 "--json", "--out", str(tmp_path / "eval")])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert len(rep["slides"]) == 2 and "slide_auc" in rep and "froc" in rep
    assert rep["slides"][0]["pixels"] == 384 * 512
    assert (tmp_path / "eval" / "froc.png").is_file()


def test_cli_errors_are_one_line(seg_ckpt: Path, syn_slide: Path, tmp_path: Path, capsys) -> None:
    code = main(["predict", str(syn_slide), "--model", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.pt" in err[0]
