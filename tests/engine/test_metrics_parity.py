"""engine.metrics against scikit-learn: ROC AUC, ROC curve, Dice (F1), IoU (Jaccard),
confusion matrix, accuracy; the binned AUC within its bound of the exact one; the documented
one-class / empty-mask conventions; metrics and plots stay free of torch and pyplot."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_histo.engine.metrics import (
    BINS,
    HistogramROC,
    PixelAccumulator,
    RocAccumulator,
    bin_index,
    binary_scores,
    confusion_matrix,
    confusion_scores,
    dice,
    iou,
    roc_auc,
    roc_curve,
    scores_from_confusion,
    weighted_auc,
)

skm = pytest.importorskip("sklearn.metrics")  # a test-only dependency


def _case(kind: str, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = rng.random(n) + 0.4 * y  # informative, continuous
    if kind == "ties":
        s = np.round(s, 1)
    elif kind == "constant":
        s = np.full(n, 0.5)
    elif kind == "perfect":
        s = y.astype(np.float64)
    elif kind == "tiny":
        s, y = np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])
    elif kind == "signed":  # labels -1 / 1, as scikit-learn reads them
        return s, np.where(y, 1, -1)
    return s, y


KINDS = ["random", "ties", "constant", "perfect", "tiny", "signed"]


@pytest.mark.parametrize("kind", KINDS)
def test_roc_auc_and_curve_match_sklearn(kind: str) -> None:
    s, y = _case(kind)
    assert roc_auc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr = roc_curve(s, y)
    ref_fpr, ref_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    # the curve's trapezoid area is the AUC
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(s, y), abs=1e-12)


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_weighted_roc_matches_sklearn(kind: str) -> None:
    s, y = _case(kind, seed=1)
    rng = np.random.default_rng(2)
    for w in (rng.random(len(s)), rng.integers(0, 3, len(s)).astype(np.float64)):
        assert roc_auc(s, y, w) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        fpr, tpr = roc_curve(s, y, w)
        ref_fpr, ref_tpr, _ = skm.roc_curve(y, s, sample_weight=w, drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
        np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    rows = rng.integers(0, 3, (5, len(s))).astype(np.float64)  # bootstrap multiplicities
    ref = [skm.roc_auc_score(y, s, sample_weight=r) for r in rows]
    np.testing.assert_allclose(weighted_auc(s, y, rows), ref, atol=1e-12)


def test_one_class_and_empty_inputs_give_nan_not_errors() -> None:
    """Documented: NaN, so a split without positives never stops a run (recent scikit-learn
    returns NaN with a warning too; older versions raise)."""
    s = np.array([0.1, 0.7, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref = skm.roc_auc_score([1, 1, 1], s)
        except ValueError:
            ref = float("nan")
    assert np.isnan(ref)
    for y in ([1, 1, 1], [0, 0, 0]):
        assert np.isnan(roc_auc(s, y))
        h = HistogramROC()
        h.update(s, np.asarray(y) > 0)
        assert np.isnan(h.auc())
        assert np.isnan(weighted_auc(s, y, np.ones((2, 3)))).all()
        fpr, tpr = roc_curve(s, y)  # the absent class's rate stays 0
        assert fpr[0] == tpr[0] == 0 and np.isfinite(fpr).all() and np.isfinite(tpr).all()
    assert np.isnan(roc_auc([], []))
    assert np.isnan(roc_auc([0.2, np.nan], [0, 1]))
    assert [a.tolist() for a in roc_curve([], [])] == [[0.0], [0.0]]
    with pytest.raises(ValueError, match="scores for"):
        roc_auc([0.1, 0.2], [1])


@pytest.mark.parametrize("seed", range(4))
def test_binned_auc_within_its_bound_of_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    y = rng.random(n) < 0.1
    s = np.clip(rng.beta(2, 5, n) + 0.15 * y * rng.random(n), 0, 1).astype(np.float32)
    s[: n // 4] = np.round(s[: n // 4], 3)  # some ties too
    h = HistogramROC()
    h.update(s, y)
    exact = skm.roc_auc_score(y, s)
    assert abs(h.auc() - exact) <= h.error_bound() + 1e-12
    assert h.error_bound() < 2e-3  # 1024 bins: well under the reported 3 decimals
    # binned == exact AUC and curve of the scores snapped to their bins
    q = bin_index(s) / BINS
    assert h.auc() == pytest.approx(roc_auc(q, y), abs=1e-12)
    for a, b in zip(h.curve(), roc_curve(q, y), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_uint8_probabilities_lose_nothing_in_bins() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(5000) < 0.4
    s = (np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1) * 255).round().astype(np.uint8) / 255.0
    h = HistogramROC()
    h.update(s, y)
    assert h.auc() == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_roc_accumulator_is_exact_then_binned() -> None:
    s, y = _case("random", n=3000, seed=3)
    acc = RocAccumulator(exact_max=2000)
    acc.update(s[:1000], y[:1000])
    assert acc.exact and acc.auc() == pytest.approx(skm.roc_auc_score(y[:1000], s[:1000]))
    acc.update(s[1000:], y[1000:])
    assert not acc.exact and acc.scores()[0].size == 0
    assert abs(acc.auc() - skm.roc_auc_score(y, s)) <= acc.hist.error_bound()


def test_confusion_matrix_matches_sklearn_numpy_and_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    c = 4
    t = rng.integers(0, c, 3000)
    t[rng.random(3000) < 0.1] = 255  # ignored
    p = rng.integers(0, c, 3000)
    keep = t != 255
    ref = skm.confusion_matrix(t[keep], p[keep], labels=list(range(c)))
    np.testing.assert_array_equal(confusion_matrix(p, t, c), ref)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), c), ref)
    s = scores_from_confusion(ref)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(t[keep], p[keep]))
    f1 = skm.f1_score(t[keep], p[keep], labels=list(range(c)), average=None)
    jac = skm.jaccard_score(t[keep], p[keep], labels=list(range(c)), average=None)
    assert s["dice"] == pytest.approx(f1[1:].mean())  # macro over foreground classes
    assert s["iou"] == pytest.approx(jac[1:].mean())
    for k in range(c):
        assert s[f"dice_{k}"] == pytest.approx(f1[k])
    v = confusion_scores(np.stack([ref, ref.T]))
    assert v["dice"][0] == pytest.approx(s["dice"]) and v["iou"][1] == pytest.approx(
        skm.jaccard_score(p[keep], t[keep], labels=list(range(c)), average=None)[1:].mean())


@pytest.mark.parametrize("kind", ["random", "empty_both", "empty_truth", "empty_pred", "full"])
def test_binary_mask_scores_match_sklearn(kind: str) -> None:
    rng = np.random.default_rng(7)
    t = rng.random((32, 32)) < 0.3
    p = t ^ (rng.random((32, 32)) < 0.2)
    if kind == "empty_both":
        t, p = np.zeros_like(t), np.zeros_like(p)
    elif kind == "empty_truth":
        t = np.zeros_like(t)
    elif kind == "empty_pred":
        p = np.zeros_like(p)
    elif kind == "full":
        t, p = np.ones_like(t), np.ones_like(p)
    tf, pf = t.ravel(), p.ravel()
    # documented: both empty is perfect agreement, Dice = IoU = 1 (sklearn's zero_division=1)
    assert dice(p, t) == pytest.approx(skm.f1_score(tf, pf, zero_division=1.0))
    assert iou(p, t) == pytest.approx(skm.jaccard_score(tf, pf, zero_division=1.0))
    (tn, fp), (fn, tp) = confusion_matrix(p, t, 2, ignore_index=None).tolist()
    b = binary_scores(tp, fp, fn, tn)
    assert b["dice"] == dice(p, t) and b["iou"] == iou(p, t)
    assert b["accuracy"] == pytest.approx(skm.accuracy_score(tf, pf))
    for key, fn_ in (("precision", skm.precision_score), ("recall", skm.recall_score)):
        ref = fn_(tf, pf, zero_division=np.nan)
        assert (np.isnan(b[key]) and np.isnan(ref)) or b[key] == pytest.approx(ref)
    # the per-class form leaves a class absent from truth and prediction undefined (NaN)
    if kind == "empty_both":
        assert np.isnan(scores_from_confusion([[1024, 0], [0, 0]])["dice"])


def test_pixel_accumulator_chunks_match_sklearn() -> None:
    rng = np.random.default_rng(8)
    t = rng.random((64, 50)) < 0.25
    p = np.clip(rng.normal(0.35 + 0.3 * t, 0.2), 0, 1).astype(np.float32)
    valid = rng.random(t.shape) > 0.05
    for exact_max in (10**6, 0):
        acc = PixelAccumulator(threshold=0.5, exact_max=exact_max)
        for y0 in range(0, 64, 16):
            acc.add(p[y0:y0 + 16], t[y0:y0 + 16], valid[y0:y0 + 16])
        m = acc.result()
        tv, pv = t[valid], p[valid]
        assert m["dice"] == pytest.approx(skm.f1_score(tv, pv >= 0.5))
        assert m["iou"] == pytest.approx(skm.jaccard_score(tv, pv >= 0.5))
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(tv, pv >= 0.5))
        ref = skm.roc_auc_score(tv, pv)
        if exact_max:
            assert m["auc_exact"] and m["auc"] == pytest.approx(ref, abs=1e-12)
        else:
            assert not m["auc_exact"] and abs(m["auc"] - ref) <= acc.roc.hist.error_bound()


def test_metric_accumulator_matches_sklearn() -> None:
    torch = pytest.importorskip("torch")
    from napari_histo.engine.metrics import MetricAccumulator

    g = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 20, 20, generator=g) < 0.3).long()
    target[:, :2] = 255
    logits = torch.randn(3, 2, 20, 20, generator=g) + 1.5 * torch.stack([1 - target.clamp(max=1),
                                                                         target.clamp(max=1)], 1)
    probs = torch.softmax(logits, 1)
    keep = (target != 255).numpy()
    y = target.numpy()[keep] > 0
    s = probs[:, 1].numpy()[keep]
    for exact_max in (10**6, 0):
        acc = MetricAccumulator(2, per_item=True, exact_max=exact_max)
        for i in range(3):
            acc.update(probs[i:i + 1], target[i:i + 1], 0.5)
        r = acc.result("val")
        assert r["val_dice"] == pytest.approx(skm.f1_score(y, s > 0.5))
        assert r["val_iou"] == pytest.approx(skm.jaccard_score(y, s > 0.5))
        bound = 0.0 if exact_max else acc.roc_acc.hist.error_bound()
        assert abs(r["val_auc"] - skm.roc_auc_score(y, s)) <= bound + 1e-9
        assert acc.per_item()["hist"].shape == (3, 2, BINS)


def test_metrics_evaluation_and_plots_load_neither_torch_nor_pyplot(tmp_path: Path) -> None:
    code = f"""
