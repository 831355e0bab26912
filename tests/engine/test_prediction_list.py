"""Past predictions: real stores written by a tiny prediction are listed with their size and
deleted (with their run card); a foreign folder and a symbolic link are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_histo.core import settings
from napari_histo.core.errors import HistoError
from napari_histo.core.progress import run_task
from napari_histo.engine.checkpoints import default_preprocessing, load_checkpoint, save_checkpoint
from napari_histo.engine.inference import InferenceConfig, predict_slide
from napari_histo.engine.models import build_model
from napari_histo.engine.prediction_list import (
    card_path,
    delete_prediction,
    format_size,
    list_predictions,
    total_size,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two prediction stores of a tiny model on a synthetic slide (a predictions folder)."""
    from napari_histo.io.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    spec = {"name": "unet-tiny", "in_channels": 3, "num_classes": 2}
    ckpt = save_checkpoint(d / "seg.pt", build_model(spec), spec=spec, task="segment",
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(mpp=1.0, patch_size=128))
    slide, _ = write_synthetic_slide(d / "syn.tif", shape=(384, 512), tile=256, levels=2,
                                     mpp=0.5, seed=3)
    model = load_checkpoint(ckpt, device="cpu")
    cfg = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=1)
    preds = tmp_path_factory.mktemp("predictions")
    for name in ("a", "b"):
        run_task(predict_slide(slide, model, cfg, out_path=preds / f"{name}.ome.zarr"))
    return preds, slide


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stores: tuple[Path, Path]) -> Path:
    """NAPARI_HISTO_HOME in tmp_path with a copy of the stores in its predictions folder."""
    import shutil

    monkeypatch.setenv(settings.HOME_ENV, str(tmp_path / "home"))
    preds = settings.predictions_dir()
    shutil.copytree(stores[0], preds)
    card_path(preds / "a.ome.zarr").write_text("kind: predict\n")
    (preds / "notes.txt").write_text("not a prediction")
    foreign = preds / "foreign.ome.zarr"
    (foreign / "0").mkdir(parents=True)
    (foreign / ".zattrs").write_text("{}")
    return preds


def test_lists_stores_with_size(home: Path, stores: tuple[Path, Path]) -> None:
    entries = list_predictions()
    assert sorted(e.name for e in entries) == ["a", "b"]  # not the foreign folder, nor notes
    for e in entries:
        assert e.size_bytes > 0 and e.complete and e.modified > 0
        assert e.source == str(stores[1])
        assert e.path.parent == home
    a = next(e for e in entries if e.name == "a")
    b = next(e for e in entries if e.name == "b")
    assert a.size_bytes > b.size_bytes  # the run card counts
    assert total_size(entries) == a.size_bytes + b.size_bytes
    assert format_size(total_size(entries)).endswith(("KB", "MB"))


def test_delete_removes_store_and_card(home: Path) -> None:
    a = home / "a.ome.zarr"
    delete_prediction(a)
    assert not a.exists() and not card_path(a).exists()
    assert [e.name for e in list_predictions()] == ["b"]
    assert (home / "b.ome.zarr" / "0").is_dir()


def test_delete_refuses_foreign_folder_and_symlink(home: Path, tmp_path: Path) -> None:
    foreign = home / "foreign.ome.zarr"
    with pytest.raises(HistoError, match="not a napari-histo prediction store"):
        delete_prediction(foreign)
    assert (foreign / "0").is_dir()
    link = tmp_path / "link.ome.zarr"
    link.symlink_to(home / "b.ome.zarr", target_is_directory=True)
    with pytest.raises(HistoError, match="symbolic link") as info:
        delete_prediction(link)
    assert "\n" not in str(info.value)
    assert link.is_symlink() and (home / "b.ome.zarr" / "0").is_dir()
    with pytest.raises(HistoError):
        delete_prediction(home / "missing.ome.zarr")


def test_empty_or_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.HOME_ENV, str(tmp_path / "nohome"))
    assert list_predictions() == []


def test_delete_refuses_a_store_being_written(home: Path) -> None:
    from napari_histo.engine.inference.writer import StoreLock, lock_path

    b = home / "b.ome.zarr"
    with StoreLock(b):  # a live writer (this process) holds the store
        with pytest.raises(HistoError, match="being written"):
            delete_prediction(b)
        assert (b / "0").is_dir()
    delete_prediction(b)
    assert not b.exists() and not lock_path(b).exists()
