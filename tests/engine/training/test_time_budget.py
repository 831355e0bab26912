"""Defaults that work (issue 10, part 4): a time limit without epochs paces the whole run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from napari_histo.core.progress import run_task
from napari_histo.engine.training import TrainConfig, train
from napari_histo.engine.training.schedule import (
    EARLY_STOP_MIN_FRACTION,
    run_progress,
    should_stop_early,
)


def test_progress_follows_the_clock_when_no_epochs() -> None:
    assert run_progress(10, None, 30.0, 120.0) == pytest.approx(0.25)
    assert run_progress(10, None, 30.0, 120.0, reserve_s=20.0) == pytest.approx(0.3)
    assert run_progress(10, None, 500.0, 120.0) == 1.0
    # both: whichever is further (an epoch count that the time would cut)
    assert run_progress(50, 100, 30.0, 120.0) == pytest.approx(0.5)
    assert run_progress(10, 100, 90.0, 120.0) == pytest.approx(0.75)
    assert run_progress(10, 100, 1e9, None) == pytest.approx(0.1)
    assert run_progress(10, None, 5.0, None) == 0.0


def test_early_stopping_waits_for_the_schedule_in_time_paced_runs() -> None:
    assert not should_stop_early(3, 15, progress=0.9)
    assert should_stop_early(15, 15, progress=0.1)  # epoch-counted run: patience alone
    assert not should_stop_early(15, None, progress=1.0)
    limit = 1200.0
    kw = {"limit_s": limit, "time_paced": True}
    assert not should_stop_early(40, 15, progress=0.3, since_best_s=600, **kw)  # warm-up/peak
    assert not should_stop_early(40, 15, progress=0.7, since_best_s=60, **kw)  # short plateau
    assert should_stop_early(40, 15, progress=0.7,
                             since_best_s=EARLY_STOP_MIN_FRACTION * limit + 1, **kw)


def test_epochs_not_given_is_distinct_from_given() -> None:
    assert TrainConfig(data=("d",)).epochs is None
    assert TrainConfig(data=("d",)).max_epochs == 20
    assert TrainConfig(data=("d",), time_limit_min=20).max_epochs is None
    assert TrainConfig(data=("d",), time_limit_min=20, epochs=5).max_epochs == 5
    rt = TrainConfig.from_yaml(TrainConfig(data=("d",), time_limit_min=1).to_yaml())
    assert rt.epochs is None and rt.max_epochs is None


def _cli_config(argv: list[str]) -> TrainConfig:
    from napari_histo.cli import _train

    ap = argparse.ArgumentParser()
    _train.register(ap.add_subparsers(dest="command"))
    return _train.build_config(ap.parse_args(argv))


def test_readme_recipes_pick_the_benchmark_defaults() -> None:
    seg = _cli_config(["train", "--task", "segment", "--data", "glas", "--out", "runs/glas",
                       "--data-mpp", "0.62", "--group-by", "patient ID", "--time-limit", "20"])
    assert (seg.model, seg.mpp, seg.patch_size, seg.batch_size) == ("unet-small", 2.48, 128, 16)
    assert seg.scale == pytest.approx(0.25) and seg.max_epochs is None
    cls = _cli_config(["train", "--task", "classify", "--data", "cam", "--out", "runs/cam",
                       "--group-by", "source_slide", "--time-limit", "20"])
    assert (cls.model, cls.mpp, cls.patch_size, cls.batch_size) == ("cnn-small", None, 256, 8)
    # given values win; the auto resolution is never finer than the data
    assert TrainConfig(data=("d",), data_mpp=0.62, mpp=1.0).mpp == 1.0
    assert TrainConfig(data=("d",), data_mpp=0.62, mpp=1.0).patch_size == 256
    assert TrainConfig(data=("d",), data_mpp=4.0).mpp == 4.0
    assert TrainConfig(data=("d",), data_mpp=0.62, patch_size=96, batch_size=4).batch_size == 4
    assert TrainConfig(data=("d",)).mpp is None and TrainConfig(data=("d",)).patch_size == 256


def test_time_paced_run_anneals_by_the_deadline(glas_small: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(task="segment", data=(str(glas_small),), out_dir=str(tmp_path / "run"),
                      model="unet-tiny", mpp=2.48, data_mpp=2.48, patch_size=64, batch_size=4,
                      steps_per_epoch=2, time_limit_min=0.2, loss="ce", augment=False,
                      val_groups=("patient ID=10",), threads=1, preview=False,
                      # tiny epochs: 15 without improvement can pass well inside 12 s, and
                      # early stopping is not what this test is about (it was flaky)
                      early_stopping_patience=None)
    res = run_task(train(cfg))
    assert res.stopped == "time_limit"
    assert len(res.history) >= 1
    last = res.history[-1]
    assert last["lr"] < cfg.lr * 0.01  # the one-cycle schedule reached its end with the time
    assert last["elapsed_s"] < 0.2 * 60 + 5
