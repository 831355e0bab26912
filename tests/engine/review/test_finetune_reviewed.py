"""Fine-tune on reviewed regions, with the slide's true mask as the annotator: real training
steps raise Dice on the corrected regions, the unreviewed top regions are re-predicted in
the store by the new checkpoint, and what is left is ranked again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import EpochEnd, run_task
from napari_histo.engine.review import ReviewStore
from napari_histo.engine.review.finetune import finetune_config, finetune_reviewed_job


def test_finetune_on_reviewed_raises_dice_and_refines_the_store(tiny_case: dict[str, Path],
                                                                tmp_path: Path) -> None:
    path = tmp_path / "pred.ome.zarr"
    shutil.copytree(tiny_case["store"], path)
    store = ReviewStore.open(path)
    regs = run_task(store.rank(size_um=64.0))
    truth = (tifffile.imread(tiny_case["mask"])[::2, ::2] > 0).astype(np.uint8)  # store px
    for r in regs[:6]:  # the annotator corrects the six most uncertain regions
        y0, x0, y1, x1 = r.bbox_store
        store.save_correction(r.id, truth[y0:y1, x0:x1])
    for r in regs[6:8]:
        store.mark(r.id, "accepted")
    left = [r.id for r in store.remaining()[:3]]
    old = np.asarray(store.probabilities()[:], np.float32)
    cfg = finetune_config(tiny_case["ckpt"], tmp_path / "ft", epochs=4, steps_per_epoch=8,
                          lr=1e-2, patch_size=64, augment=False, freeze_norm=False)
    events: list[object] = []
    out = run_task(finetune_reviewed_job(store, tiny_case["ckpt"], cfg, repredict_top=3),
                   events.append)
    assert sum(isinstance(e, EpochEnd) for e in events) == 4 and Path(out.checkpoint).is_file()
    assert out.samples == 8 and out.reference == "corrections"
    assert out.after["dice"] > out.before["dice"] + 0.1, (out.before, out.after)
    lo, hi = out.after["dice_ci"]
    assert lo <= out.after["dice"] <= hi and out.after["regions"] == 6
    # the three best unreviewed regions now hold the fine-tuned model's prediction
    assert out.repredicted == left
    (ref,) = store.refinements()
    assert ref["checkpoint"] == out.checkpoint and ref["ids"] == left
    new = np.asarray(store.probabilities()[:], np.float32)
    changed = np.abs(new - old) > 1e-3
    boxes = np.zeros_like(changed)
    for r in (store.region(i) for i in left):
        y0, x0, y1, x1 = r.bbox_store
        boxes[y0:y1, x0:x1] = True
    assert changed[boxes].mean() > 0.5 and not changed[~boxes].any()
    labels = np.asarray(store.labels()[:])
    clear = boxes & (np.abs(new - 0.5) > 2e-3)  # float16 storage may round 0.4999 up
    assert np.array_equal(labels[clear], (new[clear] >= 0.5).astype(np.uint8))
    assert np.array_equal(labels[~boxes], (old[~boxes] >= 0.5).astype(np.uint8))
    # re-ranked: marks kept, reviewed regions not offered again
    assert store.status(regs[0].id) == "corrected" and store.status(regs[6].id) == "accepted"
    assert out.regions and all(store.status(r.id) is None for r in out.regions)
    reopened = ReviewStore.open(path)
    assert reopened.refinements() == store.refinements()


def test_nothing_reviewed_is_refused(known_store: Path, tmp_path: Path) -> None:
    store = ReviewStore.open(known_store)
    run_task(store.rank())
    with pytest.raises(ConfigError, match="checkpoint not found"):
        run_task(finetune_reviewed_job(store, tmp_path / "none.pt", None))
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(ConfigError, match="no accepted or corrected regions"):
        run_task(finetune_reviewed_job(store, ckpt, None, image_reader=lambda box: None))
