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
    qtbot.waitUntil(lambda: h.done and not w.running, timeout=5000)

    # the same truth at half resolution, placed over the same extent, gives nearly the same
    half = viewer.add_labels(truth[::2, ::2], name="truth half", scale=(2, 2),
                             translate=(0.5, 0.5))
    w.reset_choices()
    w._truth_combo.value = half
    w.result = None
    h = w.evaluate()
    qtbot.waitUntil(lambda: w.result is not None, timeout=30000)
    assert w.result["metrics"]["dice"] == pytest.approx(dice, abs=0.02)
    qtbot.waitUntil(lambda: h.done and not w.running, timeout=5000)


def test_evaluate_export_json_and_csv(make_napari_viewer, qtbot, glas_pair, tmp_path,
                                      no_threads_left):
    import csv
    import json

    viewer = make_napari_viewer()
    truth = imread(glas_pair[1]).astype(np.uint8)
    gt = viewer.add_labels(truth, name="truth", scale=(0.5, 0.5), units="um")
    prob = (truth > 0).astype(np.float32)
    prob[:40] = 1.0 - prob[:40]
    heat = viewer.add_image(prob, name="pred heatmap", scale=(0.5, 0.5), units="um",
                            metadata={"napari_histo": {"kind": "prediction", "role": "heatmap"}})
    w = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert not w._export_button.enabled  # nothing to export yet
    w.reset_choices()
    w._pred_combo.value = heat
    w._truth_combo.value = gt
    h = w.evaluate()
    qtbot.waitUntil(lambda: w.result is not None, timeout=30000)
    qtbot.waitUntil(lambda: h.done and not w.running, timeout=5000)
    assert w._export_button.enabled
    # the widget says what was scored
    assert "scored: extent of 'pred heatmap'" in w._scope_label.value
    assert "0.5 x 0.5 um per px" in w._scope_label.value

    w._export_edit.value = tmp_path / "out" / "scores.json"
    w._export_button.clicked.emit()
    jpath, cpath = tmp_path / "out" / "scores.json", tmp_path / "out" / "scores.csv"
    assert jpath.is_file() and cpath.is_file()
    doc = json.loads(jpath.read_text())
    m = w.result["metrics"]
    assert doc["metrics"]["dice"] == pytest.approx(m["dice"])
    assert doc["confusion"] == np.asarray(w.result["confusion"]).tolist()
    scope = doc["scope"]
    assert scope["prediction"] == "pred heatmap" and scope["truth"] == "truth"
    assert scope["units"] == "um" and scope["pixel_size"] == [0.5, 0.5]
    h0, w0 = truth.shape
    assert scope["region_box"] == pytest.approx([-0.25, -0.25, h0 * 0.5 - 0.25, w0 * 0.5 - 0.25])
    assert scope["threshold"] == pytest.approx(0.5)
    with cpath.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["item", "metric", "value"]
    table = {(r[0], r[1]): r[2] for r in rows[1:]}
    assert float(table[("all", "dice")]) == pytest.approx(m["dice"])
    assert float(table[("all", "auc")]) == pytest.approx(m["auc"])
    assert "um per px" in table[("scope", "resolution")]
    assert "exported" in w._scope_label.value
