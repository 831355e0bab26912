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
    assert (tmp_path / "demo" / "model" / "demo-unet-tiny-v1.pt").is_file()


def test_cli_demo_does_not_import_napari():
    code = ("import sys; from napari_histo.cli import build_parser; build_parser(); "
            "import napari_histo.cli._demo; "
            "assert 'napari' not in sys.modules and 'qtpy' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('napari.', 'qtpy'))]")
    subprocess.run([sys.executable, "-c", code], check=True)
