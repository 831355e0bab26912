"""Discovery, loading, splits and clear errors for bad training data."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from napari_histo.core.errors import ConfigError, DataError
from napari_histo.engine.datasets import (
    ArraySample,
    PatchDataset,
    PCamDataset,
    SegmentationDataset,
    find_classification_items,
    find_segmentation_pairs,
    load_pairs,
    split_by_group,
)
from napari_histo.engine.training import TrainConfig
from napari_histo.engine.training.data import build_data

from .conftest import write_pair  # noqa: TID252


def test_glas_pairs_grouped_by_patient(glas_small: Path) -> None:
    recs = find_segmentation_pairs(glas_small)
    assert len(recs) == 16
    assert {r.group for r in recs} == {f"patient ID={p}" for p in ("1", "4", "7", "10")}
    samples = load_pairs(recs[:2], scale=0.5)
    assert samples[0].image.dtype == np.uint8 and samples[0].image.shape[2] == 3
    assert set(np.unique(samples[0].labels)) <= {0, 1}
    assert samples[0].labels.shape == samples[0].image.shape[:2]


@pytest.mark.parametrize("seed", range(5))
def test_split_never_puts_a_group_on_both_sides(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = [f"g{int(g)}" for g in rng.integers(0, 7, 60)]
    tr, va = split_by_group(groups, val_fraction=0.3, seed=seed)
    assert tr and va and not set(tr) & set(va) and sorted(tr + va) == list(range(60))
    assert not {groups[i] for i in tr} & {groups[i] for i in va}


def test_split_prefers_both_classes_and_fixed_groups(camelyon: Path) -> None:
    items = find_classification_items(camelyon)
    groups = [i.group for i in items]
    labels = [int(i.label == "tumor") for i in items]
    assert set(groups) == {"tumor_001", "tumor_004", "tumor_064"}
    tr, va = split_by_group(groups, val_fraction=0.3, seed=0, labels=labels)
    assert {groups[i] for i in va} == {"tumor_064"}  # the only slide with both classes
    tr2, va2 = split_by_group(groups, val_groups=["tumor_004"])
    assert {groups[i] for i in va2} == {"tumor_004"}
    with pytest.raises(ConfigError, match="not found"):
        split_by_group(groups, val_groups=["tumor_999"])


def test_segmentation_crops_and_array_samples() -> None:
    img = np.full((50, 70, 3), 200, np.uint8)
    lab = np.full((50, 70), 255, np.uint8)
    lab[10:20, 30:40] = 1
    s = ArraySample(img, lab, np.ones((50, 70), np.float32), group="a")
    ds = SegmentationDataset([s], patch_size=32, focus_labelled=1.0)
    imgs, labs, wts = ds.get_batch([0, 0, 0], np.random.default_rng(0))
    assert imgs.shape == (3, 32, 32, 3) and labs.shape == (3, 32, 32) and wts.shape == (3, 32, 32)
    assert (labs == 1).any(dim=(1, 2)).all()  # crops centred on labelled pixels
    big = SegmentationDataset([s], patch_size=96)  # larger than the image: padded, ignored
    _, labs2, _ = big.get_batch([0], np.random.default_rng(0))
    assert (labs2 == 255).sum() > 96 * 96 - 50 * 70
    with pytest.raises(DataError, match="do not match"):
        ArraySample(img, lab[:10])
    with pytest.raises(DataError, match="uint8"):
        ArraySample(img.astype(np.float32), lab)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        build_data(TrainConfig(data=(str(tmp_path / "empty"),), out_dir=str(tmp_path / "r")))
    (tmp_path / "x" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="no image/mask pairs"):
        find_segmentation_pairs(tmp_path / "x")


def test_size_mismatch_and_bad_mask_values(tmp_path: Path) -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    write_pair(tmp_path / "a", "im1", img, np.zeros((20, 31), np.uint8))
    with pytest.raises(DataError, match="30x20 but its mask .* 31x20"):
        load_pairs(find_segmentation_pairs(tmp_path / "a"))
    lossy = np.zeros((20, 30), np.uint8)
    lossy[5:10] = 254
    lossy[10:15] = 128
    write_pair(tmp_path / "b", "im1", img, lossy)
    with pytest.raises(DataError, match="unexpected values"):
        load_pairs(find_segmentation_pairs(tmp_path / "b"))


def test_unreadable_image(tmp_path: Path) -> None:
    write_pair(tmp_path / "c", "im1", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    (tmp_path / "c" / "images" / "im1.png").write_bytes(b"\x89PNG\r\n garbage")
    with pytest.raises(DataError, match="cannot read image .*im1.png"):
        load_pairs(find_segmentation_pairs(tmp_path / "c"))


def test_class_folders_csv_and_pcam(tmp_path: Path) -> None:
    for cls in ("normal", "tumor"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(
                tmp_path / "f" / cls / f"slideA_{i}_{i}.png")
    items = find_classification_items(tmp_path / "f")
    assert len(items) == 6 and {i.group for i in items} == {"slideA"}
    ds = PatchDataset.from_records(items, ["normal", "tumor"], patch_size=32)
    x, y = ds.get_batch([0, 5], np.random.default_rng(0))
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [0, 1]
    csv_path = tmp_path / "index.csv"
    csv_path.write_text("path,label,group\nf/normal/slideA_0_0.png,normal,p1\n"
                        "f/tumor/slideA_1_1.png,tumor,p2\n")
    items2 = find_classification_items(csv_path)
    assert [i.group for i in items2] == ["p1", "p2"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,cls\na,b\n")
    with pytest.raises(DataError, match="path,label"):
        find_classification_items(bad)
    # PCam layout written here (no PCam data is shared)
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "pcam_x.h5", "w") as f:
        f["x"] = rng.integers(0, 255, (10, 96, 96, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "pcam_y.h5", "w") as f:
        f["y"] = rng.integers(0, 2, (10, 1, 1, 1), dtype=np.uint8)
    p = PCamDataset(tmp_path / "pcam_x.h5", tmp_path / "pcam_y.h5", patch_size=64)
    xb, yb = p.get_batch([3, 1, 3], None)
    assert xb.shape == (3, 64, 64, 3) and yb.shape == (3,)
    import pickle

    p2 = pickle.loads(pickle.dumps(p.subset([0, 1])))
    assert len(p2) == 2 and p2.get_batch([1], None)[0].shape == (1, 64, 64, 3)


def test_slide_patches_follow_centre_rule(shared_data: Path, tmp_path: Path) -> None:
    """Real SVS + a GeoJSON 'Tumor' square: labels from the centre region, tissue only, balanced."""
    import json
    import pickle
    import shutil

    from napari_histo.engine.datasets.slides import (
        SlidePatchDataset,
        find_slide_truth,
        sample_slide_patches,
    )

    shutil.copy(shared_data / "wsi" / "CMU-1-Small-Region.svs", tmp_path / "cmu.svs")
    ring = [[1000, 1000], [1800, 1000], [1800, 1800], [1000, 1800], [1000, 1000]]  # x, y
    (tmp_path / "cmu.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}}]}))
    truth = find_slide_truth(tmp_path / "cmu.svs")
    assert truth == ("annotations", str(tmp_path / "cmu.geojson"))
    patches = sample_slide_patches(tmp_path / "cmu.svs", truth, mpp=1.0, context_size=96,
                                   center_size=32, seed=0)
    labels = np.array([p.label for p in patches])
    assert (labels == 1).sum() == (labels == 0).sum() > 10  # balanced
    half = 32 * 1.0 / 0.499 / 2  # centre region half-size in level-0 px
    for p in patches:
        if p.label == 1:  # centre region touches the square
            assert 1000 - half - 40 <= p.x <= 1800 + half + 40
            assert 1000 - half - 40 <= p.y <= 1800 + half + 40
        else:  # centre region clear of it
            assert not (1000 + half < p.x < 1800 - half and 1000 + half < p.y < 1800 - half)
    ds = pickle.loads(pickle.dumps(SlidePatchDataset(patches, 1.0, 96, 64)))
    x, y = ds.get_batch([0, len(patches) - 1], None)
    assert x.shape == (2, 64, 64, 3) and x.dtype.is_floating_point is False
    assert y.tolist() == [0, 1]
    ds.close()


def test_kather_eight_class_folders(shared_data: Path, tmp_path: Path) -> None:
    data = build_data(TrainConfig(task="classify", data=(str(shared_data / "kather_crc_2016_samples"),),
                                  out_dir=str(tmp_path / "r"), patch_size=64, val_fraction=0.25))
    assert data.num_classes == 8 and data.class_names[0] == "01_TUMOR"
    assert len(data.train) + len(data.val) == 16
    assert not set(data.train_groups) & set(data.val_groups)
