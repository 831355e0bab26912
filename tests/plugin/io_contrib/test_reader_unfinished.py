"""A prediction store opens in napari with its state: unfinished runs are named and warned
about, and the tiles a run could not read are in the layer metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._reader import get_reader


def _store(path: Path, *, finish: bool, failed: int = 0) -> Path:
    """A real 2 x 2-block prediction store written by the engine's ZarrSink."""
    from napari_histo.engine.inference.writer import ZarrSink

    meta = {"task": "segment", "class_names": ["normal", "tumor"], "slide_name": "case",
            "fingerprint": {"out_shape": [64, 64], "chunk": 32}, "downsample": [2.0, 2.0],
            "origin_px": [0.0, 0.0], "mpp": [1.0, 1.0], "threshold": 0.5,
            "prob_dtype": "float16"}
    sink = ZarrSink.create(path, shape=(64, 64), chunk=32, num_classes=2, prob_dtype="float16",
                           threshold=0.5, meta=meta, mpp=(1.0, 1.0), origin_um=(0.0, 0.0))
    probs = np.stack([np.full((32, 32), 0.2, np.float32), np.full((32, 32), 0.8, np.float32)])
    sink.write((0, 0), (0, 0, 32, 32), probs)
    if finish:
        sink.finish(failed_tiles=failed, failed_boxes=[[0, 0, 32, 32]] if failed else [])
    return path


def test_unfinished_prediction_is_named_and_warned(tmp_path: Path) -> None:
    path = _store(tmp_path / "case.ome.zarr", finish=False)
    reader = get_reader(str(path))
    assert reader is not None
    with pytest.warns(UserWarning, match=r"unfinished prediction \(1 of 4 blocks written\)"):
        layers = reader(str(path))
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["case prediction heatmap (unfinished)", "case prediction labels (unfinished)"]
    for _, kw, _ in layers:
        status = kw["metadata"]["napari_histo"]["prediction"]
        assert status["complete"] is False and status["blocks_done"] == 1


def test_failed_tiles_are_in_the_layer_metadata(tmp_path: Path, recwarn) -> None:
    path = _store(tmp_path / "case.ome.zarr", finish=True, failed=3)
    layers = get_reader(str(path))(str(path))
    assert [kw["name"] for _, kw, _ in layers] == ["case prediction heatmap",
                                                   "case prediction labels"]
    status = layers[0][1]["metadata"]["napari_histo"]["prediction"]
    assert status["complete"] and status["failed_tiles"] == 3
    assert status["failed_boxes"] == [[0, 0, 32, 32]]
    assert any("3 slide tile(s) could not be decoded" in str(w.message) for w in recwarn)
    assert not any("unfinished" in str(w.message) for w in recwarn)
