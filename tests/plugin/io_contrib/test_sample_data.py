"""Sample data contribution: File > Open Sample > napari-histo, offline, cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_open_sample_through_napari(
    make_napari_viewer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_histo.engine import demo as sample  # the recipe's constants live here
    from napari_histo.plugin import _sample_data

    monkeypatch.setenv(_sample_data.CACHE_ENV, str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-histo", "synthetic_slide")
    names = [layer.name for layer in layers]
    assert names == ["synthetic_he", "synthetic_he ground truth"]
    image, labels = layers
    assert image.multiscale and image.rgb and len(image.data) == sample.SAMPLE_LEVELS
    assert tuple(image.data[0].shape[:2]) == _sample_data.SAMPLE_SHAPE
    np.testing.assert_allclose(image.scale, (sample.SAMPLE_MPP,) * 2)
    assert image.metadata["napari_histo"]["sample"] is True
    # the mask is stored at 1/4 resolution and stretched over the slide
    np.testing.assert_allclose(
        labels.scale, (sample.SAMPLE_MPP * sample.MASK_DOWNSAMPLE,) * 2
    )
    small = np.asarray(labels.data[-1] if labels.multiscale else labels.data)
    assert set(np.unique(small)) == {0, 1}
    assert 0.005 < (small == 1).mean() < 0.5

    # cached: a second call reuses the files instead of regenerating them
    path = _sample_data.sample_slide_path()
    assert path.parent == tmp_path / "cache" / f"sample-v{_sample_data.SAMPLE_VERSION}"
    mtime = path.stat().st_mtime_ns
    assert _sample_data.sample_slide_path() == path
    assert path.stat().st_mtime_ns == mtime
    assert path.with_name(path.stem + "_mask.tif").is_file()


def test_sample_slide_path_custom_shape(tmp_path: Path) -> None:
    from napari_histo.io.slide import open_slide
    from napari_histo.plugin._sample_data import sample_slide_path

    path = sample_slide_path(shape=(512, 768), folder=tmp_path)
    with open_slide(path) as slide:
        assert slide.shape == (512, 768)
        assert slide.mpp is not None and abs(slide.mpp[0] - 0.5) < 1e-6
