"""TrainConfig validation and YAML round trip; metrics against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_histo.core.errors import ConfigError
from napari_histo.engine.metrics import (
    HistogramROC,
    confusion_matrix,
    roc_auc,
    scores_from_confusion,
)
from napari_histo.engine.training import TrainConfig
from napari_histo.engine.training.losses import SegClsLoss


def test_config_round_trip_and_defaults(tmp_path: Path) -> None:
    cfg = TrainConfig(task="classify", data=("a", "b"), out_dir="r", val_groups=["s1"],
                      class_names=["normal", "tumor"], mpp=0.5, data_mpp=0.25)
    assert cfg.model == "cnn-small" and cfg.scale == 0.5 and cfg.monitor_metric == "val_auc"
    cfg.to_yaml(tmp_path / "c.yaml")
    again = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert again == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig(data="x").data == ("x",)


@pytest.mark.parametrize("kw,msg", [
    ({"task": "detect"}, "task must be"),
    ({"lr": 0}, "learning rate"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"model": "resnet18"}, "is for task 'classify'"),
    ({"stain_norm": "vahadane"}, "stain_norm"),
    ({"mpp": -1.0}, "mpp must be > 0"),
])
def test_config_rejects_bad_values(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(**kw)


def test_unknown_yaml_key() -> None:
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_yaml("task: segment\nepochz: 3\n")


def test_metrics_by_hand() -> None:
    pred = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 0, 255]])
    cm = confusion_matrix(pred, truth, 2)
    assert cm.tolist() == [[1, 1], [0, 1]]
    s = scores_from_confusion(cm)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["dice"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))
    assert s["iou"] == pytest.approx(0.5)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(1.0)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))
    h = HistogramROC()
    h.update(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True]))
    assert h.auc() == pytest.approx(0.75)


def test_losses_ignore_and_weights() -> None:
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 1], [255, 255]]])
    for kind in ("ce", "dice", "ce+dice", "focal"):
        loss = SegClsLoss(kind, 2)(logits, target)
        assert torch.isfinite(loss)
        loss.backward()
    ce = SegClsLoss("ce", 2)(logits, target)
    assert float(ce) == pytest.approx(np.log(2), rel=1e-5)
    w = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])  # only the class-0 pixel counts
    l2 = SegClsLoss("ce", 2)(torch.tensor([[[[5.0, 0.0]], [[0.0, 0.0]]]]).expand(1, 2, 2, 2), target, w)
    assert float(l2) < 0.01
