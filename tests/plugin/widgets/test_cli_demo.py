"""``napari-histo demo --headless``: sample slide -> small model trained offline -> whole-slide
prediction -> Dice vs the sample's mask, and the GUI launcher never imports napari."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_headless_demo_prints_dice(tmp_path, capsys, monkeypatch):
    from napari_histo.cli import main

    monkeypatch.setenv("NAPARI_HISTO_HOME", str(tmp_path / "home"))
    rc = main(["demo", "--headless", "--out", str(tmp_path / "demo"), "--epochs", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Dice" in out and "prediction:" in out
    assert (tmp_path / "demo" / "synthetic_he-prediction.ome.zarr").is_dir()
    # the model lives where the GUI demo looks for it (one shared demo model)
    assert (tmp_path / "home" / "demo-model" / "demo-unet-tiny-v1.pt").is_file()


def test_gui_and_headless_demo_share_one_model_and_slide(tmp_path, monkeypatch):
    """Both demos resolve the same model file and the same sample slide, so whichever runs
    first trains/writes them and the other reuses them (no second 90 s training)."""
    import inspect

    from napari_histo.cli import _demo as cli_demo
    from napari_histo.core import settings
    from napari_histo.engine import demo as engine_demo
    from napari_histo.plugin import _sample_data
    from napari_histo.plugin import demo as gui_demo

    monkeypatch.setenv("NAPARI_HISTO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NAPARI_HISTO_CACHE", str(tmp_path / "cache"))
    model = engine_demo.demo_model_path()
    assert model == settings.demo_model_dir() / engine_demo.DEMO_MODEL_NAME
    assert model == tmp_path / "home" / "demo-model" / "demo-unet-tiny-v1.pt"
    # the GUI demo and the headless demo both take the default (shared) model folder
    assert "demo_model_path(model_dir)" in inspect.getsource(gui_demo.run_demo)
    assert "ensure_demo_model(slide, mask, None" in inspect.getsource(cli_demo.headless)
    assert inspect.signature(gui_demo.run_demo).parameters["model_dir"].default is None
    # one sample slide for File > Open Sample, the GUI demo and the headless demo
    slide = _sample_data.sample_slide_path(shape=(256, 384))
    assert slide == engine_demo.sample_slide_path(shape=(256, 384))
    assert slide.parent == tmp_path / "cache" / "sample-v1"
    # a cached model is reused without training (the first GUI demo is fast once either ran)
    model.parent.mkdir(parents=True)
    model.write_bytes(b"cached")
    from napari_histo.core.progress import run_task

    got = run_task(engine_demo.ensure_demo_model(slide, slide, None), lambda ev: None)
    assert got == model


def test_cli_demo_does_not_import_napari():
    code = ("import sys; from napari_histo.cli import build_parser; build_parser(); "
            "import napari_histo.cli._demo; "
            "assert 'napari' not in sys.modules and 'qtpy' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('napari.', 'qtpy'))]")
    subprocess.run([sys.executable, "-c", code], check=True)
