"""Issue 11: a whole-slide prediction must not do work proportional to the slide on the GUI
thread: no full-size label outlines, coalesced progress text, tiles on screen before the end."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._segment_widget import PROGRESS_S, SegmentWidget


@pytest.fixture(scope="module")
def multi_tile_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3072 x 3072 pyramidal slide at 0.5 um/px: dozens of model tiles."""
    from napari_histo.io.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("slide") / "multi.tif"
    write_synthetic_slide(path, shape=(3072, 3072), levels=3, mpp=0.5, compression="jpeg",
                          with_mask=False)
    return path


def test_whole_slide_run_stays_light_on_the_gui_thread(make_napari_viewer, qtbot, monkeypatch,
                                                       multi_tile_slide, tiny_checkpoint,
                                                       no_threads_left):
    from napari.layers import Labels
    from napari.utils import progress

    contour_px: list[int] = []  # size of every outline napari computed, while live
    orig_contour = Labels._calculate_contour

    def spy_contour(self, labels, data_slice):
        if self.contour > 0:
            contour_px.append(int(np.prod(np.shape(labels))))
        return orig_contour(self, labels, data_slice)

    monkeypatch.setattr(Labels, "_calculate_contour", spy_contour)
    descriptions: list[str] = []
    orig_desc = progress.set_description

    def spy_desc(self, desc):
        descriptions.append(desc)
        return orig_desc(self, desc)

    monkeypatch.setattr(progress, "set_description", spy_desc)

    viewer = make_napari_viewer(show=True)
    image = viewer.open(str(multi_tile_slide), plugin="napari-histo")[0]
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    w._device_combo.value = "cpu"
    status_changes = [0]
    w._status_label.changed.connect(lambda *_: status_changes.__setitem__(0, status_changes[0] + 1))

    seen: list[tuple[bool, int, int]] = []  # (run done?, tiles on screen, contour) while live

    def sample() -> None:
        live = w._live
        if live is not None and live.labels in viewer.layers:
            on_screen = int(np.count_nonzero(np.asarray(live.heatmap._slice.image.raw)))
            seen.append((h.done, on_screen, int(live.labels.contour)))

    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(sample)
    t0 = time.perf_counter()
    h = w.run("whole slide")
    assert h is not None
    timer.start()
    qtbot.waitUntil(lambda: h.done, timeout=240000)
    timer.stop()
    qtbot.waitUntil(lambda: w._run_button.enabled, timeout=10000)
    elapsed = time.perf_counter() - t0
    assert h.error is None, h.error
    total = int(w._progress_bar.max)
    assert total > 8, "the slide should need many tiles"

    # tiles appear before the end: the shown (sliced) heatmap changed while the run went on
    live_samples = [s for s in seen if not s[0]]
    assert live_samples, "no live layer while the run was going"
    shown = sorted({s[1] for s in live_samples})
    assert len(shown) >= 2 and shown[-1] > 0, f"the live heatmap never changed on screen: {shown}"
    assert w.timings["first_tile"] < w.timings["returned"]

    # no outlines while live, and never on arrays above the outline limit
    assert all(s[2] == 0 for s in live_samples)
    assert all(px <= rl.CONTOUR_MAX_PX for px in contour_px), contour_px
    final = w.result
    assert final is not None
    assert final.labels.contour == 0 or rl.outline_ok(final.labels.data)

    # progress text coalesced: bounded by the run's duration, not by the number of tiles
    bound = elapsed / PROGRESS_S + 5
    assert w.progress_updates <= bound, (w.progress_updates, bound, total)
    assert status_changes[0] <= bound + 5, (status_changes[0], bound)
    assert len(descriptions) <= 3, descriptions  # set once, not per event


def test_live_layers_have_no_outlines_and_redraw_skips_thumbnails(make_napari_viewer):
    """The live pair is created filled; outlines only come once the (small) map is complete."""
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((64, 64), np.uint8))
    prob = np.zeros((64, 64), np.float32)
    live = rl.add_prediction_layers(viewer, image, prob, live=True)
    assert live.labels.contour == 0
    live.paste((0, 0, 32, 32), np.ones((32, 32), np.float32), redraw=True)
    assert int(live.labels.data.sum()) == 32 * 32
    live.finish_live()
    assert live.labels.contour == 2  # small: outlines once complete
    big = rl.add_prediction_layers(viewer, image, np.zeros((1100, 1000), np.float32))
    assert big.labels.contour == 0  # over CONTOUR_MAX_PX: filled
    big.finish_live()
    assert big.labels.contour == 0


def test_large_whole_slide_run_shows_the_store_as_multiscale_layers_from_the_start(
        make_napari_viewer, qtbot, monkeypatch, multi_tile_slide, tiny_checkpoint,
        no_threads_left):
    """A store larger than LIVE_MAX_SIDE is shown lazily from its pyramid from the first
    block: the same two multiscale layers from the start to the end (no swap), filled as
    blocks land, their lower levels equal to the store's level 0 downsampled once done."""
    import zarr

    from napari_histo.engine import live as live_mod
    from napari_histo.io.ome_zarr import downsample2

    monkeypatch.setattr(live_mod, "LIVE_MAX_SIDE", 256)  # the 3072^2 slide counts as large
    viewer = make_napari_viewer(show=True)
    image = viewer.open(str(multi_tile_slide), plugin="napari-histo")[0]
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w.set_checkpoint(tiny_checkpoint)
    w._device_combo.value = "cpu"
    first: dict[str, object] = {}
    shown: list[int] = []

    def sample() -> None:
        live = w._live
        if live is None or h.done:
            return
        first.setdefault("pair", (live.heatmap, live.labels))
        first.setdefault("n_layers", len(viewer.layers))
        shown.append(int(np.count_nonzero(np.asarray(live.heatmap._slice.image.raw))))

    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(sample)
    h = w.run("whole slide")
    assert h is not None
    timer.start()
    qtbot.waitUntil(lambda: h.done, timeout=240000)
    timer.stop()
    qtbot.waitUntil(lambda: w._run_button.enabled, timeout=10000)
    assert h.error is None, h.error

    heat, labels = first["pair"]  # type: ignore[misc]
    assert heat.multiscale and labels.multiscale
    assert len(heat.data) >= 3 and len(labels.data) == len(heat.data)
    # the same layer objects at the end: nothing removed or added
    assert w.result is not None
    assert w.result.heatmap is heat and w.result.labels is labels
    assert heat in viewer.layers and labels in viewer.layers
    assert len(viewer.layers) == first["n_layers"]
    meta = heat.metadata["napari_histo"]
    assert meta["live"] is False and meta["complete"] is True
    assert labels.contour == 0  # multiscale: never outlines
    # tiles showed up progressively while the run went on
    assert len(set(shown)) >= 2 and max(shown) > 0, shown

    # lower levels filled: each is the level above, 2x2-averaged (what a one-shot pyramid gives)
    g = zarr.open_group(meta["store"], mode="r")
    ref = np.asarray(g["0"][...])
    assert ref.any()
    for k in range(1, len(heat.data)):
        ref = downsample2(ref, "image")
        np.testing.assert_array_equal(np.asarray(g[str(k)][...]), ref)
        shown_k = np.asarray(heat.data[k][:, :])
        assert shown_k.shape == ref.shape[-2:] and shown_k.any()
    # the labels layer follows the threshold slider, still lazily
    w._threshold_slider.value = 0.0
    assert np.asarray(w.result.labels.data[-1][:, :]).all()
