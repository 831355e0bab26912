"""Issue 9, bound every number: inference/training settings, checkpoint contents, regions.

Hostile checkpoints are made at test time with the project's own ``save_checkpoint`` and
then edited (``torch.load(weights_only=True)``, change the dict, ``torch.save``), as an
attacker would. Each must give one CheckpointError/ConfigError line naming the bad key,
before the network or the output is allocated.
"""

from __future__ import annotations

import math
import os
import resource
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from napari_histo.cli import main
from napari_histo.core import limits
from napari_histo.core.errors import CheckpointError, ConfigError, HistoError
from napari_histo.core.progress import run_task
from napari_histo.engine.checkpoints import (
    default_preprocessing,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from napari_histo.engine.inference import InferenceConfig, predict_slide
from napari_histo.engine.inference._source import resolve_resolution
from napari_histo.engine.inference.predict import prepare_slide_run
from napari_histo.engine.models import build_model, count_params, make_spec
from napari_histo.engine.training.config import TrainConfig

MB = 2**20


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _one_line(err: pytest.ExceptionInfo[HistoError], *words: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real unet-tiny checkpoint at 0.5 um/px, 64 px patches."""
    torch.manual_seed(0)
    spec = make_spec("unet-tiny")
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "good.pt", build_model(spec),
                           spec=spec, task="segment", class_names=["bg", "tumor"],
                           preprocessing=default_preprocessing(mpp=0.5, patch_size=64))


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_histo.io.synthetic import write_synthetic_slide

    path, _ = write_synthetic_slide(tmp_path_factory.mktemp("sl") / "syn.tif",
                                    shape=(512, 512), tile=256, levels=2, mpp=0.5,
                                    with_mask=False)
    return path


def _variant(src: Path, dst: Path, **changes: Any) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=True)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        target = payload
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    torch.save(payload, dst)
    return dst


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("kw,words", [
    ({"mpp": float("nan")}, "mpp must be a finite number"),
    ({"mpp": float("inf")}, "mpp must be a finite number"),
    ({"mpp": 0.0001}, "mpp must be >= 0.01"),
    ({"slide_mpp": -1.0}, "slide_mpp"),
    ({"threshold": float("nan")}, "threshold"),
    ({"tile": 10**6}, "tile must be <= 4096"),
    ({"tile": 4}, "tile must be >= 8"),
    ({"tile": "256"}, "tile must be an integer"),
    ({"overlap": 3}, "even"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"batch_size": 10**6}, "batch_size must be <= 1024"),
    ({"readers": 10**4}, "readers must be <= 64"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"context": 10**5}, "context must be <= 4096"),
    ({"block_tiles": 10**4}, "block_tiles"),
    ({"tile": 4096, "batch_size": 512}, "more input than one forward pass"),
    ({"tissue_only": "yes"}, "tissue_only"),
])
def test_inference_config_bounds(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        InferenceConfig(**kw)
    _one_line(err, words)


def test_inference_config_round_trip_still_works() -> None:
    cfg = InferenceConfig(mpp=0.5, tile=256, overlap=64, batch_size=8.0)  # type: ignore[arg-type]
    assert cfg.batch_size == 8 and isinstance(cfg.batch_size, int)
    assert InferenceConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        InferenceConfig.from_dict({"formats": "zarr"})


@pytest.mark.parametrize("kw,words", [
    ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"epochs": 10**9}, "epochs"),
    ({"epochs": "ten"}, "epochs must be an integer"),
    ({"batch_size": 10**6}, "batch_size"),
    ({"patch_size": 10**6}, "patch_size"),
    ({"mpp": float("nan")}, "mpp"),
    ({"data_mpp": float("inf")}, "data_mpp"),
    ({"num_classes": 10**6}, "num_classes"),
    ({"class_weights": (1.0, float("nan"))}, "class weight"),
    ({"grad_clip": float("nan")}, "grad_clip"),
    ({"time_limit_min": float("inf")}, "time_limit_min"),
    ({"val_fraction": float("nan")}, "val_fraction"),
    ({"num_workers": 10**4}, "num_workers"),
    ({"model_kwargs": {"base": 10**6}}, "'base' must be <= 256"),
    ({"model_kwargs": {"depth": 10**6}}, "'depth' must be <= 8"),
    ({"model_kwargs": {"base": 256, "depth": 8}}, "parameters"),
    ({"model_kwargs": {"base": "wide"}}, "'base' must be an integer"),
])
def test_train_config_bounds(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kw)
    _one_line(err, words)


# ----------------------------------------------------------------------------- models


def test_network_size_is_counted_before_building() -> None:
    spec = {"name": "unet", "base": 256, "depth": 8}  # ~32 G parameters, 118 GiB of weights
    assert count_params(spec) > 30e9  # on the meta device: no storage at all
    before = _rss()
    with pytest.raises(ConfigError) as err:
        build_model(spec)
    _one_line(err, "parameters", "smaller base/depth")
    assert _rss() - before < 200 * MB
    assert count_params(make_spec("unet-tiny")) == sum(
        p.numel() for p in build_model(make_spec("unet-tiny")).parameters())


def test_spec_values_are_checked() -> None:
    for spec, words in [({"name": "unet-tiny", "num_classes": 1}, "num_classes"),
                        ({"name": "unet-tiny", "num_classes": 999}, "num_classes"),
                        ({"name": "unet-tiny", "dropout": float("nan")}, "dropout"),
                        ({"name": "unet-tiny", "batch_norm": "no"}, "batch_norm"),
                        ({"name": "unet-tiny", "wings": 3}, "bad option"),
                        ({"name": 3}, "name")]:
        with pytest.raises(ConfigError) as err:
            build_model(spec)
        _one_line(err, words)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("changes,words", [
    ({"preprocessing__mpp": 0.0}, "preprocessing 'mpp' must be >= 0.01"),
    ({"preprocessing__mpp": float("nan")}, "preprocessing 'mpp' must be a finite number"),
    ({"preprocessing__mpp": 0.0001}, "preprocessing 'mpp'"),
    ({"preprocessing__mpp": "0.5"}, "preprocessing 'mpp' must be a number"),
    ({"preprocessing__patch_size": 10**9}, "preprocessing 'patch_size'"),
    ({"preprocessing__patch_size": 64.5}, "preprocessing 'patch_size' must be an integer"),
    ({"preprocessing__context_size": -3}, "preprocessing 'context_size'"),
    ({"preprocessing__mean": [0.5, 0.5]}, "preprocessing 'mean'"),
    ({"preprocessing__std": [0.2, 0.0, 0.2]}, "preprocessing 'std' must be > 0"),
    ({"preprocessing__std": [0.2, float("inf"), 0.2]}, "preprocessing 'std'"),
    ({"preprocessing__stain": {"method": "macenko", "stain_matrix": "x"}}, "stain"),
    ({"preprocessing": "fast"}, "'preprocessing' must be a mapping"),
    ({"spec__base": 256, "spec__depth": 8}, "parameters but the file stores"),
    ({"spec__base": 128, "spec__depth": 5}, "parameters but the file stores"),
    ({"spec__depth": 10**6}, "spec 'depth'"),
    ({"spec__num_classes": 10**6}, "spec 'num_classes'"),
    ({"spec__num_classes": "2"}, "spec 'num_classes' must be an integer"),
    ({"spec__name": "gpt-5"}, "unknown model"),
    ({"spec": ["unet"]}, "spec must be a mapping"),
    ({"class_names": "bg,tumor"}, "'class_names'"),
    ({"class_names": ["a", "b", "c"]}, "3 class names"),
    ({"task": ["segment"]}, "'task'"),
    ({"state_dict": "weights"}, "'state_dict'"),
])
def test_hostile_checkpoint_contents(ckpt: Path, tmp_path: Path, changes: dict[str, Any],
                                     words: str) -> None:
    bad = _variant(ckpt, tmp_path / "bad.pt", **changes)
    before = _rss()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    _one_line(err, "bad.pt", words)
    assert _rss() - before < 200 * MB


def test_checkpoint_never_loads_external_weights(ckpt: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_histo.engine.models.classifier as classifier

    real = classifier._local_weights

    def local_weights(name: str, weights: Any, pretrained: bool) -> Any:
        if weights or pretrained:
            raise AssertionError("a checkpoint made napari-histo look for another file")
        return real(name, weights, pretrained)

    def no(*a: Any, **k: Any) -> None:
        raise AssertionError("a checkpoint made napari-histo read another file")

    monkeypatch.setattr(classifier, "_local_weights", local_weights)
    monkeypatch.setattr(classifier, "_load_backbone_weights", no)
    torch.manual_seed(0)
    spec = make_spec("cnn-small", base=4)
    src = save_checkpoint(tmp_path / "cls.pt", build_model(spec), spec=spec, task="classify",
                          class_names=["a", "b"], preprocessing=default_preprocessing(patch_size=32))
    # the classifier presets that do read weights, pointed at an arbitrary local file
    secret = tmp_path / "secret.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, secret)
    bad = _variant(src, tmp_path / "ext.pt", spec__pretrained=True, spec__weights=str(secret))
    with pytest.raises(CheckpointError, match="bad option"):  # cnn-small has no such option
        read_checkpoint(bad)
    tv = {"name": "resnet18", "in_channels": 3, "num_classes": 2, "pretrained": True,
          "weights": str(secret)}
    from napari_histo.engine.models import validate_spec

    assert validate_spec(tv)["weights"] == str(secret)  # allowed when a user trains
    model = build_model(tv, external_weights=False)  # ...but never for a checkpoint
    payload = torch.load(src, weights_only=True)
    payload["spec"] = tv
    payload["state_dict"] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(payload, tmp_path / "tv.pt")
    ck = read_checkpoint(tmp_path / "tv.pt")
    assert "weights" not in ck["spec"] and "pretrained" not in ck["spec"]
    assert load_checkpoint(tmp_path / "tv.pt").spec["name"] == "resnet18"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this OS")
def test_checkpoint_fifo_is_refused_unopened(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            load_checkpoint(fifo)
        except HistoError as err:
            box["err"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "load_checkpoint blocked on a named pipe"
    assert isinstance(box.get("err"), CheckpointError)
    assert "not a regular file (named pipe)" in str(box["err"])


def test_checkpoint_unpacking_beyond_budget(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_histo.engine.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", 50_000)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(ckpt)
    _one_line(err, "good.pt", "more than the")


# ----------------------------------------------------------------------------- resolution


def _fake_slide(side: int = 200_000, mpp: float | None = 0.5) -> Any:
    meta = SimpleNamespace(mpp=(mpp, mpp) if mpp else None, level_downsamples=(1.0, 4.0, 16.0),
                           level_shapes=((side, side), (side // 4, side // 4),
                                         (side // 16, side // 16)))
    return SimpleNamespace(name="fake", path=Path("fake.svs"), shape=(side, side),
                           metadata=meta)


def test_upsampling_is_bounded() -> None:
    s = _fake_slide()
    res = resolve_resolution(s, mpp=0.125, level=None, slide_mpp=None, model_mpp=None)
    assert res.resample and res.factor == (0.25, 0.25)  # exactly 4x: allowed
    with pytest.raises(ConfigError) as err:
        resolve_resolution(s, mpp=0.1, level=None, slide_mpp=None, model_mpp=None)
    _one_line(err, "5x finer", "at most 4x")
    with pytest.raises(ConfigError) as err:
        resolve_resolution(s, mpp=None, level=None, slide_mpp=None, model_mpp=0.05)
    _one_line(err, "checkpoint's mpp")
    nan_meta = _fake_slide(mpp=None)
    with pytest.raises(ConfigError, match="slide_mpp"):
        resolve_resolution(nan_meta, mpp=0.5, level=None, slide_mpp=math.nan, model_mpp=None)


def test_run_budget_before_allocation(ckpt: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_checkpoint(ckpt)
    s = _fake_slide()  # 200k x 200k px: opening it is fine, holding its output is not
    cfg = InferenceConfig(tissue_only=False, device="cpu")
    before = _rss()
    with pytest.raises(ConfigError) as err:
        prepare_slide_run(s, loaded, cfg, in_memory=True)
    _one_line(err, "in-memory prediction", "200000 x 200000")
    with pytest.raises(ConfigError) as err:  # 4x finer than 0.5 um/px: 800k px a side
        prepare_slide_run(s, loaded, cfg.replace(mpp=0.125), out_path=tmp_path / "o.zarr")
    _one_line(err, "tiles", "coarser --mpp")
    monkeypatch.setattr(limits.shutil, "disk_usage",
                        lambda p: SimpleNamespace(total=10 * MB, used=9 * MB, free=MB))
    with pytest.raises(ConfigError) as err:
        prepare_slide_run(s, loaded, cfg, out_path=tmp_path / "o.zarr")
    _one_line(err, "prediction store", "free on the disk")
    assert _rss() - before < 300 * MB
    ctx = prepare_slide_run(s, loaded, cfg, region=(0, 0, 1000, 1000), in_memory=True)
    assert ctx.plan.out_shape == (1000, 1000)
    for region in [(math.nan, 0, 100, 100), (0, 0, math.inf, 100), (0, 0, 100), "0,0,1,1"]:
        with pytest.raises(ConfigError) as err:
            prepare_slide_run(s, loaded, cfg, region=region, in_memory=True)
        _one_line(err, "region")
    with pytest.raises(ConfigError, match="near"):
        ctx.to_out((math.nan, 0.0))


def test_checkpoint_mpp_far_finer_than_slide_is_refused(ckpt: Path, slide: Path,
                                                        tmp_path: Path) -> None:
    fine = _variant(ckpt, tmp_path / "fine.pt", preprocessing__mpp=0.05)  # 10x the slide's
    before = _rss()
    with pytest.raises(ConfigError) as err:
        run_task(predict_slide(slide, fine, InferenceConfig(device="cpu")))
    _one_line(err, "syn", "at most 4x")
    assert _rss() - before < 200 * MB
    res = run_task(predict_slide(slide, ckpt, InferenceConfig(device="cpu", tile=64,
                                                              tissue_only=False)))
    assert res.probabilities.shape == (512, 512)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("extra,words", [
    (["--region", "nan,0,100,100"], "--region"),
    (["--region", "0,0,inf,100"], "--region"),
    (["--mpp", "0.0001"], "mpp must be >= 0.01"),
    (["--mpp", "nan"], "mpp must be a finite number"),
    (["--batch-size", "100000"], "batch_size"),
    (["--tile", "1000000"], "tile"),
])
def test_cli_predict_numbers_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], words: str) -> None:
    src = tmp_path / "s.tif"
    src.write_bytes(b"II*\x00")
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    rc = main(["predict", str(src), "--model", str(model), "--out", str(tmp_path / "o"),
               "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "error" in err[0] and words in err[0], err
    assert not (tmp_path / "o").exists()


def test_probe_of_bare_module_bounds_classes() -> None:
    from napari_histo.engine.inference._model import as_loaded

    with pytest.raises(ConfigError, match="output classes"):
        as_loaded(torch.nn.Conv2d(3, 1000, 1), device="cpu")
    lm = as_loaded(torch.nn.Conv2d(3, 2, 1), device="cpu")
    assert np.asarray(lm.predict_proba(np.zeros((1, 8, 8, 3), np.uint8))).shape == (1, 2, 8, 8)
