"""Fixtures for the dock-widget tests: isolated user cache, tiny checkpoints, GlaS/SVS paths.

Every test here drives a real ``napari.Viewer`` (``make_napari_viewer``) under Xvfb and real
torch models on CPU; the tiny ``unet-tiny`` checkpoint is trained for a few steps once per
session so predictions are not all-zero noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recently-used lists, demo model cache and prediction caches go to a temp folder."""
    home = tmp_path_factory.mktemp("napari_histo_home")
    monkeypatch.setenv("NAPARI_HISTO_HOME", str(home))
    monkeypatch.delenv("NAPARI_HISTO_NOTHREADS", raising=False)


@pytest.fixture(scope="session")
def glas_pair(shared_data: Path) -> tuple[Path, Path]:
    """One GlaS image and its binary gland mask."""
    root = shared_data / "glas_gland_segmentation"
    return root / "images" / "train_1.png", root / "labels" / "train_1.png"


@pytest.fixture(scope="session")
def cmu_svs(shared_data: Path) -> Path:
    """The small real Aperio slide (one level, 0.499 um/px)."""
    return shared_data / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture
def svs_segment(make_napari_viewer, cmu_svs: Path, tiny_checkpoint: Path):
    """A factory: a viewer on the CMU SVS with a docked Segment widget holding the tiny
    checkpoint, zoomed on a ``view`` um window round (700, 550) (no zoom when None)."""

    def make(view: float | None = 200.0, checkpoint: Path | None = None):
        from napari_histo.plugin._result_layers import camera_of
        from napari_histo.plugin._segment_widget import SegmentWidget

        viewer = make_napari_viewer()
        image = viewer.open(str(cmu_svs), plugin="napari-histo")[0]
        seg = SegmentWidget(viewer)
        viewer.window.add_dock_widget(seg)
        seg._image_combo.value = image
        seg.set_checkpoint(checkpoint or tiny_checkpoint)
        if view is not None:
            camera_of(viewer).center = (700.0, 550.0)
            camera_of(viewer).zoom = max(viewer.canvas.size) / view
        return viewer, image, seg

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``unet-tiny`` segmentation checkpoint (random weights; fast on CPU)."""
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model, make_spec

    torch.manual_seed(0)
    spec = make_spec("unet-tiny", num_classes=2)
    model = build_model(spec)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, model, spec=spec, task="segment",
                           class_names=["background", "gland"],
                           preprocessing=default_preprocessing(patch_size=128))


@pytest.fixture
def no_threads_left():
    """Assert at teardown that no napari-histo task is still running."""
    yield
    from napari_histo.plugin._workers import active_handles

    assert not active_handles(), f"tasks still running: {active_handles()}"


def pytest_collection_modifyitems(items):  # noqa: D103
    for item in items:
        if "plugin/widgets" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gui)


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic sample slide is generated once per session into a temp cache."""
    folder = tmp_path_factory.mktemp("sample_cache")
    old = os.environ.get("NAPARI_HISTO_CACHE")
    os.environ["NAPARI_HISTO_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("NAPARI_HISTO_CACHE", None)
    else:
        os.environ["NAPARI_HISTO_CACHE"] = old


@pytest.fixture(scope="session")
def classifier_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``cnn-small`` patch classifier (32 px context, one output pixel per 16 px)."""
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model, make_spec

    torch.manual_seed(0)
    spec = make_spec("cnn-small", num_classes=2)
    model = build_model(spec)
    path = tmp_path_factory.mktemp("cls") / "cls.pt"
    pre = default_preprocessing(patch_size=32, context_size=32, center_size=16)
    return save_checkpoint(path, model, spec=spec, task="classify",
                           class_names=["normal", "tumor"], preprocessing=pre)
