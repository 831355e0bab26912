"""``napari-histo review PRED --top K [--json]`` on a real prediction store with known
probabilities: table and JSON output, marks, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_histo.cli import main


def _store(path: Path, *, complete: bool = True) -> Path:
    """512 x 768 store at (100, 200) level-0 px, downsample 2, 0.5 um per store px; a 50/50
    tile at store rows/cols 256..512."""
    from napari_histo.engine.inference.writer import ZarrSink

    p = np.full((512, 768), 0.03, np.float32)
    p[:, 512:] = 0.97
    p[256:512, 256:512] = 0.5
    meta = {"task": "segment", "class_names": ["normal", "tumor"], "mpp": [0.5, 0.5],
            "origin_um": [25.0, 50.0], "origin_px": [100.0, 200.0], "downsample": [2.0, 2.0],
            "threshold": 0.5, "prob_dtype": "float16", "source": "", "checkpoint": None}
    sink = ZarrSink.create(path, shape=(512, 768), chunk=256, num_classes=2,
                           prob_dtype="float16", threshold=0.5, meta=meta, mpp=(0.5, 0.5),
                           origin_um=(25.125, 50.125))
    for y in range(0, 512, 256):
        for x in range(0, 768, 256):
            blk = p[y:y + 256, x:x + 256]
            sink.write((y // 256, x // 256), (y, x, y + 256, x + 256), np.stack([1 - blk, blk]))
    if complete:
        sink.finish()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return _store(tmp_path / "pred.ome.zarr")


def test_table_lists_the_uncertain_tile_first(store: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", str(store), "--top", "3", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["rank", "score", "uncert", "status"]
    assert "bbox um" in lines[0]
    first = lines[1].split()
    assert first[0] == "1" and first[3] == "-" and first[4] == "t-1-1"
    assert "(153.0, 178.0, 281.0, 306.0)" in lines[1]
    assert len(lines) == 5 and lines[-1].startswith("3 of 6 regions")


def test_json_is_a_list_with_score_and_boxes(store: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", str(store), "--top", "2", "--json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert isinstance(rows, list) and len(rows) == 2
    for key in ("score", "bbox_um", "bbox_px", "id", "rank", "status", "uncertainty", "area_px"):
        assert key in rows[0]
    assert rows[0]["bbox_px"] == [612, 712, 1124, 1224]  # slide level-0 px
    assert rows[0]["bbox_um"] == [153.0, 178.0, 281.0, 306.0]
    assert rows[0]["score"] >= rows[1]["score"] and rows[0]["rank"] == 1
    # a mark shows in the next listing (ranking reused from the store)
    assert main(["review", str(store), "--mark", "t-1-1", "accepted"]) == 0
    capsys.readouterr()
    assert main(["review", str(store), "--top", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and rows[0]["status"] == "accepted"


@pytest.mark.parametrize("args, words", [
    (["--top", "-1"], "--top"),
    (["--size-um", "0"], "size_um"),
    (["--mark", "t-9-9", "accepted"], "no review region"),
])
def test_bad_options_are_one_line_exit_2(store: Path, args: list[str], words: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", str(store), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-histo review: error:") and words in err[0]


def test_bad_stores_are_one_line_exit_2(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    partial = _store(tmp_path / "partial.ome.zarr", complete=False)
    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    for path, words in ((tmp_path / "nope.ome.zarr", "does not exist"),
                        (plain, "not a napari-histo prediction"), (partial, "unfinished")):
        assert main(["review", str(path), "--json"]) == 2
        out = capsys.readouterr()
        err = out.err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
        obj = json.loads(out.out)
        assert obj["ok"] is False and obj["exit_code"] == 2 and words in obj["error"]


def test_predict_uncertainty_ranks_the_new_store(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model
    from napari_histo.io.synthetic import write_synthetic_slide

    torch.manual_seed(0)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    ckpt = save_checkpoint(tmp_path / "seg.pt", build_model(spec), spec=spec, task="segment",
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=1.0, patch_size=128))
    slide, _ = write_synthetic_slide(tmp_path / "syn.tif", shape=(512, 768), tile=256,
                                     levels=2, mpp=0.5, seed=3)
    out = tmp_path / "pred.ome.zarr"
    assert main(["predict", str(slide), "--model", str(ckpt), "--out", str(out), "--tile",
                 "128", "--overlap", "32", "--uncertainty", "--quiet", "--json"]) == 0
    review = json.loads(capsys.readouterr().out)["outputs"][0]["review"]
    assert review["regions"] >= 1 and Path(review["uncertainty"]).is_dir()
    assert main(["review", str(out), "--json"]) == 0  # the stored ranking is listed
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == review["regions"] and rows[0]["rank"] == 1
