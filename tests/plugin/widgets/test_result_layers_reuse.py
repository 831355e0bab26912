"""Result layers in a real viewer: a rerun replaces the widget's own layers but keeps renamed or
painted ones, names are short and cut at the end, the heatmap leaves tissue visible, patch
cells are outlines cut at the slide's edge and the training preview follows its image."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histo.plugin import _result_layers as rl

LONG = "/data/slides/CMU-1-Small-Region-with-a-rather-long-scanner-name.svs"


def _slide(viewer, name="slide", source=LONG, shape=(1000, 1000)):
    return viewer.add_image(np.zeros((*shape, 3), dtype=np.uint8), rgb=True, name=name,
                            scale=(0.5, 0.5), metadata={"source": source})


def _prob(shape=(250, 250), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32)


def _ours(viewer):
    return [ly for ly in viewer.layers if rl.RESULT_KEY in ly.metadata]


def test_rerun_replaces_own_layers_keeps_renamed_and_painted(make_napari_viewer):
    viewer = make_napari_viewer()
    image = _slide(viewer)
    first = rl.add_prediction_layers(viewer, image, _prob(), downsample=(4, 4),
                                     class_names=["background", "tumour"])
    assert len(_ours(viewer)) == 2
    second = rl.add_prediction_layers(viewer, image, _prob(seed=1), downsample=(4, 4),
                                      class_names=["background", "tumour"])
    # the first run's layers went, no "[2]" names
    assert first.heatmap not in viewer.layers and first.labels not in viewer.layers
    assert [ly.name for ly in _ours(viewer)] == [second.heatmap.name, second.labels.name]
    assert not any("[" in ly.name for ly in viewer.layers)

    # renaming = keep; painting = keep
    second.heatmap.name = "my favourite heatmap"
    second.labels.paint((10, 10), 1)
    third = rl.add_prediction_layers(viewer, image, _prob(seed=2), downsample=(4, 4),
                                     class_names=["background", "tumour"])
    assert second.heatmap in viewer.layers and second.labels in viewer.layers
    assert third.heatmap in viewer.layers and third.labels in viewer.layers
    # another widget's layers for the same slide are left alone, and vice versa
    other = rl.add_prediction_layers(viewer, image, _prob((4, 4)), downsample=(250, 250),
                                     class_names=["background", "tumour"], owner="heatmap")
    assert third.heatmap in viewer.layers and other.heatmap in viewer.layers
    # a user layer with a result-like name is never touched
    user = viewer.add_labels(np.zeros((10, 10), np.uint8), name=third.labels.name + " mine")
    rl.add_prediction_layers(viewer, image, _prob(seed=3), downsample=(4, 4),
                             class_names=["background", "tumour"])
    assert user in viewer.layers and third.heatmap not in viewer.layers
    assert other.heatmap in viewer.layers


def test_names_short_and_cut_at_the_end(make_napari_viewer):
    viewer = make_napari_viewer()
    image = _slide(viewer)
    res = rl.add_prediction_layers(viewer, image, _prob(), downsample=(4, 4),
                                   class_names=["background", "tumour"])
    for layer, what in ((res.labels, "tumour"), (res.heatmap, "tumour map")):
        assert len(layer.name) <= rl.NAME_MAX
        assert layer.name.startswith("CMU-1-Small-Re")
        assert layer.name.endswith("… " + what)  # the stem is cut at its end, never mid-way
        assert layer.metadata[rl.RESULT_KEY]["source"] == LONG  # the full path is kept
    assert rl.result_name("/x/CMU-1.svs", "tumour") == "CMU-1 tumour"
    assert rl.result_name("case.ome.tiff", "tumour map") == "case tumour map"


def test_heatmap_low_values_transparent(make_napari_viewer):
    viewer = make_napari_viewer()
    image = _slide(viewer)
    res = rl.add_prediction_layers(viewer, image, _prob(), downsample=(4, 4))
    rgba = np.asarray(res.heatmap.colormap.map(np.array([0.0, 0.05, 0.09, 0.5, 1.0])))
    assert np.all(rgba[:3, 3] == 0.0)  # probability ~0 (most of a slide) draws nothing
    assert np.all(rgba[3:, 3] == pytest.approx(1.0))
    assert tuple(res.heatmap.contrast_limits) == (0.0, 1.0)
    # what napari draws for a heatmap pixel: colormap(value) * opacity, so alpha 0 at 0
    assert res.heatmap.colormap.name != "inferno"


def test_patch_cells_outlined_and_clipped_to_slide(make_napari_viewer):
    viewer = make_napari_viewer()
    image = _slide(viewer, shape=(1000, 900))
    # 4 x 4 cells of 300 px cover 1200 x 1200 px: past the slide's 1000 x 900
    prob = np.zeros((4, 4), np.float32)
    res = rl.add_prediction_layers(viewer, image, prob, downsample=(300, 300), owner="heatmap",
                                   class_names=["normal", "tumour"])
    lab = res.labels
    assert lab.contour >= 1
    s0 = np.asarray(image.scale)
    for ax, n0 in ((0, 1000), (1, 900)):
        # world end of the labels' last pixel <= world end of the slide's last pixel
        end = lab.translate[ax] + (lab.data.shape[ax] - 0.5) * lab.scale[ax]
        slide_end = image.translate[ax] + (n0 - 0.5) * s0[ax]
        assert abs(end - slide_end) <= lab.scale[ax] / 2 + 1e-6  # was 1200 px: 100 px past
        assert lab.scale[ax] <= 300 * s0[ax] / 4
    # tiles land and the threshold moves in the cell grid, drawn at the finer display grid
    res.paste((3, 2, 4, 4), np.ones((1, 2), np.float32))
    up = res.cells.up
    assert up > 1
    assert lab.data[3 * up, 2 * up] == 1 and lab.data[-1, -1] == 1 and lab.data[0, 0] == 0
    res.set_threshold(0.99)
    assert lab.data.shape == res.cells.shape and lab.data[-1, -1] == 1
    res.set_threshold(1.5)
    assert lab.data.max() == 0
    # the heatmap keeps one pixel per cell
    assert res.heatmap.data.shape == (4, 4)


def test_training_preview_follows_its_image(make_napari_viewer, qtbot, tiny_checkpoint,
                                            no_threads_left):
    from napari_histo.plugin._train_widget import TrainWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    a = viewer.add_image(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), name="a", rgb=True)
    b = viewer.add_image(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), name="b", rgb=True,
                         translate=(1000, 1000))
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._preview_check.value = True

    def preview(layer, epoch):
        w._preview_crop = (layer, (0, 0, 128, 128))
        w._start_preview(str(tiny_checkpoint), epoch)
        qtbot.waitUntil(lambda: w._preview_handle.done and w.preview_layer is not None
                        and w.preview_layer.metadata["napari_histo"]["epoch"] == epoch,
                        timeout=30000)
        return [ly for ly in viewer.layers
                if (ly.metadata.get("napari_histo") or {}).get("role") == "preview"]

    (p1,) = preview(a, 1)
    assert p1.metadata["napari_histo"]["where"]["image"] == "a"
    (p2,) = preview(a, 2)
    assert p2 is p1  # same image and crop: updated in place
    (p3,) = preview(b, 3)  # another image: the old preview over "a" is gone
    assert p3 is not p1 and p1 not in viewer.layers
    assert np.allclose(p3.translate, (1000, 1000))


def test_training_preview_is_in_the_slide_units(make_napari_viewer, qtbot, tiny_checkpoint,
                                                no_threads_left):
    """A preview over a slide in microns is in microns: napari keeps the scale bar."""
    from napari_histo.plugin._train_widget import TrainWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    a = viewer.add_image(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), name="a", rgb=True,
                         scale=(0.5, 0.5), units=("micrometer", "micrometer"))
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._preview_check.value = True
    w._preview_crop = (a, (64, 64, 192, 192))
    w._start_preview(str(tiny_checkpoint), 1)
    qtbot.waitUntil(lambda: w._preview_handle.done and w.preview_layer is not None, timeout=30000)
    p = w.preview_layer
    assert tuple(str(u) for u in p.units[-2:]) == ("micrometer", "micrometer")
    assert np.allclose(p.translate[-2:], (32.0, 32.0)) and np.allclose(p.scale[-2:], (0.5, 0.5))
    assert viewer.layers.extent.units is not None  # napari's own check: one unit for all
