"""Prediction on arrays and slides: seams, tissue skipping, streaming, resume, cancel, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_histo.core.errors import ConfigError, OutputExistsError
from napari_histo.core.progress import Message, Progress, run_task
from napari_histo.engine.inference import (
    InferenceConfig,
    is_complete,
    predict_array,
    predict_heatmap,
    predict_slide,
)

CFG = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=2)


def _whole(model, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.predict_proba(image[None])[0]


def test_tiled_equals_whole_image_away_from_borders(seg_model, glas_image) -> None:
    img = glas_image[:320, :448]
    whole = _whole(seg_model, img)
    tiled = run_task(predict_array(img, seg_model, tile=128, overlap=32, batch_size=4))
    assert tiled.shape == whole.shape == (2, 320, 448)
    b = 32
    diff = np.abs(tiled - whole)[:, b:-b, b:-b]
    assert diff.max() < 1e-3
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-4)


def test_slide_blocks_equal_whole_level(seg_model, syn_slide: Path) -> None:
    """Blocks (separate reads, halo crop) reproduce the whole level-1 image: no block seams."""
    from napari_histo.io.slide import open_slide

    cfg = CFG.replace(tissue_only=False, block_tiles=2)
    res = run_task(predict_slide(syn_slide, seg_model, cfg))
    with open_slide(syn_slide) as s:
        level1 = np.asarray(s.levels[1][...])[..., :3]
    assert res.mpp == pytest.approx((1.0, 1.0))
    assert res.probabilities.shape == level1.shape[:2] == (384, 512)
    whole = _whole(seg_model, level1)[1]
    b = 32
    assert np.abs(res.probabilities - whole)[b:-b, b:-b].max() < 1e-3
    assert res.downsample == (2.0, 2.0) and res.translate == pytest.approx((0.25, 0.25))


def test_background_tiles_skipped_and_zero(seg_model, syn_slide: Path) -> None:
    res = run_task(predict_slide(syn_slide, seg_model, CFG))
    assert 0 < res.skipped_tiles < res.total_tiles
    full = run_task(predict_slide(syn_slide, seg_model, CFG.replace(tissue_only=False)))
    zero = res.probabilities == 0
    assert zero.any() and (full.probabilities[zero] > 0).any()
    from scipy.ndimage import binary_dilation

    same = ~binary_dilation(zero, iterations=32)  # blending partners of skipped tiles differ
    np.testing.assert_allclose(res.probabilities[same], full.probabilities[same], atol=1e-3)


def test_region_and_nearest_first(seg_model, syn_slide: Path) -> None:
    events: list = []
    region = (256, 256, 768, 1024)  # level-0 px
    res = run_task(predict_slide(syn_slide, seg_model, CFG.replace(tissue_only=False),
                                 region=region, order_near=(700, 1000)), events.append)
    assert res.probabilities.shape == (256, 384)
    assert res.origin_px == (256.0, 256.0) and res.origin_um == (128.0, 128.0)
    boxes = [e.info for e in events if isinstance(e, Progress) and "y0" in e.info]
    assert len(boxes) == 2 * 2
    first = boxes[0]  # the block holding output px ((700-256)/2, (1000-256)/2) = (222, 372)
    assert first["y0"] <= 222 < first["y1"] and first["x0"] <= 372 < first["x1"]


def test_stream_to_zarr_with_pyramid_and_exports(seg_model, syn_slide: Path, tmp_path: Path) -> None:
    import zarr

    out = tmp_path / "syn.ome.zarr"
    cfg = CFG.replace(formats=("zarr", "tiff", "geojson", "png"), prob_dtype="uint8")
    res = run_task(predict_slide(syn_slide, seg_model, cfg, out_path=out))
    assert res.complete and is_complete(out)
    g = zarr.open_group(str(out), mode="r")
    assert g["0"].dtype == np.uint8 and g["0"].shape == (384, 512)
    assert "1" in g and g["1"].shape == (192, 256)
    assert g["labels/prediction/0"].shape == (384, 512)
    ms = g.attrs["multiscales"][0]["datasets"]
    assert ms[0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0]
    for name in ("syn.ome.tif", "syn.geojson", "syn_probability.png", "syn_labels.png"):
        assert (tmp_path / name).is_file()
    lab = np.asarray(g["labels/prediction/0"][...])
    np.testing.assert_array_equal(lab, (np.asarray(res.probabilities[...]) >= 128).astype(np.uint8))
    with pytest.raises(OutputExistsError):
        run_task(predict_slide(syn_slide, seg_model, cfg, out_path=out))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return {"p": np.asarray(g["0"][...]), "l": np.asarray(g["labels/prediction/0"][...]),
            "p1": np.asarray(g["1"][...])}


def _chunk_bytes(path: Path) -> dict[str, bytes]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.parent.name in ("0", "1"))
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def test_resume_after_interruption_is_byte_identical(seg_model, syn_slide: Path,
                                                     tmp_path: Path) -> None:
    cfg = CFG.replace(tissue_only=False)
    ref = tmp_path / "ref.ome.zarr"
    run_task(predict_slide(syn_slide, seg_model, cfg, out_path=ref))
    out = tmp_path / "run.ome.zarr"
    gen = predict_slide(syn_slide, seg_model, cfg, out_path=out)
    written = 0
    for ev in gen:  # interrupt after 3 blocks have landed
        if isinstance(ev, Progress) and "y0" in ev.info:
            written += 1
            if written == 3:
                break
    gen.close()
    assert not is_complete(out)
    import zarr

    from napari_histo.engine.inference.writer import done_dir

    n_done = len(list(done_dir(out).iterdir()))
    g = zarr.open_group(str(ref), mode="r")
    n_blocks = int(np.prod([-(-s // c) for s, c in zip(g["0"].shape, g["0"].chunks,
                                                          strict=True)]))
    # the 3 reported + the writes still in flight (their count depends on the machine's load)
    assert 3 <= n_done < n_blocks
    with pytest.raises(OutputExistsError):
        run_task(predict_slide(syn_slide, seg_model, cfg, out_path=out))
    events: list = []
    res = run_task(predict_slide(syn_slide, seg_model, cfg.replace(resume=True), out_path=out),
                   events.append)
    assert res.complete
    assert res.stats.resumed_tiles > 0 and res.stats.computed_tiles < res.stats.total_tiles
    a, b = _arrays(ref), _arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert _chunk_bytes(ref) == _chunk_bytes(out)
    assert not done_dir(out).exists()  # markers go once the store is complete
    # resuming a complete run does nothing
    again = run_task(predict_slide(syn_slide, seg_model, cfg.replace(resume=True), out_path=out))
    assert again.complete


def test_store_announced_first_and_first_block_after_one_batch(seg_model, syn_slide: Path,
                                                               tmp_path: Path) -> None:
    """A viewer gets the store before any compute, and the first block after one batch."""
    out = tmp_path / "first.ome.zarr"
    cfg = CFG.replace(tissue_only=False, batch_size=2, block_tiles=1)
    kinds = []
    for ev in predict_slide(syn_slide, seg_model, cfg, out_path=out):
        if isinstance(ev, Progress) and ev.store is not None:
            assert Path(ev.store) == out and out.is_dir()
            kinds.append("store")
        elif isinstance(ev, Progress) and ev.info and "y0" in ev.info:
            kinds.append("block")
        elif isinstance(ev, Progress):
            kinds.append("batch")
    assert kinds[0] == "store"
    assert kinds[1:3] == ["batch", "block"]  # reported right after its batch, not later


def test_output_geometry_matches_the_store(seg_model, syn_slide: Path, tmp_path: Path) -> None:
    from napari_histo.engine.inference import output_geometry
    from napari_histo.engine.inference.writer import read_meta

    region = (40, 64, 300, 420)
    cfg = CFG.replace(tissue_only=False)
    shape, down, origin = output_geometry(syn_slide, seg_model, cfg, region=region)
    out = tmp_path / "geo.ome.zarr"
    res = run_task(predict_slide(syn_slide, seg_model, cfg, region=region, out_path=out))
    meta = read_meta(out)
    assert shape == tuple(res.probabilities.shape[-2:])
    assert list(down) == meta["downsample"] and list(origin) == meta["origin_px"]


def test_cancel_stops_between_batches(seg_model, syn_slide: Path, tmp_path: Path) -> None:
    before = threading.active_count()
    out = tmp_path / "c.ome.zarr"
    gen = predict_slide(syn_slide, seg_model, CFG.replace(tissue_only=False), out_path=out)
    n = 0
    for ev in gen:
        if isinstance(ev, Progress):
            n += 1
            if n == 2:
                break
    gen.close()
    assert not is_complete(out)
    assert threading.active_count() <= before
    from napari_histo.engine.inference.writer import done_dir

    done = len(list(done_dir(out).iterdir()))
    assert done < 6  # 2 x 3 blocks in all


def test_patch_heatmap(cls_ckpt: Path, syn_slide: Path) -> None:
    res = run_task(predict_heatmap(syn_slide, cls_ckpt, CFG.replace(tissue_only=False),
                                   region=(0, 0, 512, 1024)))
    # level 1 at 1 um/px; region = 256 x 512 px; 32 px cells
    assert res.probabilities.shape == (8, 16)
    assert res.mpp == pytest.approx((32.0, 32.0))
    assert res.downsample == (64.0, 64.0)
    p = res.probabilities
    assert (p > 0).all() and (p < 1).all()
    res2 = run_task(predict_heatmap(syn_slide, cls_ckpt, CFG.replace(tissue_only=False),
                                    stride=64, context=96, region=(0, 0, 512, 1024)))
    assert res2.probabilities.shape == (4, 8)


def test_checkpoint_expecting_other_channels(tmp_path: Path, syn_slide: Path) -> None:
    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model

    spec = {"name": "unet-tiny", "in_channels": 4, "num_classes": 2}
    ck = save_checkpoint(tmp_path / "c4.pt", build_model(spec), spec=spec, task="segment",
                         class_names=["a", "b"], preprocessing=default_preprocessing(mpp=1.0))
    with pytest.raises(ConfigError, match="4 input channel"):
        run_task(predict_slide(syn_slide, ck, CFG))


def test_slide_without_mpp(seg_model, tmp_path: Path) -> None:
    from napari_histo.io.synthetic import write_synthetic_slide

    p, _ = write_synthetic_slide(tmp_path / "nompp.tif", shape=(512, 512), levels=2, mpp=None,
                                 with_mask=False)
    with pytest.raises(ConfigError, match="no microns-per-pixel"):
        run_task(predict_slide(p, seg_model, CFG))
    res = run_task(predict_slide(p, seg_model, CFG.replace(level=1)))
    assert res.probabilities.shape == (256, 256) and res.mpp is None
    res = run_task(predict_slide(p, seg_model, CFG.replace(slide_mpp=0.5)))
    assert res.probabilities.shape == (256, 256) and res.mpp == pytest.approx((1.0, 1.0))


def test_unwritable_output(seg_model, syn_slide: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot"):
        run_task(predict_slide(syn_slide, seg_model, CFG, out_path=blocker / "out.ome.zarr"))


def test_corrupt_tile_is_reported_and_the_rest_predicted(seg_model, tmp_path: Path) -> None:
    import tifffile

    from napari_histo.io.synthetic import write_synthetic_slide

    p, _ = write_synthetic_slide(tmp_path / "bad.tif", shape=(512, 768), tile=256, levels=1,
                                 mpp=1.0, with_mask=False)
    with tifffile.TiffFile(p) as tif:
        page = tif.pages[0]
        offs, counts = page.dataoffsets, page.databytecounts
        i = 1 * 3 + 1  # tile row 1, column 1 (of 2 x 3)
        off, n = offs[i], counts[i]
    raw = bytearray(p.read_bytes())
    raw[off : off + n] = b"\x00" * n
    p.write_bytes(bytes(raw))
    events: list = []
    res = run_task(predict_slide(p, seg_model, CFG.replace(tissue_only=False)), events.append)
    warnings = [e for e in events if isinstance(e, Message) and e.level == "warning"]
    # the reader shows the corrupt tile white and warns: the run reports it and goes on
    assert warnings and "row 1, column 1" in warnings[0].text
    assert res.failed_tiles >= 1 and res.stats.read_warnings
    assert res.complete and (res.probabilities > 0).all()


def test_real_svs_files(seg_model, shared_data: Path) -> None:
    wsi = shared_data / "wsi"
    res = run_task(predict_slide(wsi / "CMU-1-Small-Region.svs", seg_model, CFG,
                                 region=(1000, 600, 1600, 1400)))
    assert res.mpp == pytest.approx((0.998, 0.998), rel=0.01)
    assert res.probabilities.shape == (300, 400)
    with pytest.raises(ConfigError, match="no microns-per-pixel"):
        run_task(predict_slide(wsi / "tcga-cr-7395-01a-01-ts1.svs", seg_model, CFG))
    res = run_task(predict_slide(wsi / "tcga-cr-7395-01a-01-ts1.svs", seg_model,
                                 CFG.replace(level=1, tile=256, overlap=32),
                                 region=(0, 0, 3567, 1400)))
    assert res.probabilities.shape == (1783, 700) and res.skipped_tiles > 0


def test_slide_edges_are_mirrored_not_white(tmp_path: Path, shared_data: Path) -> None:
    """A plain image (GlaS) is tissue to its border: the halo beyond it mirrors the image,
    as the array path and the training crops do, instead of a white frame."""
    from PIL import Image

    from napari_histo.engine.inference._source import SlideSource, resolve_resolution
    from napari_histo.io.slide import open_slide

    png = shared_data / "glas_gland_segmentation" / "images" / "testA_44.png"
    img = np.asarray(Image.open(png).convert("RGB"))
    with open_slide(png) as slide:
        res = resolve_resolution(slide, mpp=None, level=None, slide_mpp=None, model_mpp=None)
        src = SlideSource(slide, res, (0.0, 0.0))
        h, w = src.shape
        out = src.read((-16, -16, h + 16, w + 16))
        # far off the slide (a region near its edge): white glass as before
        off = src.read((h + 100, w + 100, h + 164, w + 164))
    np.testing.assert_array_equal(out, np.pad(img, ((16, 16), (16, 16), (0, 0)), mode="reflect"))
    assert (off == 255).all()
