"""Training from whole slides + masks / ASAP XML / GeoJSON (``--task segment|classify``).

The slides are built at test time from real CAMELYON16 tumor_064 patches (256 px, level 0,
0.243 um/px) and the real tumor_064.xml lesion polygons. The patches lie up to 50 000 px
apart on the source slide, so each test slide is a mosaic: every patch is a 256 px tile and
every lesion polygon is clipped to that patch's level-0 window and shifted with it, so the
annotations still match the pixels exactly. Three slides (one per ground-truth format),
each holding tumour and normal tissue, give a split by slide.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_histo.cli import main
from napari_histo.engine.datasets.slides import find_slide_truth, slide_regions
from napari_histo.engine.training.config import TrainConfig
from napari_histo.engine.training.data import _default_center, build_data
from napari_histo.io.annotations import rasterize_annotations, read_annotations
from napari_histo.io.synthetic import write_slide_from_tiles

MPP0 = 0.243  # CAMELYON16 Radboud level 0
TILE = 256
#: slide name -> (ground-truth format, tumour patch offsets (x, y), number of normal patches)
SLIDES = {
    "t064_a": ("xml", [(68097, 138955), (68256, 138372)], 8),
    "t064_b": ("mask", [(68392, 138180)], 7),
    "t064_c": ("geojson", [(68394, 135834)], 7),
}


def _clip(ring: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a (N, 2) y,x ring to a box (even-odd fill stays right)."""
    pts = [tuple(p) for p in ring]
    for axis, bound, keep_ge in ((0, y0, True), (0, y1, False), (1, x0, True), (1, x1, False)):
        if not pts:
            break
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cin = cur[axis] >= bound if keep_ge else cur[axis] <= bound
            pin = prev[axis] >= bound if keep_ge else prev[axis] <= bound
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(tuple(prev[k] + t * (cur[k] - prev[k]) for k in (0, 1)))
            if cin:
                out.append(cur)
        pts = out
    return np.asarray(pts, float).reshape(-1, 2)


def _write_xml(path: Path, polys: list[tuple[str, np.ndarray]]) -> None:
    parts = ['<?xml version="1.0"?>\n<ASAP_Annotations>\n\t<Annotations>']
    for i, (group, ring) in enumerate(polys):
        coords = "".join(f'<Coordinate Order="{k}" X="{x:.1f}" Y="{y:.1f}" />'
                         for k, (y, x) in enumerate(ring))
        parts.append(f'<Annotation Name="_{i}" Type="Polygon" PartOfGroup="{group}" '
                     f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>')
    parts.append('</Annotations>\n\t<AnnotationGroups>\n\t\t<Group Name="_0" '
                 'PartOfGroup="None" Color="#FF0000" />\n\t\t<Group Name="_2" '
                 'PartOfGroup="None" Color="#00FF00" />\n\t</AnnotationGroups>\n'
                 '</ASAP_Annotations>\n')
    path.write_text("\n".join(parts))


def _write_geojson(path: Path, polys: list[tuple[str, np.ndarray]]) -> None:
    feats = []
    for group, ring in polys:
        xy = [[float(x), float(y)] for y, x in ring] + [[float(ring[0][1]), float(ring[0][0])]]
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [xy]},
                      "properties": {"objectType": "annotation",
                                     "classification": {"name": group}}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


