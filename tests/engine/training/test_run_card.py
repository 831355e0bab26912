"""Run cards: a run trained from in-memory arrays (what the GUI widgets do) writes
``RUN/run_card.yaml`` + ``RUN/data``, and ``napari-histo train --config CARD`` re-runs it
headless with the same data, split and seed, giving the same metrics (CPU, one thread: the
runs are bit-for-bit deterministic, so the tolerance is only float noise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.progress import run_task
from napari_histo.engine.datasets import IGNORE_INDEX, ArraySample
from napari_histo.engine.datasets.array_folder import load_array_samples, save_array_samples
from napari_histo.engine.run_card import (
    CARD_KIND_TRAIN,
    CARD_NAME,
    predict_card_path,
    predict_command,
    read_card,
    train_with_card,
    write_predict_card,
)
from napari_histo.engine.training import TrainConfig


def _arrays(seed: int = 0) -> list[ArraySample]:
    """Three groups of painted samples: 255 = unlabelled, per-pixel weights on some."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(6):
        img = rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)
        lab = np.zeros((72, 80), np.uint8)
        lab[20:50, 10 + k * 5:40 + k * 5] = 1
        img[lab == 1] = (img[lab == 1] // 2 + 120).astype(np.uint8)
        lab[:6] = IGNORE_INDEX
        w = None
        if k % 2:
            w = np.ones((72, 80), np.float32)
            w[30:40, 20:30] = 4.0
        out.append(ArraySample(img, lab, w, group=f"layer {k // 2}", name=f"img,{k}"))
    return out


def test_array_folder_round_trip_is_exact(tmp_path: Path) -> None:
    arrays = _arrays()
    save_array_samples(tmp_path / "data", arrays, [{"layer": "x"}] * len(arrays))
    back = load_array_samples(tmp_path / "data")
    assert [(a.name, a.group) for a in back] == [(a.name, a.group) for a in arrays]
    for a, b in zip(arrays, back, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
        assert (a.weights is None) == (b.weights is None)
        if a.weights is not None:
            assert np.array_equal(a.weights, b.weights)


def test_card_reproduces_the_run_headless(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from napari_histo.cli import main

    cfg = TrainConfig(out_dir=str(tmp_path / "runs" / "gui-run"), model="unet-tiny",
                      patch_size=32, batch_size=4, epochs=2, steps_per_epoch=3,
                      val_fraction=0.34, device="cpu", threads=1, amp=False, seed=3,
                      early_stopping_patience=None, preview=False)
    gui = run_task(train_with_card(cfg, arrays=_arrays()))
    card_path = Path(cfg.out_dir) / CARD_NAME
    card = read_card(card_path)
    assert card["kind"] == CARD_KIND_TRAIN
    saved = Path(cfg.out_dir).resolve() / "data"
    assert card["config"]["data"] == [str(saved)] and card["saved_data"]["samples"] == 6
    assert card["config"]["seed"] == 3 and card["config"]["resume"] is False
    assert card["command"].startswith(f"napari-histo train --config {card_path.resolve()}")
    assert (saved / "samples.json").is_file() and len(list((saved / "weights").iterdir())) == 3

    out = tmp_path / "runs" / "reproduced"
    rc = main(["train", "--config", str(card_path), "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr()
    headless_cfg = TrainConfig.from_yaml(out / "config.yaml")
    assert headless_cfg.data == (str(saved),) and headless_cfg.seed == 3
    got = json.loads((out / "metrics.json").read_text())  # one dict per epoch
    assert len(got) == len(gui.history) == 2
    for a, b in zip(gui.history, got, strict=True):
        for key in ("train_loss", "val_loss", "val_dice"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    # same data, split, seed and thread count on CPU: the trained weights are identical
    import torch

    from napari_histo.engine.checkpoints import read_checkpoint

    wa = read_checkpoint(gui.last_checkpoint)["state_dict"]
    wb = read_checkpoint(out / "last.pt")["state_dict"]
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-5, atol=1e-7) for k in wa)


def test_predict_card_holds_config_and_command(tmp_path: Path) -> None:
    from napari_histo.cli import build_parser
    from napari_histo.engine.inference import InferenceConfig

    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    out = tmp_path / "preds" / "slide-1.ome.zarr"
    cfg = InferenceConfig(threshold=0.4, device="cpu", tissue_only=False, tta=True)
    path = write_predict_card(cfg, ckpt, tmp_path / "slide.tif", out, region=(0, 8, 64, 96))
    assert path == predict_card_path(out) == tmp_path / "preds" / "slide-1.run_card.yaml"
    card = read_card(path)
    assert card["config"]["threshold"] == 0.4 and card["region"] == [0, 8, 64, 96]
    cmd = predict_command(cfg, ckpt, tmp_path / "slide.tif", out, (0, 8, 64, 96))
    assert card["command"] == cmd
    import shlex

    args = build_parser().parse_args(shlex.split(cmd)[1:])  # the line parses as given
    assert args.threshold == 0.4 and args.all_tiles and args.tta and args.region == "0,8,64,96"
