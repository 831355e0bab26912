"""Screenshot of a real napari window showing a slide with its ground-truth overlay.

The PNG goes to ``$NAPARI_HISTO_SCREENSHOT_DIR`` when set (CI keeps it as an artifact),
else to the test's tmp_path. The offscreen Qt platform the suite uses draws a black canvas,
so the window is opened in a subprocess on the X server (``QT_QPA_PLATFORM=xcb``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).with_name("_screenshot.py")


def overlay_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels coloured by the red tumor overlay (far redder than H&E pink)."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return float(np.mean((r - g > 100) & (r - b > 80)))


def test_screenshot_slide_with_mask(tmp_path: Path) -> None:
    """The sample slide (smaller, same look) with its tumor ground truth, in a real window."""
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server (run the tests under xvfb-run)")
    from napari_histo.plugin._sample_data import sample_slide_path

    slide = sample_slide_path(shape=(2048, 3072), folder=tmp_path / "sample")
    out_dir = Path(os.environ.get("NAPARI_HISTO_SCREENSHOT_DIR") or tmp_path)
    out = out_dir / "reader_slide_mask.png"
    env = dict(os.environ, QT_QPA_PLATFORM="xcb")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), str(slide), str(out)],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert ["Labels", f"{slide.stem} ground truth"] in info["layers"]

    from PIL import Image

    rgb = np.asarray(Image.open(out).convert("RGB"))
    assert rgb.shape[0] > 200 and rgb.shape[1] > 200
    # not blank: the slide's H&E colours are drawn
    assert rgb.reshape(-1, 3).std(axis=0).max() > 20
    pink = (rgb[..., 0] > 180) & (rgb[..., 1] > 100) & (rgb[..., 1] < 170) & (rgb[..., 2] > 140)
    assert pink.mean() > 0.05
    # the tumor overlay is there (~4% of the slide's area)
    assert overlay_fraction(rgb) > 0.005