@pytest.fixture(scope="module")
def slide_folder(camelyon: Path, shared_data: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three mosaic slides of real tumor_064 patches with XML / mask / GeoJSON truth."""
    anns = read_annotations(shared_data / "camelyon16_annotations" / "tumor_064.xml")
    rows = [r for r in csv.DictReader(open(camelyon / "labels.csv", newline=""))
            if r["source_slide"] == "tumor_064"]
    normals = [r for r in rows if r["label"] == "normal"]
    out = tmp_path_factory.mktemp("slides")
    start = 0
    for name, (fmt, tumours, n_normal) in SLIDES.items():
        picked = [r for r in rows if r["label"] == "tumor"
                  and (int(r["x_level0"]), int(r["y_level0"])) in tumours]
        picked += normals[start:start + n_normal]
        start += n_normal
        cols = 4 if len(picked) > 9 else 3
        nrows = -(-len(picked) // cols)
        tiles = [np.asarray(Image.open(camelyon / r["path"]).convert("RGB")) for r in picked]
        tiles.append(np.full((TILE, TILE, 3), 243, np.uint8))  # glass
        layout = np.full((nrows, cols), len(picked), np.int32)
        polys: list[tuple[str, np.ndarray]] = []
        mask = np.zeros((nrows * TILE, cols * TILE), np.uint8)
        for i, r in enumerate(picked):
            ty, tx = divmod(i, cols)
            layout[ty, tx] = i
            y0, x0 = int(r["y_level0"]), int(r["x_level0"])
            shift = np.array([ty * TILE - y0, tx * TILE - x0], float)
            mask[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE] = rasterize_annotations(
                anns, (TILE, TILE), origin=(y0, x0))
            for a in anns:
                ring = _clip(a.polygon, y0, x0, y0 + TILE, x0 + TILE)
                if len(ring) >= 3:
                    polys.append((a.group, ring + shift))
        slide = write_slide_from_tiles(out / f"{name}.tif", tiles, mask.shape, layout=layout,
                                       tile=TILE, mpp=MPP0, min_side=TILE)
        assert slide.is_file()
        assert mask.max() == 1 and mask.min() == 0  # both classes on every slide
        if fmt == "xml":
            _write_xml(out / f"{name}.xml", polys)
        elif fmt == "geojson":
            _write_geojson(out / f"{name}.geojson", polys)
        else:
            Image.fromarray(mask * 255).save(out / f"{name}_mask.png")
        np.save(out.parent / f"{name}_truth.npy", mask)  # outside the data folder
    return out


def test_slide_truth_formats_and_regions(slide_folder: Path) -> None:
    """Regions are read from the pyramid at the training mpp; their labels match the truth."""
    kinds = {n: find_slide_truth(slide_folder / f"{n}.tif") for n in SLIDES}
    assert [k[0] for k in kinds.values()] == ["annotations", "mask", "annotations"]
    mpp, size = 2 * MPP0, 32  # level 1 of the pyramid, 64 level-0 px per region
    for name, truth in kinds.items():
        regions = slide_regions(slide_folder / f"{name}.tif", truth, mpp=mpp, size=size)
        full = np.load(slide_folder.parent / f"{name}_truth.npy")
        tumour = [r for r in regions if r.labels.any()]
        assert tumour and len(tumour) == len(regions) - len(tumour)  # balanced
        for r in regions:
            assert r.image.shape == (size, size, 3) and r.group == name
            cy, cx = map(int, re.findall(r"\d+", r.name.split("@")[1]))
            want = full[cy - size:cy + size:2, cx - size:cx + size:2]
            agree = (r.labels == want).mean()
            assert agree > 0.95, (name, r.name, agree)  # exact up to polygon-edge rounding


def test_build_data_segment_and_classify_split_by_slide(slide_folder: Path, tmp_path: Path) -> None:
    base = dict(data=(str(slide_folder),), out_dir=str(tmp_path / "r"), patch_size=32,
                mpp=2 * MPP0, val_fraction=0.34)
    seg = build_data(TrainConfig(task="segment", **base))
    assert seg.preprocessing["mpp"] == pytest.approx(2 * MPP0)
    assert set(seg.train_groups) | set(seg.val_groups) == set(SLIDES)
    assert not set(seg.train_groups) & set(seg.val_groups) and seg.val_groups
    assert seg.class_names == ["background", "foreground"] and min(seg.class_counts) > 0
    cls = build_data(TrainConfig(task="classify", center_size=16, **base))
    assert set(cls.train_groups) | set(cls.val_groups) == set(SLIDES)
    assert not set(cls.train_groups) & set(cls.val_groups)
    assert set(cls.val.labels.tolist()) == {0, 1}  # both classes validated
    counts = np.bincount(cls.train.labels)
    assert counts[0] == counts[1] > 0  # tumour/normal balanced per slide
    assert cls.preprocessing["center_size"] == 16 and cls.preprocessing["context_size"] == 32
    assert _default_center(299) == 128 and _default_center(96) == 48  # CAMELYON: 128 of 299
    # without --mpp the slides' own level-0 mpp is used and recorded
    seg0 = build_data(TrainConfig(task="segment", **{**base, "mpp": None, "patch_size": 64}))
    assert seg0.preprocessing["mpp"] == pytest.approx(MPP0, rel=1e-3)


def test_cli_trains_on_slide_folder(slide_folder: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--data", str(slide_folder), "--epochs", "1", "--mpp", str(2 * MPP0),
              "--batch-size", "8", "--val-fraction", "0.34", "--threads", "1", "--quiet"]
    rc = main(["train", "--task", "segment", "--model", "unet-tiny", "--patch-size", "64",
               "--out", str(tmp_path / "seg"), *common])
    assert rc == 0, capsys.readouterr().err
    hist = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert len(hist) == 1 and "val_dice" in hist[0]
    rc = main(["train", "--task", "classify", "--model", "cnn-small", "--patch-size", "48",
               "--center-size", "16", "--out", str(tmp_path / "cls"), *common])
    assert rc == 0, capsys.readouterr().err
    hist = json.loads((tmp_path / "cls" / "metrics.json").read_text())
    assert len(hist) == 1 and "val_auc" in hist[0]


def test_slides_without_truth_say_so(shared_data: Path, tmp_path: Path) -> None:
    import shutil

    from napari_histo.core.errors import DataError

    shutil.copy(shared_data / "wsi" / "CMU-1-Small-Region.svs", tmp_path / "cmu.svs")
    cfg = TrainConfig(task="segment", data=(str(tmp_path),), out_dir=str(tmp_path / "r"),
                      patch_size=32, mpp=2.0)
    with pytest.raises(DataError, match="none has ground truth"):
        build_data(cfg)
    with pytest.raises(DataError, match="cmu.svs has no ground truth"):
        build_data(cfg.replace(data=(str(tmp_path / "cmu.svs"),)))
