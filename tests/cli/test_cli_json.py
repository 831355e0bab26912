"""``train --json`` and ``predict --json``: one JSON object on stdout, nothing else there.

Real tiny runs: a small CNN on the shared CAMELYON16 patches (one epoch of two steps, and a
two-fold cross-validation), and an untrained U-Net checkpoint over a small synthetic slide.
Errors in JSON mode: the usual one line on stderr plus an ``"ok": false`` object on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from napari_histo.cli import main


def _cam_argv(camelyon: Path, out: Path) -> list[str]:
    return ["train", "--task", "classify", "--data", str(camelyon), "--out", str(out),
            "--model", "cnn-small", "--set", "model_kwargs={base: 8}", "--set", "preview=false",
            "--epochs", "1", "--steps-per-epoch", "2", "--patch-size", "56",
            "--batch-size", "8", "--mpp", "0.96", "--data-mpp", "0.243",
            "--group-by", "source_slide", "--threads", "1", "--quiet", "--json"]


def _one_object(out: str) -> dict[str, Any]:
    """stdout must be exactly one JSON object (json.loads fails on anything around it)."""
    obj = json.loads(out)
    assert isinstance(obj, dict)
    return obj


def _is_ci(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(x is None or 0 <= x <= 1 for x in v)


@pytest.fixture(scope="module")
def camelyon(shared_data: Path) -> Path:
    return shared_data / "camelyon16_patches"


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained unet-tiny checkpoint at 1.0 um/px, 128 px patches."""
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model

    torch.manual_seed(0)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "seg.pt", build_model(spec),
                           spec=spec, task="segment", class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=1.0, patch_size=128))


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 768 x 1024 synthetic H&E pyramid at 0.5 um/px."""
    from napari_histo.io.synthetic import write_synthetic_slide

    path, _ = write_synthetic_slide(tmp_path_factory.mktemp("slides") / "syn.tif",
                                    shape=(768, 1024), tile=256, levels=3, mpp=0.5, seed=3)
    return path


def test_train_json(camelyon: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main([*_cam_argv(camelyon, out), "--val-groups", "tumor_064"])
    cap = capsys.readouterr()
    assert rc == 0
    res = _one_object(cap.out)
    assert res["command"] == "train" and res["ok"] is True and res["task"] == "classify"
    assert res["run_dir"] == str(out)
    assert Path(res["best_checkpoint"]).is_file() and Path(res["last_checkpoint"]).is_file()
    assert res["best_epoch"] == 1 and res["epochs"] == 1 and res["crossval"] is None
    m = res["metrics"]
    assert 0 <= m["val_auc"] <= 1 and _is_ci(m["val_auc_ci"]) and _is_ci(m["val_accuracy_ci"])
    assert "train_loss" in m
    assert json.loads(Path(res["files"]["summary"]).read_text())["best_epoch"] == 1
    # one validation slide with four tumour patches: both warnings, in the JSON
    assert any("single group (tumor_064)" in w for w in res["warnings"])
    assert any("only 4 positive" in w for w in res["warnings"])
    assert res["timings"]["total_s"] > 0 and res["timings"]["train_s"] > 0
    # --quiet --json: stderr holds the warnings only (no bar, no epoch lines)
    err = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert err and all("warning: " in ln for ln in err), err


def test_train_json_crossval(camelyon: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cv"
    rc = main([*_cam_argv(camelyon, out), "--folds", "2"])
    assert rc == 0
    res = _one_object(capsys.readouterr().out)
    assert res["ok"] is True and res["run_dir"] == str(out)
    cv = res["crossval"]
    assert cv["folds"] == 2 and len(cv["per_fold"]) == 2 and len(cv["fold_groups"]) == 2
    assert [f["fold"] for f in cv["per_fold"]] == [1, 2]
    assert all(Path(f["best_checkpoint"]).is_file() for f in cv["per_fold"])
    assert res["best_checkpoint"] == cv["per_fold"][0]["best_checkpoint"]  # fold 1's model
    m = res["metrics"]  # pooled out of fold: every patch scored once
    assert m["items"] == 57 and m["groups"] == 3 and _is_ci(m["val_auc_ci"])
    assert Path(res["files"]["crossval"]).is_file()
    assert len(res["timings"]["train_s"]) == 2 and res["warnings"]


def test_train_json_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", "--task", "segment", "--data", str(empty), "--out", str(tmp_path / "r"),
               "--epochs", "0", "--json"])
    cap = capsys.readouterr()
    assert rc == 2
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-histo train: error:")
    res = _one_object(cap.out)
    assert res == {"command": "train", "ok": False, "exit_code": 2,
                   "error": err[0].removeprefix("napari-histo train: error: ")}


def test_predict_json(seg_ckpt: Path, slide: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["predict", str(slide), "--model", str(seg_ckpt), "--out", str(out),
               "--tile", "128", "--overlap", "32", "--batch-size", "4", "--format", "geojson",
               "--quiet", "--json"])
    cap = capsys.readouterr()
    assert rc == 0
    res = _one_object(cap.out)
    assert res["command"] == "predict" and res["ok"] is True and res["failures"] == []
    assert res["model"] == str(seg_ckpt)
    (o,) = res["outputs"]
    assert o["input"] == str(slide) and o["store"] == str(out / "syn.ome.zarr")
    assert o["complete"] is True and Path(o["store"]).is_dir()
    assert o["files"] == {"geojson": str(out / "syn.geojson")} and (out / "syn.geojson").is_file()
    assert o["total_tiles"] > 0 and 0 <= o["skipped_tiles"] <= o["total_tiles"]
    assert o["failed_tiles"] == 0 and o["failed_boxes"] == []
    assert o["timings"]["wall_s"] > 0 and res["timings"]["total_s"] >= o["timings"]["wall_s"]
    assert isinstance(res["warnings"], list)
    assert not cap.err.strip()  # --quiet --json: nothing but warnings and errors on stderr


def test_predict_json_reports_failed_inputs(seg_ckpt: Path, slide: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF header, then garbage
    rc = main(["predict", str(slide), str(bad), "--model", str(seg_ckpt),
               "--out", str(tmp_path / "out"), "--tile", "128", "--overlap", "32", "--quiet",
               "--json"])
    cap = capsys.readouterr()
    assert rc == 2
    res = _one_object(cap.out)
    assert res["ok"] is False and len(res["outputs"]) == 1
    (f,) = res["failures"]
    assert f["input"] == str(bad) and f["error"] and f["store"].endswith("bad.ome.zarr")
    assert "bad.tif" in cap.err  # the per-slide error line is still on stderr


def test_predict_json_error(slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["predict", str(slide), "--model", str(tmp_path / "none.pt"),
               "--out", str(tmp_path / "o"), "--json"])
    cap = capsys.readouterr()
    assert rc == 2
    assert len(cap.err.strip().splitlines()) == 1
    res = _one_object(cap.out)
    assert res["ok"] is False and res["exit_code"] == 2 and "none.pt" in res["error"]
    assert res["command"] == "predict"


def test_python_warnings_reach_the_json_list() -> None:
    """A library warning (e.g. a corrupt tile) is still shown and also kept for ``--json``."""
    import warnings

    from napari_histo.cli._json import warnings_into

    notes: list[tuple[str, str]] = []
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with warnings_into(notes):
            warnings.warn("level 0: tile 3 is corrupt\nand was read as blank", stacklevel=1)
        warnings.warn("after the run", stacklevel=1)
    assert notes == [("warning", "level 0: tile 3 is corrupt; and was read as blank")]
    assert [str(w.message) for w in shown] == ["level 0: tile 3 is corrupt\nand was read as blank",
                                               "after the run"]
