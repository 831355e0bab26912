"""Every widget of the manifest docks through napari's plugin machinery."""

from __future__ import annotations

import pytest

WIDGETS = ["Segment", "Patch heatmap", "Train", "Correct and fine-tune", "Evaluate",
           "Stain normalization", "Pixel size", "Past predictions"]


@pytest.mark.parametrize("name", WIDGETS)
def test_dock_from_manifest(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-histo", name)
    assert dock is not None
    assert widget is not None
    assert type(widget).__module__.startswith("napari_histo.plugin.")
    assert name in dock.name  # titled after the manifest's display_name
    assert dock.inner_widget() is widget
    native = getattr(widget, "native", widget)  # magicgui widgets wrap a QWidget
    assert dock.isAncestorOf(native)
    assert not native.isHidden()  # shown with the dock (the viewer window itself is not shown)
    # asking again gives the same dock, not a second copy of the widget
    assert viewer.window.add_plugin_dock_widget("napari-histo", name)[0] is dock
