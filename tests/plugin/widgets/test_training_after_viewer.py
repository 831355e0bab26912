"""Training in a process that already drew with software OpenGL must not crash.

Mesa's llvmpipe loads libLLVM; torch's first optimizer imports triton, whose own LLVM then
segfaulted the process. The engine guards against it itself (not only the widgets), so a
script or the CLI training next to an open viewer is safe. A subprocess, since the first
optimizer of the test session may already have been built.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import sys, numpy as np, napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)   # real canvas: loads the OpenGL driver (llvmpipe here)
viewer.add_image(np.zeros((64, 64), np.uint8))
for _ in range(10):
    QApplication.processEvents()
from napari_histo.core.progress import run_task
from napari_histo.engine.datasets import ArraySample
from napari_histo.engine.training import TrainConfig, train
rng = np.random.default_rng(0)
img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
lab = (img[..., 0] > 127).astype(np.uint8)
cfg = TrainConfig(out_dir=sys.argv[1], model="unet-tiny", patch_size=32, batch_size=2,
                  epochs=1, steps_per_epoch=1, val_fraction=0.0, preview=False)
res = run_task(train(cfg, arrays=[ArraySample(img, lab, None, group="a")]))
print("trained", res.best_checkpoint is not None)
viewer.close()
"""


def test_train_after_a_viewer_has_drawn(tmp_path) -> None:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X display (run under xvfb-run)")
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", NAPARI_HISTO_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained True" in r.stdout
