"""Segment on an image without a pixel size: at the one set in the Pixel size widget, or on
level 0 with one notification saying so (issue 11, point 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin._pixel_size import apply_pixel_size
from napari_histo.plugin._segment_widget import SegmentWidget


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAPARI_HISTO_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def checkpoint_at_1_24um(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``unet-tiny`` checkpoint trained (random weights) at 1.24 um/px."""
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model, make_spec

    torch.manual_seed(0)
    spec = make_spec("unet-tiny", num_classes=2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-1.24.pt"
    return save_checkpoint(path, build_model(spec), spec=spec, task="segment",
                           class_names=["background", "gland"],
                           preprocessing=default_preprocessing(patch_size=128, mpp=1.24))


def _run(qtbot, viewer, image, ckpt):
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(ckpt)
    viewer.reset_view()
    h = w.run("current view")
    assert h is not None
    qtbot.waitUntil(lambda: h.done, timeout=60000)
    qtbot.waitUntil(lambda: w.result is not None or h.error is not None, timeout=5000)
    assert h.error is None, h.error
    return w.result


def test_segment_uses_the_pixel_size_set_by_the_user(
    make_napari_viewer, qtbot, glas_pair, checkpoint_at_1_24um, no_threads_left,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_warning", lambda msg: shown.append(str(msg)))
    viewer = make_napari_viewer()
    image, _mask = viewer.open(str(glas_pair[0]), plugin="napari-histo")
    apply_pixel_size(viewer, image, 0.62)
    res = _run(qtbot, viewer, image, checkpoint_at_1_24um)
    assert not [m for m in shown if "no pixel size" in m]
    # run at the model's 1.24 um/px: half the image's 0.62 um/px grid, in microns
    np.testing.assert_allclose(res.heatmap.scale[-2:], (1.24, 1.24), rtol=1e-6)
    assert [str(u) for u in res.heatmap.units] == ["micrometer", "micrometer"]
    assert viewer.layers.extent.units is not None
    h, w = image.data.shape[:2]
    assert abs(res.heatmap.data.shape[0] - h / 2) <= 1 and abs(res.heatmap.data.shape[1] - w / 2) <= 1


def test_segment_without_pixel_size_says_so_once(
    make_napari_viewer, qtbot, glas_pair, checkpoint_at_1_24um, no_threads_left,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_warning", lambda msg: shown.append(str(msg)))
    viewer = make_napari_viewer()
    image, _mask = viewer.open(str(glas_pair[0]), plugin="napari-histo")
    res = _run(qtbot, viewer, image, checkpoint_at_1_24um)
    assert len([m for m in shown if "no pixel size" in m]) == 1
    assert res.heatmap.data.shape[:2] == image.data.shape[:2]  # level 0 as is
    # setting the pixel size afterwards moves the prediction with the image
    moved = apply_pixel_size(viewer, image, 0.62)
    assert res.heatmap in moved and res.labels in moved
    for layer in (res.heatmap, res.labels, _mask):
        np.testing.assert_allclose(layer.scale[-2:], image.scale[-2:])
        assert [str(u) for u in layer.units[-2:]] == ["micrometer", "micrometer"]
    assert viewer.layers.extent.units is not None
