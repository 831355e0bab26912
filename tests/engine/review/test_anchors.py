"""Anchored fine-tuning: anchors are drawn (seeded) from confident, unreviewed tissue, carry
the model's own labels at the stated pixel weight (scaled by the pixel's confidence), and
the fine-tune job trains on them by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Message, run_task
from napari_histo.engine.review import ReviewStore
from napari_histo.engine.review.finetune import (
    ANCHOR_WEIGHT,
    anchor_regions,
    anchor_samples,
    finetune_config,
    finetune_reviewed_job,
)


def _map() -> np.ndarray:
    """128-px tiles over 512 x 768: confident background (0.03) and tumour (0.97, right
    third), an unsure band (0.45) over rows 256..384, no tissue in the top-left tile."""
    p = np.full((512, 768), 0.03, np.float32)
    p[:, 512:] = 0.97
    p[256:384, :] = 0.45
    p[:128, :128] = 0.0
    return p


def _reviewed_store(path: Path, writer: object) -> ReviewStore:
    store = ReviewStore.open(writer(path, _map()))  # type: ignore[operator]
    regs = run_task(store.rank(size_um=64.0))  # 128 store px
    for r in regs[:2]:
        y0, x0, y1, x1 = r.bbox_store
        store.save_correction(r.id, np.ones((y1 - y0, x1 - x0), np.uint8))
    store.mark(regs[2].id, "flagged")
    return store


def _read(box: tuple[int, int, int, int]) -> np.ndarray:
    y0, x0, y1, x1 = box
    return np.full((y1 - y0, x1 - x0, 3), 200, np.uint8)


def test_anchors_come_from_confident_unreviewed_tissue(tmp_path: Path,
                                                       known_store_writer: object) -> None:
    store = _reviewed_store(tmp_path / "s.ome.zarr", known_store_writer)
    marked = [r.bbox_store for r in store.reviewed(("accepted", "corrected", "flagged"))]
    anchors = anchor_regions(store, 6, seed=0)
    assert len(anchors) == 6 and len({r.id for r in anchors}) == 6
    for r in anchors:
        y0, x0, y1, x1 = r.bbox_store
        assert store.status(r.id) is None
        assert not any(y0 < b[2] and b[0] < y1 and x0 < b[3] and b[1] < x1 for b in marked)
        assert not (y0 < 384 and 256 < y1)  # never the unsure band
        assert r.bbox_store != (0, 0, 128, 128)  # never where there is no tissue
        assert r.uncertainty < 0.3 and r.area_px == (y1 - y0) * (x1 - x0)
    assert anchor_regions(store, 6, seed=0) == anchors  # seeded
    others = {tuple(r.id for r in anchor_regions(store, 6, seed=s)) for s in range(1, 6)}
    assert len(others | {tuple(r.id for r in anchors)}) > 1  # drawn, not a fixed list
    # spread over the slide's confident tissue: both confident classes are drawn from
    many = anchor_regions(store, 100, seed=0)
    assert {r.mean_prob > 0.5 for r in many} == {True, False}
    assert anchor_regions(store, 0) == []


def test_anchor_samples_have_the_models_labels_at_the_stated_weight(
        tmp_path: Path, known_store_writer: object) -> None:
    store = _reviewed_store(tmp_path / "s.ome.zarr", known_store_writer)
    samples, regs = anchor_samples(store, _read, 4, seed=1)
    assert len(samples) == len(regs) == 4
    labels = np.asarray(store.labels()[:])
    unc = np.asarray(store.uncertainty_levels()[0][:])
    for s, r in zip(samples, regs, strict=True):
        y0, x0, y1, x1 = r.bbox_store
        assert np.array_equal(s.labels, labels[y0:y1, x0:x1])
        u = unc[y0:y1, x0:x1] / 255.0
        assert s.weights is not None
        np.testing.assert_allclose(s.weights, ANCHOR_WEIGHT * (1 - u), rtol=1e-5)
        assert 0 < s.weights.max() <= ANCHOR_WEIGHT
        assert s.image.shape == (y1 - y0, x1 - x0, 3) and s.name == f"anchor-{r.id}"
    half, _ = anchor_samples(store, _read, 4, seed=1, weight=0.25)
    for a, b in zip(half, samples, strict=True):
        np.testing.assert_allclose(a.weights, b.weights / 2, rtol=1e-5)  # type: ignore[operator]
    with pytest.raises(ConfigError, match="anchor weight"):
        anchor_samples(store, _read, 2, weight=0.0)


def test_finetune_job_anchors_by_default(tmp_path: Path, known_store_writer: object,
                                         tiny_case: dict[str, Path]) -> None:
    store = _reviewed_store(tmp_path / "s.ome.zarr", known_store_writer)
    cfg = finetune_config(tiny_case["ckpt"], tmp_path / "ft", epochs=1, steps_per_epoch=2,
                          patch_size=64, batch_size=2)
    events: list[object] = []
    out = run_task(finetune_reviewed_job(store, tiny_case["ckpt"], cfg, repredict_top=0,
                                         image_reader=_read), events.append)
    assert out.samples == 2 and len(out.anchors) == 2  # as many anchors as reviewed
    assert all(store.status(r.id) is None for r in out.anchors)
    assert any(isinstance(e, Message) and "anchoring on 2" in e.text for e in events)
    off = run_task(finetune_reviewed_job(store, tiny_case["ckpt"],
                                         cfg.replace(out_dir=str(tmp_path / "ft2")),
                                         repredict_top=0, image_reader=_read, anchors=False))
    assert off.anchors == [] and off.samples == 2
