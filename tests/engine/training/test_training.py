"""End-to-end training on real data (tiny presets, CPU): learning, resume, cancel, NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_histo.core.errors import CheckpointError, OutputExistsError
from napari_histo.core.progress import EpochEnd, Message, Progress, run_task
from napari_histo.engine.checkpoints import load_checkpoint
from napari_histo.engine.training import ArraySample, TrainConfig, TrainingError, train


def glas_cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(task="segment", data=(str(data),), out_dir=str(out), model="unet-tiny",
                mpp=2.48, data_mpp=2.48, patch_size=64, batch_size=8, epochs=8,
                steps_per_epoch=8, lr=3e-3, loss="ce", augment=False,
                val_groups=("patient ID=10",), seed=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_glas_learns_and_beats_trivial_baseline(glas_small: Path, tmp_path: Path) -> None:
    events: list[object] = []
    res = run_task(train(glas_cfg(glas_small, tmp_path / "run")), events.append)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == list(range(1, 9))
    assert any(isinstance(e, Progress) and e.desc == "val" for e in events)
    hist = res.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # held-back patient 10: better than predicting everything background or everything gland
    lm = load_checkpoint(res.best_checkpoint)
    best = res.best_metrics
    from napari_histo.engine.training.evaluate import evaluate_checkpoint

    ev = run_task(evaluate_checkpoint(res.best_checkpoint, [glas_small], split="val"))
    cm = np.asarray(ev["confusion"], dtype=float)
    fg = cm[1].sum() / cm.sum()
    trivial_acc = max(fg, 1 - fg)
    trivial_dice = 2 * fg / (1 + fg)  # all-foreground
    assert ev["accuracy"] > trivial_acc + 0.03, (ev, trivial_acc)
    assert ev["dice"] > trivial_dice, (ev, trivial_dice)
    assert ev["dice"] == pytest.approx(best["val_dice"], abs=1e-6)  # evaluate reproduces val
    assert lm.preprocessing["mpp"] == 2.48 and lm.preprocessing["patch_size"] == 64
    run = res.run_dir
    for f in ("config.yaml", "metrics.csv", "metrics.json", "best.pt", "last.pt",
              "plots/curves.png", "plots/roc.png", "plots/confusion.png", "previews/epoch_008.png"):
        assert (run / f).is_file(), f
    with pytest.raises(OutputExistsError):
        run_task(train(glas_cfg(glas_small, run)))


def test_resume_continues_where_it_stopped(glas_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r1 = run_task(train(glas_cfg(glas_small, out, epochs=1, steps_per_epoch=2)))
    assert [h["epoch"] for h in r1.history] == [1]
    ev: list[object] = []
    r2 = run_task(train(glas_cfg(glas_small, out, epochs=2, steps_per_epoch=2, resume=True)),
                  ev.append)
    assert [h["epoch"] for h in r2.history] == [1, 2]
    assert [e.epoch for e in ev if isinstance(e, EpochEnd)] == [2]
    assert r2.history[0] == r1.history[0]
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_task(train(glas_cfg(glas_small, tmp_path / "none", resume=True)))


def test_cancel_leaves_loadable_checkpoint(glas_small: Path, tmp_path: Path) -> None:
    gen = train(glas_cfg(glas_small, tmp_path / "run", epochs=3, steps_per_epoch=4))
    seen = 0
    for ev in gen:
        if isinstance(ev, Progress) and ev.desc == "train":
            seen += 1
            if seen == 6:  # mid second epoch
                break
    gen.close()
    lm = load_checkpoint(tmp_path / "run" / "last.pt")
    assert lm.task == "segment"
    assert lm.extra["epoch"] == 1
    # and the run resumes from there
    r = run_task(train(glas_cfg(glas_small, tmp_path / "run", epochs=2, steps_per_epoch=4,
                                resume=True)))
    assert [h["epoch"] for h in r.history] == [1, 2]


def test_nan_loss_stops_with_clear_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    lab = (rng.random((64, 64)) > 0.5).astype(np.uint8)
    arrays = [ArraySample(img, lab, group="a"), ArraySample(img, lab, group="b")]
    cfg = TrainConfig(out_dir=str(tmp_path / "nan"), model="unet-tiny", patch_size=32,
                      batch_size=4, epochs=1, steps_per_epoch=3, optimizer="sgd",
                      class_weights=(1.0, 1.0), augment=False)
    # TrainConfig refuses NaN weights; slip one past it to make the loss itself NaN
    object.__setattr__(cfg, "class_weights", (float("nan"), 1.0))
    with pytest.raises(TrainingError, match="loss became nan .* learning rate"):
        run_task(train(cfg, arrays=arrays))


def test_painted_arrays_with_ignore_and_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    lab = np.full((80, 80), 255, np.uint8)
    lab[:20] = 0
    lab[60:] = 1
    w = np.ones((80, 80), np.float32)
    w[60:] = 3.0
    cfg = TrainConfig(out_dir=str(tmp_path / "arr"), model="unet-tiny", patch_size=32,
                      batch_size=4, epochs=1, steps_per_epoch=2, val_fraction=0.0)
    res = run_task(train(cfg, arrays=[ArraySample(img, lab, w, group="layer")]))
    assert res.best_checkpoint is not None and res.best_checkpoint.is_file()
    assert np.isfinite(res.history[0]["train_loss"])
    # fine-tune on the corrections from that checkpoint (the GUI's loop)
    events: list[object] = []
    ft = cfg.replace(out_dir=str(tmp_path / "ft"), init_checkpoint=str(res.best_checkpoint),
                     model="unet-small")  # architecture comes from the base checkpoint
    res2 = run_task(train(ft, arrays=[ArraySample(img, lab, w, group="layer")]), events.append)
    assert any(isinstance(e, Message) and "initialised" in e.text for e in events)
    assert load_checkpoint(res2.best_checkpoint).spec["name"] == "unet-tiny"
    # the GUI fine-tunes with frozen batch-norm statistics: a few one-sided patches must not
    # overwrite what the base model learned (its running means/vars stay as they were)
    frozen = run_task(train(ft.replace(out_dir=str(tmp_path / "frozen"), freeze_norm=True),
                            arrays=[ArraySample(img, lab, w, group="layer")]))
    base = load_checkpoint(res.best_checkpoint).model.state_dict()
    for name, value in load_checkpoint(frozen.best_checkpoint).model.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            assert torch.equal(value, base[name]), name
    moved = load_checkpoint(res2.best_checkpoint).model.state_dict()
    assert any(not torch.equal(moved[n], base[n]) for n in base if n.endswith("running_mean"))


def test_camelyon_patches_train_by_source_slide(camelyon: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(task="classify", data=(str(camelyon),), out_dir=str(tmp_path / "cam"),
                      model="cnn-small", model_kwargs={"base": 8}, mpp=0.96, data_mpp=0.243,
                      patch_size=56, batch_size=8, epochs=2, steps_per_epoch=3,
                      val_groups=("tumor_064",), threads=1, num_workers=1)
    res = run_task(train(cfg))
    ck = load_checkpoint(res.last_checkpoint)
    assert ck.class_names == ["normal", "tumor"]
    assert ck.extra["val_groups"] == ["tumor_064"]
    assert set(ck.extra["train_groups"]) == {"tumor_001", "tumor_004"}
    assert 0.0 <= res.history[-1]["val_auc"] <= 1.0
    assert (res.run_dir / "previews" / "epoch_002.png").is_file()
