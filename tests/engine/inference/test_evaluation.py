"""Evaluation against hand-computed values: pixel metrics, AUC, FROC, slide AUC, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_histo.engine.evaluation import evaluate_prediction, pixel_metrics, slide_auc
from napari_histo.engine.metrics import evaluation_mask, froc, froc_inputs, roc_auc

PROB = np.array([[0.9, 0.2], [0.6, 0.4]], np.float32)
TRUTH = np.array([[1, 0], [0, 1]], np.uint8)


@pytest.mark.parametrize("exact_max", [10**6, 0])  # exact ranks, and 1024-bin histograms
def test_pixel_metrics_by_hand(exact_max: int) -> None:
    m = pixel_metrics(PROB, TRUTH, threshold=0.5, exact_max=exact_max)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 1)
    assert m["accuracy"] == 0.5 and m["dice"] == 0.5 and m["iou"] == pytest.approx(1 / 3)
    # positives {0.9, 0.4} vs negatives {0.2, 0.6}: 3 of 4 pairs ordered right
    assert m["auc"] == pytest.approx(0.75)
    assert m["auc_exact"] is (exact_max > 0)


def test_auc_ties_and_uint8_probabilities() -> None:
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    m = pixel_metrics((PROB * 255).round().astype(np.uint8), TRUTH)
    assert m["auc"] == pytest.approx(0.75) and m["dice"] == 0.5


def test_slide_auc() -> None:
    assert slide_auc([0.9, 0.3, 0.8], [1, 0, 0]) == 1.0
    assert slide_auc([0.5, 0.7, 0.2], [1, 0, 1]) == 0.0


def _bumps(shape, peaks) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for (y, x), a in peaks:
        out = np.maximum(out, a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2)))
    return out


def test_froc_constructed_case() -> None:
    px = 10.0  # um/px: dilation 3.75 px, ITC below 27.5 px
    truth_a = np.zeros((200, 200), np.uint8)
    truth_a[20:60, 20:60] = 1  # lesion 1
    truth_a[120:160, 120:160] = 1  # lesion 2
    truth_a[100:103, 20:23] = 1  # isolated tumour cells
    lab, itc = evaluation_mask(truth_a, px)
    assert lab.max() == 3 and len(itc) == 1
    prob_a = _bumps((200, 200), [((40, 40), 0.9), ((140, 140), 0.6), ((185, 40), 0.7),
                                 ((101, 21), 0.8)])
    prob_b = _bumps((200, 200), [((100, 100), 0.3)])
    a = froc_inputs(prob_a, truth_a, px)
    b = froc_inputs(prob_b, np.zeros((200, 200), np.uint8), px)
    assert a["lesions"] == 2 and a["itc"] == 1
    assert sorted(a["tp"]) == pytest.approx([0.6, 0.9], abs=1e-6)
    assert a["fp"] == pytest.approx([0.7], abs=1e-6)  # the ITC hit is neither TP nor FP
    res = froc([a, b])
    # thresholds 0.9: 0 FP/slide, sens .5; 0.7: .5, .5; 0.6: .5, 1; 0.3: 1, 1
    assert res.sensitivity_at == {"0.25": 0.5, "0.5": 1.0, "1.0": 1.0, "2.0": 1.0, "4.0": 1.0,
                                  "8.0": 1.0}
    assert res.score == pytest.approx((0.5 + 5 * 1.0) / 6)


def _store_with(tmp_path: Path, prob: np.ndarray, downsample: float, mpp: float) -> Path:
    from napari_histo.engine.inference.writer import ZarrSink

    h, w = prob.shape
    path = tmp_path / "pred.ome.zarr"
    meta = {"downsample": [downsample, downsample], "origin_px": [0.0, 0.0],
            "mpp": [mpp, mpp], "threshold": 0.5, "prob_dtype": "float16",
            "slide_shape": [int(h * downsample), int(w * downsample)]}
    sink = ZarrSink.create(path, shape=(h, w), chunk=32, num_classes=2, prob_dtype="float16",
                           threshold=0.5, meta=meta, mpp=(mpp, mpp), origin_um=(0.0, 0.0))
    probs = np.stack([1 - prob, prob]).astype(np.float32)
    for by in range(0, h, 32):
        for bx in range(0, w, 32):
            box = (by, bx, min(by + 32, h), min(bx + 32, w))
            sink.write((by // 32, bx // 32), box, probs[:, box[0]:box[2], box[1]:box[3]])
    sink.finish()
    return path


ASAP = """<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
<Annotation Name="A" Type="Polygon" PartOfGroup="_0"><Coordinates>
<Coordinate Order="0" X="80" Y="40"/><Coordinate Order="1" X="240" Y="40"/>
<Coordinate Order="2" X="240" Y="200"/><Coordinate Order="3" X="80" Y="200"/>
</Coordinates></Annotation>
</Annotations><AnnotationGroups/></ASAP_Annotations>"""


def test_store_vs_asap_xml_and_mask(tmp_path: Path) -> None:
    """A 64x64 prediction at downsample 4 vs a level-0 polygon (x 80-240, y 40-200)."""
    from PIL import Image

    prob = np.zeros((64, 64), np.float32)
    prob[10:50, 20:60] = 0.8  # truth is [10:50, 20:60] in prediction pixels
    prob[50:54, 20:60] = 0.7  # 160 false-positive pixels
    store = _store_with(tmp_path, prob, 4.0, 1.0)
    xml = tmp_path / "truth.xml"
    xml.write_text(ASAP)
    m, _ = evaluate_prediction(store, xml)
    tp, fp = 40 * 40, 4 * 40
    assert (m["tp"], m["fp"], m["fn"]) == (tp, fp, 0)
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp))
    # the same truth as a mask PNG at half the slide resolution (128 x 128)
    mask = np.zeros((128, 128), np.uint8)
    mask[20:100, 40:120] = 255
    Image.fromarray(mask).save(tmp_path / "truth_mask.png")
    m2, _ = evaluate_prediction(store, tmp_path / "truth_mask.png")
    assert (m2["tp"], m2["fp"], m2["fn"]) == (tp, fp, 0)


def test_cli_evaluate_json_and_plots(tmp_path: Path, capsys) -> None:
    from napari_histo.cli import main

    prob = np.zeros((64, 64), np.float32)
    prob[10:50, 20:60] = 0.9
    store = _store_with(tmp_path, prob, 4.0, 1.0)
    xml = tmp_path / "truth.xml"
    xml.write_text(ASAP)
    out = tmp_path / "eval"
    code = main(["evaluate", "--pred", str(store), "--truth", str(xml), "--json", "--out", str(out)])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dice"] == 1.0 and rep["auc"] == 1.0
    assert (out / "roc.png").is_file() and (out / "metrics.json").is_file()
    code = main(["evaluate", "--pred", str(tmp_path / "nope.ome.zarr"), "--truth", str(xml)])
    assert code == 2
