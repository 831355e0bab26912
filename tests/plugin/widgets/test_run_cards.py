"""GUI runs write run cards: training from layers re-runs headless from its card with the same
metrics; a Segment run on a slide file writes the ``napari-histo predict`` line beside it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from napari_histo.engine.run_card import CARD_NAME, read_card
from napari_histo.plugin._train_widget import TrainWidget


def test_train_from_layers_reproduces_headless_from_its_card(
        make_napari_viewer, qtbot, glas_pair, tmp_path, no_threads_left, capsys):
    from skimage.io import imread

    from napari_histo.cli import main

    viewer = make_napari_viewer()
    image = viewer.add_image(imread(glas_pair[0]), rgb=True, name="glas")
    labels = viewer.add_labels((imread(glas_pair[1]) > 0).astype(np.uint8), name="truth")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.value = image
    w._labels_combo.value = labels
    w._model_combo.value = "unet-tiny"
    w._epochs_spin.value = 2
    w._batch_spin.value = 2
    w._patch_spin.value = 64
    w._steps_spin.value = 3
    w._device_combo.value = "cpu"
    w._out_edit.value = str(tmp_path / "runs")
    h = w.start()
    assert h is not None
    qtbot.waitUntil(lambda: h.done, timeout=120000)
    qtbot.waitUntil(lambda: w._start_button.enabled, timeout=5000)
    assert h.error is None, h.error
    if w._preview_handle is not None:
        qtbot.waitUntil(lambda: w._preview_handle.done, timeout=30000)
    run = Path(w.best_checkpoint).parent
    card = read_card(run / CARD_NAME)
    data = run.resolve() / "data"
    assert card["config"]["data"] == [str(data)]  # the layers, saved: no more `data: []`
    assert card["saved_data"]["samples"] == 2 and (data / "samples.json").is_file()
    manifest = json.loads((data / "samples.json").read_text())
    placed = manifest["samples"][0]["source"]  # which layers, where they sit in the world
    assert placed["image_layer"]["name"] == "glas" and placed["labels_layer"]["name"] == "truth"
    assert placed["image_layer"]["scale"] == [1.0, 1.0]
    argv = shlex.split(card["command"])
    assert argv[:4] == ["napari-histo", "train", "--config", str(run.resolve() / CARD_NAME)]

    assert main(argv[1:] + ["--quiet"]) == 0, capsys.readouterr()  # headless, as printed
    out = Path(argv[argv.index("--out") + 1])
    gui = json.loads((run / "metrics.json").read_text())
    cli = json.loads((out / "metrics.json").read_text())
    assert len(gui) == len(cli) == 2
    for a, b in zip(gui, cli, strict=True):
        for key in ("train_loss", "val_loss", "val_dice"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def test_segment_on_a_slide_writes_a_predict_card(svs_segment, qtbot, cmu_svs, tiny_checkpoint,
                                                  no_threads_left):
    from napari_histo.cli import build_parser

    viewer, image, seg = svs_segment()
    h = seg.run("current view")
    qtbot.waitUntil(lambda: h.done and seg._run_button.enabled, timeout=60000)
    store = Path(seg.result.labels.metadata["napari_histo"]["store"])
    cards = list(store.parent.glob(f"{store.name.split('.')[0]}.{CARD_NAME}"))
    assert len(cards) == 1
    card = read_card(cards[0])
    assert card["source"] == str(cmu_svs) and card["checkpoint"] == str(tiny_checkpoint)
    assert card["region"] is not None and card["config"]["device"]
    args = build_parser().parse_args(shlex.split(card["command"])[1:])
    assert args.inputs == [str(cmu_svs)] and args.region == ",".join(map(str, card["region"]))
