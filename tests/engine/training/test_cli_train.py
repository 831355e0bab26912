"""``napari-histo train`` / ``evaluate --model`` in-process: run folder, reproduced metrics,
one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_histo.cli import main


def test_cli_train_then_evaluate_reproduces_validation(glas_small: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--task", "segment", "--data", str(glas_small), "--out", str(out),
               "--model", "unet-tiny", "--epochs", "2", "--steps-per-epoch", "2",
               "--patch-size", "64", "--batch-size", "4", "--mpp", "2.48", "--data-mpp", "2.48",
               "--val-groups", "patient ID=10", "--threads", "1", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch 2:" in text and "done" in text
    hist = json.loads((out / "metrics.json").read_text())
    best = [h for h in hist if h["is_best"]][-1]
    rc = main(["evaluate", "--model", str(out / "best.pt"), "--data", str(glas_small),
               "--split", "val", "--json", "--device", "cpu"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["items"] == 4
    assert res["dice"] == pytest.approx(best["val_dice"], abs=1e-6)
    assert res["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert res["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    # resume adds an epoch
    rc = main(["train", "--out", str(out), "--resume", "--epochs", "3", "--quiet"])
    assert rc == 0
    assert len(json.loads((out / "metrics.json").read_text())) == 3


@pytest.mark.parametrize("argv_tail,needle", [
    (["--task", "segment"], "empty"),
    (["--task", "segment", "--epochs", "0"], "epochs must be >= 1"),
    (["--task", "classify", "--model", "unet-tiny"], "is for task 'segment'"),
])
def test_cli_train_bad_input_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      argv_tail: list[str], needle: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", "--data", str(empty), "--out", str(tmp_path / "r"), *argv_tail])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("napari-histo train: error:") and needle in err[0]


def test_cli_evaluate_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", "--model", str(tmp_path / "nope.pt"), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "checkpoint not found" in err[0]
