"""Past predictions widget: lists real prediction stores with their size, opens one as
layers and deletes one (confirmation injected)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_histo.core import settings


@pytest.fixture
def two_stores(tiny_checkpoint: Path, tmp_path: Path) -> list[Path]:
    """Two whole-slide predictions of the tiny model in the (isolated) predictions folder."""
    from napari_histo.core.progress import run_task
    from napari_histo.engine.checkpoints import load_checkpoint
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.engine.run_card import predict_card_path
    from napari_histo.io.synthetic import write_synthetic_slide

    slide, _ = write_synthetic_slide(tmp_path / "syn.tif", shape=(256, 384), tile=256, levels=1,
                                     mpp=1.0, seed=1)
    model = load_checkpoint(tiny_checkpoint, device="cpu")
    cfg = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=1, tissue_only=False)
    preds = settings.predictions_dir(create=True)
    out = []
    for name in ("first", "second"):
        p = preds / f"{name}.ome.zarr"
        run_task(predict_slide(slide, model, cfg, out_path=p))
        predict_card_path(p).write_text("kind: predict\n")
        out.append(p)
    return out


def test_lists_opens_and_deletes(make_napari_viewer, two_stores: list[Path]) -> None:
    from napari_histo.plugin._results_widget import ResultsWidget

    viewer = make_napari_viewer()
    asked: list[list[Path]] = []
    answer = [False]

    def confirm(paths: list[Path]) -> bool:
        asked.append(paths)
        return answer[0]

    w = ResultsWidget(viewer, confirm=confirm)
    texts = [c[0] for c in w._choices()]
    assert len(w.entries) == 2 and all(e.size_bytes > 0 for e in w.entries)
    assert sorted(e.name for e in w.entries) == ["first", "second"]
    assert all(" — " in t and t.endswith("complete") for t in texts)
    assert w._total.value.startswith("2 prediction(s), ")

    first, second = two_stores
    w.select([first])
    n = len(viewer.layers)
    w._open_btn.clicked.emit()
    assert len(viewer.layers) > n  # the prediction's layers appear

    w.select([second])
    w._delete_btn.clicked.emit()  # declined: nothing deleted
    assert asked == [[second]] and second.is_dir()
    answer[0] = True
    w.select([second])
    w._delete_btn.clicked.emit()
    assert not second.exists() and not second.with_name("second.run_card.yaml").exists()
    assert [e.name for e in w.entries] == ["first"] and len(w._choices()) == 1
    assert w._total.value.startswith("1 prediction(s), ")

    (settings.predictions_dir() / "third.ome.zarr").mkdir()  # foreign folder: not listed
    w._refresh_btn.clicked.emit()
    assert [e.name for e in w.entries] == ["first"]
