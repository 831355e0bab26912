"""Screenshot of a widget in action from a real (xcb) window: the PNG must not be blank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("screenshots.py")


@pytest.mark.slow
def test_stain_screenshot_is_not_blank(tmp_path, shared_data):
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", NAPARI_HISTO_HOME=str(tmp_path / "home"))
    if not env.get("DISPLAY"):
        pytest.skip("needs an X display (run under xvfb-run)")
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--only", "stain"], env=env,
                   check=True, timeout=300)
    from skimage.io import imread

    img = imread(tmp_path / "widget_stain.png")
    assert img.shape[0] > 500 and img.shape[1] > 800
    # the canvas holds tissue: many distinct colours, not a blank black/grey frame
    canvas = img[100:-100, 350:-500, :3].reshape(-1, 3)
    assert len(np.unique(canvas[::97], axis=0)) > 200
