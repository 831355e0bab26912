"""Evaluate widget: a heatmap layer vs the GlaS ground truth (also at another resolution)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

from napari_histo.plugin._evaluate_widget import EvaluateWidget


def test_evaluate_heatmap_vs_truth(make_napari_viewer, qtbot, glas_pair, no_threads_left):
    viewer = make_napari_viewer()
    truth = imread(glas_pair[1]).astype(np.uint8)
    gt = viewer.add_labels(truth, name="truth")
    # a "prediction" that is right except for a wrong band of 40 rows
    prob = (truth > 0).astype(np.float32)
    prob[:40] = 1.0 - prob[:40]
    heat = viewer.add_image(prob, name="pred heatmap",
                            metadata={"napari_histo": {"kind": "prediction", "role": "heatmap"}})
    w = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    w._pred_combo.value = heat
    w._truth_combo.value = gt
    h = w.evaluate()
    qtbot.waitUntil(lambda: w.result is not None, timeout=30000)
    m = w.result["metrics"]
    t = truth > 0
    p = prob >= 0.5
    dice = 2 * (t & p).sum() / (t.sum() + p.sum())
    assert m["dice"] == pytest.approx(dice, abs=1e-6)
    assert m["accuracy"] == pytest.approx((t == p).mean(), abs=1e-6)
    assert w.result["confusion"].sum() == truth.size
    assert "Dice" in w._metrics_label.value
    assert len(w.roc.ax.lines) >= 2
    qtbot.waitUntil(lambda: h.done, timeout=5000)

    # the same truth at half resolution, placed over the same extent, gives nearly the same
    half = viewer.add_labels(truth[::2, ::2], name="truth half", scale=(2, 2),
                             translate=(0.5, 0.5))
    w.reset_choices()
    w._truth_combo.value = half
    w.result = None
    h = w.evaluate()
    qtbot.waitUntil(lambda: w.result is not None, timeout=30000)
    assert w.result["metrics"]["dice"] == pytest.approx(dice, abs=0.02)
    qtbot.waitUntil(lambda: h.done, timeout=5000)
