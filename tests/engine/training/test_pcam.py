"""PatchCamelyon folders: train on train, validate on valid, test only when asked.

No PCam data is shared, so a tiny standard PCam folder is written at test time from real
CAMELYON16 patches (centre crops resized to 96 px), with all three splits of different sizes
so each check can tell which file was read.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from napari_histo.cli import main
from napari_histo.core.errors import ConfigError, DataError
from napari_histo.engine.datasets import PCamDataset, find_pcam, find_pcam_splits
from napari_histo.engine.training.config import TrainConfig
from napari_histo.engine.training.data import build_data

PREFIX = "camelyonpatch_level_2_split"
SIZES = {"train": 12, "valid": 8, "test": 6}


def _real_patches(camelyon: Path) -> list[tuple[np.ndarray, int, str]]:
    rows = list(csv.DictReader(open(camelyon / "labels.csv", newline="")))
    out = []
    for r in rows:
        img = Image.open(camelyon / r["path"]).convert("RGB")
        y0 = (img.height - 192) // 2
        crop = img.crop((y0, y0, y0 + 192, y0 + 192)).resize((96, 96), Image.Resampling.BOX)
        out.append((np.asarray(crop, np.uint8), int(r["label_int"]), r["source_slide"]))
    return out


@pytest.fixture(scope="module")
def pcam_dir(camelyon: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A standard PCam folder: train 12, valid 8, test 6 patches, both classes in each."""
    items = _real_patches(camelyon)
    normal = [i for i in items if i[1] == 0]
    tumor = [i for i in items if i[1] == 1]
    out = tmp_path_factory.mktemp("pcam")
    start = 0
    for split, n in SIZES.items():
        chosen = normal[start:start + n // 2] + tumor[start:start + n // 2]
        start += n // 2
        x = np.stack([c[0] for c in chosen])
        y = np.array([c[1] for c in chosen], np.uint8).reshape(-1, 1, 1, 1)
        with h5py.File(out / f"{PREFIX}_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
        with h5py.File(out / f"{PREFIX}_{split}_y.h5", "w") as f:
            f["y"] = y
        with open(out / f"{PREFIX}_{split}_meta.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", "coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi"])
            for i, c in enumerate(chosen):
                w.writerow([i, 0, 0, bool(c[1]), bool(c[1]), c[2]])
    return out


def test_find_pcam_picks_the_asked_split(pcam_dir: Path, tmp_path: Path) -> None:
    found = find_pcam_splits(pcam_dir)
    assert found is not None and sorted(found) == ["test", "train", "valid"]
    x, y, meta = find_pcam(pcam_dir)  # default: train, never the (alphabetically first) test
    assert x.name == f"{PREFIX}_train_x.h5" and y.name == f"{PREFIX}_train_y.h5"
    assert meta is not None and meta.name == f"{PREFIX}_train_meta.csv"
    assert find_pcam(pcam_dir, "val")[0].name == f"{PREFIX}_valid_x.h5"
    assert find_pcam(pcam_dir, "test")[0].name == f"{PREFIX}_test_x.h5"
    # a folder with only some splits says which is missing
    part = tmp_path / "part"
    part.mkdir()
    for s in ("x", "y"):
        (part / f"{PREFIX}_valid_{s}.h5").write_bytes((pcam_dir / f"{PREFIX}_valid_{s}.h5").read_bytes())
    with pytest.raises(DataError, match="no PCam test split"):
        find_pcam(part, "test")
    # still-compressed downloads, and several unsplit files, are refused clearly
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / f"{PREFIX}_train_x.h5.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="decompress"):
        find_pcam_splits(gz)
    many = tmp_path / "many"
    many.mkdir()
    for stem in ("a", "b"):
        for s in ("x", "y"):
            (many / f"{stem}_{s}.h5").write_bytes(b"")
    with pytest.raises(DataError, match="without split names"):
        find_pcam_splits(many)


def test_pcam_patches_are_checked(pcam_dir: Path, tmp_path: Path) -> None:
    ds = PCamDataset(*find_pcam(pcam_dir)[:2], patch_size=64)
    assert len(ds) == SIZES["train"] and ds.labels.tolist().count(1) == SIZES["train"] // 2
    with h5py.File(tmp_path / f"{PREFIX}_train_x.h5", "w") as f:
        f["x"] = np.zeros((2, 64, 64, 3), np.uint8)  # not 96 px: not a PCam file
    with h5py.File(tmp_path / f"{PREFIX}_train_y.h5", "w") as f:
        f["y"] = np.zeros((2, 1, 1, 1), np.uint8)
    with pytest.raises(DataError, match="expected 96 px"):
        PCamDataset(tmp_path / f"{PREFIX}_train_x.h5", tmp_path / f"{PREFIX}_train_y.h5", 64)
    with h5py.File(tmp_path / "f_x.h5", "w") as f:
        f["x"] = np.zeros((2, 96, 96, 3), np.float32)
    with pytest.raises(DataError, match="uint8"):
        PCamDataset(tmp_path / "f_x.h5", tmp_path / f"{PREFIX}_train_y.h5", 64)


def test_build_data_trains_on_train_and_validates_on_valid(pcam_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(task="classify", data=(str(pcam_dir),), out_dir=str(tmp_path / "r"),
                      patch_size=64, val_fraction=0.5)
    data = build_data(cfg)
    assert Path(data.train.x_path).name == f"{PREFIX}_train_x.h5"
    assert Path(data.val.x_path).name == f"{PREFIX}_valid_x.h5"
    assert len(data.train) == SIZES["train"] and len(data.val) == SIZES["valid"]  # no resplit
    assert data.class_names == ["normal", "tumor"] and data.class_counts == [6, 6]
    assert set(data.train_groups) <= {"tumor_001", "tumor_004", "tumor_064"}  # meta.csv wsi
    x, y = data.val.get_batch([0, len(data.val) - 1], None)
    assert x.shape == (2, 64, 64, 3) and y.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="fixed validation split"):
        build_data(cfg.replace(val_groups=("tumor_001",)))


def test_cli_train_then_evaluate_test_split(pcam_dir: Path, camelyon: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--task", "classify", "--data", str(pcam_dir), "--out", str(out),
               "--model", "cnn-small", "--epochs", "1", "--patch-size", "64",
               "--batch-size", "4", "--threads", "1", "--quiet"])
    assert rc == 0
    capsys.readouterr()
    for split, n in (("test", SIZES["test"]), ("val", SIZES["valid"]), ("train", SIZES["train"])):
        rc = main(["evaluate", "--model", str(out / "best.pt"), "--data", str(pcam_dir),
                   "--split", split, "--json", "--device", "cpu"])
        assert rc == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["items"] == n and res["split"] == split
    # the default split "all" would silently mix the fixed splits: refused
    rc = main(["evaluate", "--model", str(out / "best.pt"), "--data", str(pcam_dir),
               "--json", "--device", "cpu"])
    assert rc == 2 and "choose --split test" in capsys.readouterr().err
    # data without a fixed test split has no test split
    rc = main(["evaluate", "--model", str(out / "best.pt"), "--data", str(camelyon),
               "--split", "test", "--json", "--device", "cpu"])
    assert rc == 2 and "fixed test split" in capsys.readouterr().err