import sys, matplotlib
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # raw: reading it may pick one
import napari_histo.engine.evaluation, napari_histo.engine.uncertainty
from napari_histo.engine import plots
from napari_histo.engine.metrics import froc
plots.plot_rocs({str(tmp_path / "roc.png")!r}, {{"a": ([0, 0.5, 1], [0, 0.8, 1])}})
res = froc([{{"fp": [0.4], "tp": [0.9], "lesions": 1, "itc": 0}}])
plots.plot_froc({str(tmp_path / "froc.png")!r}, res)
print(",".join(m for m in ("torch", "matplotlib.pyplot") if m in sys.modules),
      dict.__getitem__(matplotlib.rcParams, "backend") == backend)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"], out.stdout + out.stderr
    assert (tmp_path / "roc.png").stat().st_size > 0 and (tmp_path / "froc.png").stat().st_size > 0


def test_no_pyplot_in_the_package() -> None:
    """Figures go through Figure + FigureCanvasAgg (engine.plots), never pyplot/matplotlib.use."""
    import re

    src = Path(__file__).resolve().parents[2] / "src" / "napari_histo"
    pattern = re.compile(r"import matplotlib\.pyplot|from matplotlib import pyplot|matplotlib\.use\(")
    bad = [str(p.relative_to(src)) for p in src.rglob("*.py")
           if pattern.search(p.read_text(encoding="utf-8"))]
    assert bad == []
