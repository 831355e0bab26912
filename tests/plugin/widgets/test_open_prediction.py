"""A `napari-histo predict` output opens in napari as heatmap + labels, aligned with the slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.cli import main as cli


def test_cli_prediction_opens_aligned_with_slide(make_napari_viewer, cmu_svs: Path,
                                                tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.ome.zarr"
    region = (600, 400, 1400, 1300)  # level-0 px (y0, x0, y1, x1)
    assert cli(["predict", str(cmu_svs), "--model", str(tiny_checkpoint), "--out", str(out),
                "--region", ",".join(map(str, region)), "--quiet"]) == 0
    viewer = make_napari_viewer()
    slide = viewer.open(str(cmu_svs), plugin="napari-histo")[0]
    layers = viewer.open(str(out), plugin="napari-histo")
    kinds = {type(layer).__name__: layer for layer in layers}
    assert set(kinds) == {"Image", "Labels"}
    heat, labels = kinds["Image"], kinds["Labels"]
    assert heat.name.endswith("prediction heatmap") and labels.name.endswith("prediction labels")
    assert tuple(heat.contrast_limits) == (0.0, 1.0) and heat.colormap.name == "inferno"
    mpp = float(slide.scale[-1])
    for layer in (heat, labels):
        (y0, x0), (y1, x1) = layer.extent.world[:, -2:]  # pixel centres of the first/last px
        half = float(layer.scale[-1]) / 2
        # the same physical box as the region on the slide (within one slide pixel)
        assert y0 - half == pytest.approx((region[0] - 0.5) * mpp, abs=mpp)
        assert x0 - half == pytest.approx((region[1] - 0.5) * mpp, abs=mpp)
        assert y1 + half == pytest.approx((region[2] - 0.5) * mpp, abs=mpp)
        assert x1 + half == pytest.approx((region[3] - 0.5) * mpp, abs=mpp)
    lab0 = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    prob0 = np.asarray(heat.data[0] if heat.multiscale else heat.data, dtype=np.float32)
    np.testing.assert_array_equal(lab0, (prob0 >= 0.5).astype(lab0.dtype))
