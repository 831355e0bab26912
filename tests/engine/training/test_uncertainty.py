"""Honest validation (issue 10): bootstrap CIs, cluster bootstrap, small-validation warnings,
group k-fold cross-validation on real CAMELYON16 patches, CIs printed by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_histo.cli import main
from napari_histo.core.progress import Message, run_task
from napari_histo.engine.metrics import confusion_scores, roc_auc, weighted_auc
from napari_histo.engine.training import TrainConfig
from napari_histo.engine.training.crossval import assign_folds, crossval
from napari_histo.engine.uncertainty import bootstrap_ci, format_metric, validation_warnings


def _accuracy(stats: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w @ stats) / w.sum(1)


def test_bootstrap_ci_covers_true_value_about_95_percent() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(60):
        correct = (rng.random(200) < 0.7).astype(np.float64)
        lo, hi = bootstrap_ci(correct, None, _accuracy, n=1000, seed=rep)
        assert lo <= correct.mean() <= hi
        covered += lo <= 0.7 <= hi
    assert 50 <= covered <= 60  # nominal 95 % of 60 = 57


def test_weighted_auc_equals_mann_whitney_and_counts_duplicates() -> None:
    rng = np.random.default_rng(1)
    s = np.round(rng.random(300), 2)  # ties
    y = rng.random(300) < 0.4
    assert weighted_auc(s, y, np.ones((1, 300)))[0] == pytest.approx(roc_auc(s, y))
    w = rng.integers(0, 3, 300)
    assert weighted_auc(s, y, w[None].astype(float))[0] == pytest.approx(
        roc_auc(np.repeat(s, w), np.repeat(y, w)))
    lo, hi = bootstrap_ci((s, y), None, lambda st, w: weighted_auc(st[0], st[1], w))
    assert lo < roc_auc(s, y) < hi and hi - lo < 0.2


def test_cluster_bootstrap_is_wider_than_iid_when_groups_are_correlated() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat([f"slide_{i}" for i in range(8)], 40)
    p_slide = np.repeat(rng.uniform(0.3, 1.0, 8), 40)  # accuracy differs per slide
    correct = (rng.random(len(groups)) < p_slide).astype(np.float64)
    lo_i, hi_i = bootstrap_ci(correct, None, _accuracy)
    lo_c, hi_c = bootstrap_ci(correct, list(groups), _accuracy)
    assert hi_c - lo_c > 1.5 * (hi_i - lo_i)
    assert bootstrap_ci(correct, list(groups), _accuracy) == (lo_c, hi_c)  # fixed seed


def test_confusion_scores_vectorised_match_scalar() -> None:
    from napari_histo.engine.metrics import scores_from_confusion

    cms = np.random.default_rng(3).integers(0, 50, (5, 3, 3))
    v = confusion_scores(cms)
    for i, cm in enumerate(cms):
        ref = scores_from_confusion(cm)
        for k in ("accuracy", "dice", "iou"):
            assert v[k][i] == pytest.approx(ref[k])


def test_single_group_and_few_positives_warn() -> None:
    w = validation_warnings(4, ["tumor_064"] * 26, unit="positive patches")
    assert len(w) == 2 and "single group" in w[0] and "only 4 positive" in w[1]
    assert all("--folds" in t and "wide" in " ".join(w) for t in w)
    assert validation_warnings(30, ["a", "b", "c"]) == []
    assert format_metric({"val_auc": 0.91, "val_auc_ci": [0.8, 0.97]}, "val_auc") == \
        "val_auc=0.9100 [0.80, 0.97]"
    assert format_metric({"val_auc": 0.5, "val_auc_ci_lo": 0.1, "val_auc_ci_hi": 0.9},
                         "val_auc", 2) == "val_auc=0.50 [0.10, 0.90]"


def test_assign_folds_keeps_groups_whole_and_classes_spread() -> None:
    groups = [f"s{i}" for i in range(10) for _ in range(5)]
    labels = [int(i < 5) for i in range(10) for _ in range(5)]  # slides 0-4 tumour
    folds = assign_folds(groups, labels, 5, seed=0)
    assert sorted(g for f in folds for g in f) == sorted(set(groups))
    for f in folds:  # each fold: one tumour slide, one normal slide
        assert len(f) == 2 and sum(int(g[1:]) < 5 for g in f) == 1
    from napari_histo.core.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 11 groups"):
        assign_folds(groups, labels, 11)


def _cam_cfg(camelyon: Path, out: Path, **kw: object) -> TrainConfig:
    return TrainConfig(task="classify", data=(str(camelyon),), out_dir=str(out), model="cnn-small",
                       model_kwargs={"base": 8}, mpp=0.96, data_mpp=0.243, patch_size=56,
                       batch_size=8, epochs=1, steps_per_epoch=2, threads=1, preview=False, **kw)


def test_crossval_two_folds_on_camelyon(camelyon: Path, tmp_path: Path) -> None:
    events: list[object] = []
    res = run_task(crossval(_cam_cfg(camelyon, tmp_path / "cv", folds=2)), events.append)
    assert len(res.folds) == 2 and (tmp_path / "cv" / "fold_2" / "best.pt").is_file()
    a, b = (set(f) for f in res.fold_groups)
    assert a and b and not a & b and a | b == {"tumor_001", "tumor_004", "tumor_064"}
    report = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    pooled = report["pooled_out_of_fold"]
    assert pooled["items"] == 57 and pooled["groups"] == 3  # every patch scored once
    lo, hi = pooled["val_auc_ci"]
    assert 0.0 <= lo <= hi <= 1.0 and 0.0 <= pooled["val_auc"] <= 1.0
    assert "fold_1" in report["final_model"] and "not refit" in report["final_model"]
    assert "val_auc=" in report["summary"] and "[" in report["summary"]
    warns = [e for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("fold" in w.text for w in warns)  # per-fold validation is a slide or two


def test_cli_train_prints_ci_and_warnings(camelyon: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--task", "classify", "--data", str(camelyon), "--out", str(out),
               "--model", "cnn-small", "--set", "model_kwargs={base: 8}", "--epochs", "1",
               "--steps-per-epoch", "2", "--patch-size", "56", "--batch-size", "8",
               "--mpp", "0.96", "--data-mpp", "0.243", "--group-by", "source_slide",
               "--val-groups", "tumor_064", "--threads", "1", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "warning: validation holds a single group (tumor_064)" in text
    assert "warning: validation holds only 4 positive patches" in text
    epoch = next(line for line in text.splitlines() if line.startswith("epoch 1:"))
    assert "val_auc=" in epoch and "val_accuracy=" in epoch and "] " in epoch + " "
    done = next(line for line in text.splitlines() if line.startswith("done"))
    assert "val_auc=" in done and "[" in done
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["warnings"]) == 2 and len(summary["best"]["val_auc_ci"]) == 2
    assert json.loads((out / "metrics.json").read_text())[0]["val_accuracy_ci"][0] >= 0
    assert "val_auc_ci_lo" in (out / "metrics.csv").read_text().splitlines()[0]
    rc = main(["evaluate", "--model", str(out / "best.pt"), "--data", str(camelyon),
               "--split", "val", "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "95 % CI" in text and any(line.strip().startswith("auc:") and "[" in line
                                     for line in text.splitlines())
