"""Models build with the right output shapes; checkpoints round-trip and refuse unsafe files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_histo.core.errors import CheckpointError, ConfigError
from napari_histo.engine.checkpoints import (
    FORMAT_VERSION,
    default_preprocessing,
    load_checkpoint,
    save_checkpoint,
)
from napari_histo.engine.models import build_model, make_spec
from napari_histo.engine.stain import fit_stain


@pytest.mark.parametrize("name", ["unet-tiny", "unet-small"])
@pytest.mark.parametrize("hw", [(64, 64), (37, 53)])
def test_unet_output_size_equals_input(name: str, hw: tuple[int, int]) -> None:
    model = build_model(make_spec(name, num_classes=3)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 3, *hw)


@pytest.mark.parametrize("name,size", [("cnn-small", 48), ("resnet18", 64), ("inception_v3", 80)])
def test_classifiers_give_logits(name: str, size: int) -> None:
    model = build_model(make_spec(name, num_classes=2)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 2)


def test_bad_spec_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        build_model({"name": "vgg-huge"})
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(make_spec("unet-tiny", num_classes=1))
    with pytest.raises(ConfigError, match="bad option"):
        build_model(make_spec("unet-tiny", wings=3))


def test_checkpoint_round_trip(tmp_path: Path, shared_data: Path) -> None:
    spec = make_spec("unet-tiny", num_classes=2)
    model = build_model(spec).eval()
    ref = shared_data / "stain_tiles" / "tiatoolbox" / "target_image.png"
    pre = default_preprocessing(mpp=1.24, patch_size=64, stain=fit_stain(ref, "macenko"))
    path = save_checkpoint(tmp_path / "m.pt", model, spec=spec, task="segment",
                           class_names=["background", "gland"], preprocessing=pre,
                           metrics={"val_dice": np.float32(0.5)}, extra={"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION
    lm = load_checkpoint(path)
    assert lm.task == "segment" and lm.class_names == ["background", "gland"]
    assert lm.preprocessing["mpp"] == 1.24 and lm.preprocessing["stain"]["method"] == "macenko"
    assert lm.metrics["val_dice"] == pytest.approx(0.5)
    img = (np.random.default_rng(0).random((1, 40, 48, 3)) * 255).astype(np.uint8)
    x = lm.preprocess(img)
    assert x.shape == (1, 3, 40, 48) and x.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(lm.model(x), model(x), atol=1e-6)
    assert lm.predict_proba(img).shape == (1, 2, 40, 48)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.getcwd, ())


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"format": "napari-histo-checkpoint", "payload": _Evil()}, bad)
    with pytest.raises(CheckpointError, match="pickled Python code"):
        load_checkpoint(bad)


def test_foreign_corrupt_and_future_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a napari-histo checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    spec = make_spec("unet-tiny")
    p = save_checkpoint(tmp_path / "f.pt", build_model(spec), spec=spec, task="segment",
                        class_names=["a", "b"], preprocessing=default_preprocessing())
    d = torch.load(p, weights_only=True)
    d["format_version"] = FORMAT_VERSION + 1
    torch.save(d, p)
    with pytest.raises(CheckpointError, match="upgrade"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
