"""Fixtures for inference tests: tiny real models saved as checkpoints, synthetic slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_histo.engine.checkpoints import default_preprocessing, load_checkpoint, save_checkpoint
from napari_histo.engine.models import build_model


def _save(path: Path, spec: dict, task: str, **pre) -> Path:
    torch.manual_seed(0)
    model = build_model(spec)
    # make the untrained net produce a non-trivial map: bias the last layer a little
    return save_checkpoint(path, model, spec=spec, task=task, class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(**pre))


@pytest.fixture(scope="session")
def seg_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """unet-tiny checkpoint working at 1.0 um/px, 128 px patches."""
    d = tmp_path_factory.mktemp("ckpt")
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    return _save(d / "seg.pt", spec, "segment", mpp=1.0, patch_size=128)


@pytest.fixture(scope="session")
def seg_model(seg_ckpt: Path):
    """The segmentation checkpoint loaded on the CPU."""
    return load_checkpoint(seg_ckpt, device="cpu")


@pytest.fixture(scope="session")
def cls_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-small patch classifier: 64 px context, 32 px centre cells, 1.0 um/px."""
    d = tmp_path_factory.mktemp("ckpt")
    spec = {"name": "cnn-small", "in_channels": 3, "num_classes": 2, "base": 4}
    return _save(d / "cls.pt", spec, "classify", mpp=1.0, patch_size=64, context_size=64,
                 center_size=32)


@pytest.fixture(scope="session")
def syn_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 768 x 1024 synthetic H&E pyramid at 0.5 um/px (3 levels) with a tumour mask."""
    from napari_histo.io.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("slides")
    path, _ = write_synthetic_slide(d / "syn.tif", shape=(768, 1024), tile=256, levels=3,
                                    mpp=0.5, seed=3)
    return path


@pytest.fixture(scope="session")
def glas_image(shared_data: Path) -> np.ndarray:
    """A real GlaS H&E image (RGB uint8)."""
    from PIL import Image

    p = shared_data / "glas_gland_segmentation" / "images" / "train_1.png"
    return np.asarray(Image.open(p).convert("RGB"))
