"""Review-queue fixtures: prediction stores with known probabilities, placed off the slide's
corner (origin and downsample), written by the real store writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: where the known stores lie on their (imaginary) slide
ORIGIN_PX = (100.0, 200.0)
DOWNSAMPLE = (2.0, 2.0)
SLIDE_MPP = 0.25  # um per level-0 px, so a store px is 0.5 um
ORIGIN_UM = (ORIGIN_PX[0] * SLIDE_MPP, ORIGIN_PX[1] * SLIDE_MPP)
STORE_MPP = (SLIDE_MPP * DOWNSAMPLE[0], SLIDE_MPP * DOWNSAMPLE[1])


def known_probabilities() -> np.ndarray:
    """512 x 768 positive-class map: confident background (0.03) on the left two thirds,
    confident tumour (0.97) on the right third, a 50/50 tile at rows 256..512, cols 256..512
    and no tissue (0, skipped) in the top-left tile."""
    p = np.full((512, 768), 0.03, np.float32)
    p[:, 512:] = 0.97
    p[256:512, 256:512] = 0.5
    p[:256, :256] = 0.0
    return p


def write_known_store(path: Path, probs: np.ndarray | None = None, *, version: str = "0.4",
                      complete: bool = True, task: str = "segment", chunk: int = 256) -> Path:
    """A prediction store of ``probs`` (default :func:`known_probabilities`) via ZarrSink."""
    from napari_histo.engine.inference.writer import ZarrSink

    p = known_probabilities() if probs is None else probs
    h, w = p.shape[-2:]
    meta = {"task": task, "class_names": ["normal", "tumor"], "mpp": list(STORE_MPP),
            "origin_um": list(ORIGIN_UM), "origin_px": list(ORIGIN_PX),
            "downsample": list(DOWNSAMPLE), "threshold": 0.5, "prob_dtype": "float16",
            "source": "", "checkpoint": None}
    trans = tuple((o + (d - 1) / 2) * SLIDE_MPP for o, d in zip(ORIGIN_PX, DOWNSAMPLE, strict=True))
    sink = ZarrSink.create(path, shape=(h, w), chunk=chunk, num_classes=2,
                           prob_dtype="float16", threshold=0.5, meta=meta, mpp=STORE_MPP,
                           origin_um=trans, ngff_version=version)
    for y in range(0, h, chunk):
        for x in range(0, w, chunk):
            box = (y, x, min(h, y + chunk), min(w, x + chunk))
            blk = p[box[0]:box[2], box[1]:box[3]]
            if not blk.any():
                continue  # background blocks are skipped, as tissue-only inference does
            sink.write((y // chunk, x // chunk), box, np.stack([1 - blk, blk]))
    if complete:
        sink.finish(total_tiles=6)
    return path


@pytest.fixture(params=["0.4", "0.5"])
def known_store(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A complete known store, NGFF 0.4 (zarr v2) and 0.5 (zarr v3)."""
    return write_known_store(tmp_path / "known.ome.zarr", version=request.param)


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic slide with its mask, an untrained unet-tiny checkpoint and the real
    prediction store it made (slide 0.5 um/px, model 1.0 um/px: downsample 2)."""
    import torch

    from napari_histo.core.progress import run_task
    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.engine.models import build_model
    from napari_histo.io.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("review_case")
    torch.manual_seed(0)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    ckpt = save_checkpoint(d / "seg.pt", build_model(spec), spec=spec, task="segment",
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=1.0, patch_size=128))
    slide, mask = write_synthetic_slide(d / "syn.tif", shape=(512, 768), tile=256, levels=2,
                                        mpp=0.5, seed=3)
    cfg = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=1, device="cpu")
    store = d / "pred.ome.zarr"
    run_task(predict_slide(slide, ckpt, cfg, out_path=store))
    return {"dir": d, "slide": Path(slide), "mask": Path(mask), "ckpt": Path(ckpt),
            "store": store}


@pytest.fixture
def known_store_writer() -> object:
    """:func:`write_known_store` for tests that build stores of their own."""
    return write_known_store
