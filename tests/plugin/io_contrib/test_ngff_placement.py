"""napari-histo places OME-Zarr layers where napari-ome-zarr does (level 0's scale and
translation), for prediction stores (NGFF 0.4 and 0.5) and the napari writer's output, and
every store validates with ome_zarr_models and opens with ome-zarr-py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._reader import get_reader
from napari_histo.plugin._writer import write_image_zarr, write_labels_zarr

NGFF = ["0.4", "0.5"]


def _prediction(path: Path, ngff: str, *, mpp: bool = True) -> Path:
    """A finished 1200 x 1600 prediction store (4 levels) written by the engine's ZarrSink."""
    from napari_histo.engine.inference.writer import ZarrSink

    down, origin = (4.0, 4.0), (96.0, 32.0)  # output px = 4 level-0 px, region at (96, 32)
    unit = (0.25, 0.25) if mpp else (1.0, 1.0)
    scale = (unit[0] * down[0], unit[1] * down[1])
    translate = tuple((origin[i] + (down[i] - 1) / 2) * unit[i] for i in range(2))
    meta = {"task": "segment", "class_names": ["normal", "tumor"], "slide_name": "case",
            "fingerprint": {"out_shape": [1200, 1600], "chunk": 400}, "downsample": list(down),
            "origin_px": list(origin), "mpp": list(scale) if mpp else None, "threshold": 0.5,
            "prob_dtype": "float16"}
    sink = ZarrSink.create(path, shape=(1200, 1600), chunk=400, num_classes=2,
                           prob_dtype="float16", threshold=0.5, meta=meta, mpp=scale,
                           origin_um=translate, ngff_version=ngff)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    for by in range(3):
        for bx in range(4):
            p1 = rng.random((400, 400), dtype=np.float32)
            sink.write((by, bx), (by * 400, bx * 400, by * 400 + 400, bx * 400 + 400),
                       np.stack([1 - p1, p1]))
    sink.finish()
    return path


def _layers(path: Path) -> list:
    reader = get_reader(str(path))
    assert reader is not None
    return reader(str(path))


@pytest.mark.parametrize("ngff", NGFF)
def test_prediction_store_placed_like_napari_ome_zarr(tmp_path: Path, ngff: str,
                                                      ngff_check) -> None:
    path = _prediction(tmp_path / "case.ome.zarr", ngff)
    scale, translate = ngff_check.store(path, ngff)
    assert scale == pytest.approx((1.0, 1.0)) and translate == pytest.approx((24.375, 8.375))
    ngff_check.store(path / "labels" / "prediction", ngff, labels=True)
    layers = _layers(path)
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    for data, kw, _ in layers:
        assert len(data) == 4  # a multiscale: napari places it by level 0 alone
        assert tuple(kw["scale"]) == pytest.approx(scale)
        assert tuple(kw["translate"]) == pytest.approx(translate)
        assert tuple(kw["units"]) == ("um", "um")


def test_prediction_without_mpp_lives_in_level0_pixels(tmp_path: Path, ngff_check) -> None:
    path = _prediction(tmp_path / "px.ome.zarr", "0.4", mpp=False)
    scale, translate = ngff_check.store(path, "0.4")
    assert scale == (4.0, 4.0) and translate == (97.5, 33.5)
    for _, kw, _ in _layers(path):
        assert tuple(kw["scale"]) == scale and tuple(kw["translate"]) == translate
        assert tuple(kw["units"]) == ("pixel", "pixel")


@pytest.mark.parametrize("kind", ["labels", "image"])
def test_napari_writer_output_validates_and_reopens_in_place(tmp_path: Path, kind: str,
                                                             ngff_check) -> None:
    rng = np.random.default_rng(2)
    path = str(tmp_path / f"{kind}.ome.zarr")
    attrs = {"name": kind, "scale": (0.5, 0.5), "units": ("um", "um"), "metadata": {}}
    if kind == "labels":
        data = rng.integers(0, 3, (700, 600)).astype(np.int32)
        write_labels_zarr(path, data, attrs)
    else:
        data = rng.random((700, 600)).astype(np.float32)
        write_image_zarr(path, data, attrs)
    scale, translate = ngff_check.store(Path(path), "0.4", labels=kind == "labels")
    assert scale == (0.5, 0.5) and translate == (0.0, 0.0)
    (data0, kw, layer_kind) = _layers(Path(path))[0]
    assert layer_kind == kind
    assert tuple(kw["scale"]) == scale and tuple(kw["translate"]) == translate
    np.testing.assert_array_equal(np.asarray(data0[0]), data)
