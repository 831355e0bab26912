"""Fixtures for the training tests: small real-data folders written to tmp at test time.

GlaS images are downscaled 4x into a temporary folder (never into the repository), keeping
``Grade.csv`` rows so splits by patient work as on the full set.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)  # the 2 shared cores: one intra-op thread avoids OpenMP spin waits


@pytest.fixture(scope="session")
def glas_small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GlaS-layout folder: 4 patients x 4 images, 4x downscaled, with Grade.csv."""
    src = shared_data / "glas_gland_segmentation"
    rows = list(csv.DictReader(open(src / "Grade.csv", newline="")))
    by_patient: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_patient.setdefault(r["patient ID"].strip(), []).append(r)
    keep = []
    for pid in ("1", "4", "7", "10"):
        keep += sorted(by_patient[pid], key=lambda r: r["name"])[:4]
    out = tmp_path_factory.mktemp("glas_small")
    (out / "images").mkdir()
    (out / "labels").mkdir()
    for r in keep:
        name = r["name"]
        img = Image.open(src / "images" / f"{name}.png").convert("RGB")
        lab = Image.open(src / "labels" / f"{name}.png")
        size = (img.width // 4, img.height // 4)
        img.resize(size, Image.Resampling.BOX).save(out / "images" / f"{name}.png")
        lab.resize(size, Image.Resampling.NEAREST).save(out / "labels" / f"{name}.png")
    with open(out / "Grade.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return out


@pytest.fixture(scope="session")
def camelyon(shared_data: Path) -> Path:
    """The CAMELYON16 patch folder (labels.csv with source_slide)."""
    return shared_data / "camelyon16_patches"


def write_pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write images/NAME.png + labels/NAME.png."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask).save(folder / "labels" / f"{name}.png")
