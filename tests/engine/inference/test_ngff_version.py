"""Prediction stores at the user's NGFF version (0.4 on zarr v2, 0.5 on zarr v3): valid for
ome_zarr_models and ome-zarr-py, resumable, and chosen from the CLI (``--ngff``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.cli import main
from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import run_task
from napari_histo.engine.inference import InferenceConfig, is_complete, predict_slide
from napari_histo.engine.inference.writer import open_prediction, read_meta

CFG = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=1, tissue_only=False)


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_prediction_store_validates(seg_model, syn_slide: Path, tmp_path: Path, ngff: str,
                                    ngff_check) -> None:
    out = tmp_path / "syn.ome.zarr"
    res = run_task(predict_slide(syn_slide, seg_model, CFG.replace(ngff_version=ngff),
                                 out_path=out))
    assert res.complete and is_complete(out)
    assert (out / ("zarr.json" if ngff == "0.5" else ".zattrs")).is_file()
    scale, translate = ngff_check.store(out, ngff)
    # slide 0.5 um/px, model 1.0 um/px: an output px covers 2 x 2 slide px from (0, 0)
    assert scale == pytest.approx((1.0, 1.0)) and translate == pytest.approx((0.25, 0.25))
    assert tuple(res.translate) == pytest.approx(translate)
    assert ngff_check.store(out / "labels" / "prediction", ngff, labels=True) == (scale,
                                                                                  translate)
    prob, lab, meta = open_prediction(out)
    assert meta == read_meta(out) and meta["complete"] and prob.shape == lab.shape == (384, 512)


def test_unfinished_05_store_resumes(seg_model, syn_slide: Path, tmp_path: Path) -> None:
    from napari_histo.core.progress import Progress

    cfg = CFG.replace(ngff_version="0.5")
    ref = run_task(predict_slide(syn_slide, seg_model, cfg, out_path=tmp_path / "ref.ome.zarr"))
    out = tmp_path / "r.ome.zarr"
    gen = predict_slide(syn_slide, seg_model, cfg, out_path=out)
    written = 0
    for ev in gen:  # interrupt after 2 blocks have landed
        if isinstance(ev, Progress) and "y0" in ev.info:
            written += 1
            if written == 2:
                break
    gen.close()
    assert not is_complete(out) and read_meta(out) is not None
    res = run_task(predict_slide(syn_slide, seg_model, cfg.replace(resume=True), out_path=out))
    assert res.complete and is_complete(out)
    for a, b in ((res.probabilities, ref.probabilities), (res.labels, ref.labels)):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]))


def test_cli_ngff_option(seg_ckpt: Path, syn_slide: Path, tmp_path: Path, ngff_check) -> None:
    out = tmp_path / "cli.ome.zarr"
    args = ["predict", str(syn_slide), "--model", str(seg_ckpt), "--out", str(out), "--tile",
            "128", "--overlap", "32", "--batch-size", "4", "--quiet", "--ngff", "0.5"]
    assert main(args) == 0
    assert is_complete(out) and (out / "zarr.json").is_file()
    ngff_check.store(out, "0.5")
    with pytest.raises(SystemExit):
        main([*args[:-1], "0.3"])


def test_config_ngff_version() -> None:
    assert InferenceConfig().ngff_version == "0.4"
    assert InferenceConfig.from_dict({"ngff_version": "0.5"}).to_dict()["ngff_version"] == "0.5"
    with pytest.raises(ConfigError, match="ngff_version"):
        InferenceConfig(ngff_version="0.3")
