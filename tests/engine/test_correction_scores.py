"""Correct & fine-tune, engine side: the window's Dice/IoU before, per epoch and after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.progress import EpochEnd, Message, run_task
from napari_histo.engine.corrections import (
    correction_samples,
    finetune_job,
    resample_inside,
    resample_nearest,
    window_scores,
)
from napari_histo.engine.metrics import dice, iou


def test_window_scores_are_the_metrics_dice_and_iou() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((40, 50)) > 0.5
    b = rng.random((40, 50)) > 0.4
    sc = window_scores(a.astype(np.uint8), (b * 255).astype(np.uint8))
    assert sc["dice"] == pytest.approx(dice(a, b)) and sc["iou"] == pytest.approx(iou(a, b))
    valid = np.zeros_like(a)
    valid[:20] = True
    part = window_scores(a, b, valid)
    assert part["dice"] == pytest.approx(dice(a[:20], b[:20])) and part["pixels"] == 20 * 50


def test_resample_inside_matches_where_resample_fills() -> None:
    src = np.ones((30, 20), np.uint8)
    args = ((2.0, 2.0), (5.0, -3.0), (50, 40), (1.0, 1.0), (0.0, 0.0))
    filled = resample_nearest(src, *args, fill=0)
    assert np.array_equal(resample_inside(src.shape, *args), filled == 1)


def test_finetune_job_scores_each_epoch_and_after(tmp_path: Path) -> None:
    from napari_histo.engine.training import ArraySample, TrainConfig, train

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    lab = np.zeros((64, 64), np.uint8)
    lab[32:] = 1
    base_cfg = TrainConfig(out_dir=str(tmp_path / "base"), model="unet-tiny", patch_size=32,
                           batch_size=4, epochs=1, steps_per_epoch=1, val_fraction=0.0)
    base = run_task(train(base_cfg, arrays=[ArraySample(img, lab, None, group="g")]))
    before = np.zeros_like(lab)  # the "prediction" missed the lower half
    edited = before != lab
    arrays = correction_samples(img, lab, edited, patch_size=32, max_patches=4)
    cfg = base_cfg.replace(out_dir=str(tmp_path / "ft"), epochs=2, steps_per_epoch=1,
                           init_checkpoint=str(base.best_checkpoint))
    events: list[object] = []
    out = run_task(finetune_job(cfg, arrays, img, before, lab, reference_name="corrections"),
                   events.append)
    assert isinstance(events[0], Message) and "against the corrections" in events[0].text
    ends = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in ends] == [1, 2]
    assert all(0.0 <= e.metrics["val_dice"] <= 1.0 and "train_loss" in e.metrics for e in ends)
    assert [r["dice"] for r in out.epochs] == [e.metrics["val_dice"] for e in ends]
    assert out.before["dice"] == pytest.approx(0.0)  # nothing predicted, half the truth
    assert 0.0 <= out.after["dice"] <= 1.0 and Path(out.checkpoint).is_file()
    assert out.reference == "corrections"
