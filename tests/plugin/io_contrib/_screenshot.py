"""Open a slide in a shown napari window through the napari-histo reader and save a PNG.

Run as a script (``python _screenshot.py SLIDE OUT.png``) under an X server with
``QT_QPA_PLATFORM=xcb``: the offscreen Qt platform renders a black canvas, so the screenshot
test runs this in a subprocess with a real (Xvfb) window. Prints one JSON line with the layers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    slide, out = Path(argv[0]), Path(argv[1])
    import napari
    import numpy as np
    from PIL import Image

    viewer = napari.Viewer(show=True, title="napari-histo")
    viewer.window._qt_window.resize(1400, 1000)
    layers = viewer.open(slide, plugin="napari-histo")
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    scale_bar = getattr(overlays, "scale_bar", None) or viewer.scale_bar  # napari < 0.9
    scale_bar.visible = True
    scale_bar.box = True
    viewer.reset_view()
    app = napari.qt.get_qapp()
    shot = None
    # multiscale tiles load asynchronously: render until two frames agree
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        nxt = viewer.screenshot(canvas_only=True, flash=False)
        if shot is not None and nxt.shape == shot.shape and np.array_equal(nxt, shot):
            break
        shot = nxt
    assert shot is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(shot)[..., :3]).save(out)
    print(
        json.dumps(
            {"layers": [[type(la).__name__, la.name] for la in layers], "shape": list(shot.shape)}
        )
    )
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
