"""Every widget of the manifest docks through napari's plugin machinery."""

from __future__ import annotations

import pytest

WIDGETS = ["Segment", "Patch heatmap", "Train", "Correct and fine-tune", "Evaluate",
           "Stain normalization", "Pixel size", "Past predictions", "Review queue"]


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


def test_widgets_from_the_plugins_menu_open_as_tabs(make_napari_viewer, qtbot):
    """napari stacks plugin docks one below the other; ours join each other as tabs."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer()
    docks = []
    for name in ("Segment", "Train", "Evaluate"):
        dock, _ = viewer.window.add_plugin_dock_widget("napari-histo", name)
        QApplication.processEvents()  # the widget joins the tabs once it sits in its dock
        docks.append(dock)
    main = viewer.window._qt_window
    tabbed = set(main.tabifiedDockWidgets(docks[0]))
    assert docks[1] in tabbed and docks[2] in tabbed
    # the tabs say "Segment", not "Segm..."; the dock's own title bar keeps the plugin name
    assert [d.windowTitle() for d in docks] == ["Segment", "Train", "Evaluate"]
    assert viewer.window._dock_widgets["Segment (napari-histo)"] is docks[0]


def test_pickers_show_the_full_name_and_file_as_tooltip(make_napari_viewer, tmp_path):
    import numpy as np
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-histo", "Segment")
    name = "a-slide-with-a-name-far-too-long-for-the-picker-" * 2
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name=name,
                     metadata={"napari_histo": {"path": str(tmp_path / "slide.svs")}})
    combo = widget._image_combo
    assert combo.value is viewer.layers[name]
    tip = combo.native.toolTip()
    assert name in tip and str(tmp_path / "slide.svs") in tip
    i = combo.native.currentIndex()
    assert combo.native.itemData(i, Qt.ItemDataRole.ToolTipRole) == tip
    widget._status_label.value = "a status line " * 10
    assert widget._status_label.native.toolTip() == "a status line " * 10
    widget._status_label.value = "done"
    assert widget._status_label.native.toolTip() == ""
