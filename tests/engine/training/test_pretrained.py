"""Transfer learning (issue 10, part 3): real pretrained weights, their normalisation, origin.

No test downloads anything: weights are files the test writes, the torch cache is an empty
temporary TORCH_HOME, and any download attempt is made to fail as it does offline.
"""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from napari_histo.cli import main as cli
from napari_histo.core.errors import CheckpointError, ConfigError
from napari_histo.engine.checkpoints import load_checkpoint, read_checkpoint
from napari_histo.engine.models import build_model, weights_info
from napari_histo.engine.models.classifier import IMAGENET_MEAN, IMAGENET_STD
from napari_histo.engine.training import TrainConfig

torchvision = pytest.importorskip("torchvision")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache, and every download failing as with no network."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def no_network(*a: Any, **k: Any) -> None:
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return home


def _resnet18_file(path: Path) -> tuple[Path, torch.Tensor]:
    """A resnet18 state dict whose first conv is a recognisable pattern."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        model.conv1.weight.copy_(torch.linspace(-0.3, 0.3, model.conv1.weight.numel())
                                 .view_as(model.conv1.weight))
    torch.save(model.state_dict(), path)
    return path, model.conv1.weight.detach().clone()


def test_train_with_weights_file_starts_from_it(camelyon: Path, tmp_path: Path,
                                                offline: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    wfile, conv1 = _resnet18_file(tmp_path / "my_resnet18.pth")
    out = tmp_path / "run"
    rc = cli(["train", "--task", "classify", "--data", str(camelyon), "--out", str(out),
              "--model", "resnet18", "--weights", str(wfile), "--epochs", "1",
              "--steps-per-epoch", "1", "--batch-size", "4", "--patch-size", "64",
              "--lr", "1e-6", "--val-groups", "tumor_064", "--threads", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "starting from weights file my_resnet18.pth" in capsys.readouterr().out
    ck = load_checkpoint(out / "last.pt")
    got = ck.model.state_dict()["conv1.weight"]
    # one step at lr 1e-6 from the file's weights (a random init is ~0.05 away everywhere)
    assert torch.allclose(got, conv1, atol=1e-4)
    assert ck.preprocessing["mean"] == pytest.approx(IMAGENET_MEAN)
    assert ck.preprocessing["std"] == pytest.approx(IMAGENET_STD)
    raw = torch.load(out / "last.pt", weights_only=True)
    assert raw["weights_origin"]["kind"] == "file"
    assert raw["weights_origin"]["name"] == "my_resnet18.pth"
    assert raw["weights_origin"]["sha256"] == hashlib.sha256(wfile.read_bytes()).hexdigest()
    assert raw["spec"]["pretrained"] is True and "weights" not in raw["spec"]  # no path stored
    # the loaded checkpoint keeps the record as metadata, never as a file to read
    rd = read_checkpoint(out / "best.pt")
    assert rd["weights_origin"]["kind"] == "file"
    assert "pretrained" not in rd["spec"] and "weights" not in rd["spec"]
    assert ck.predict_proba(torch.zeros(2, 64, 64, 3, dtype=torch.uint8).numpy()).shape == (2, 2)


def test_pretrained_offline_without_cache_is_a_clear_error(camelyon: Path, tmp_path: Path,
                                                           offline: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"name": "resnet18", "num_classes": 2, "pretrained": True})
    msg = str(err.value)
    assert "\n" not in msg
    for words in ("torchvision:ResNet18_Weights.IMAGENET1K_V1", "not in the local cache",
                  str(offline), "run once online", "--weights PATH"):
        assert words in msg, words
    out = tmp_path / "run"
    rc = cli(["train", "--task", "classify", "--data", str(camelyon), "--out", str(out),
              "--pretrained", "--epochs", "1", "--steps-per-epoch", "1", "--quiet"])
    assert rc != 0
    line = capsys.readouterr().err.strip()
    assert "not in the local cache" in line and len(line.splitlines()) == 1
    assert not (out / "last.pt").exists()  # no silent training from scratch


def test_pretrained_uses_the_torch_cache(tmp_path: Path, offline: Path) -> None:
    """Weights already in torch's cache are used (no network), and named by their id."""
    cache = offline / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    _, conv1 = _resnet18_file(cache / "resnet18-f37072fd.pth")
    model = build_model({"name": "resnet18", "num_classes": 3, "pretrained": True})
    assert torch.equal(model.state_dict()["conv1.weight"], conv1)
    info = weights_info(model)
    assert info["origin"]["kind"] == "hub"
    assert info["origin"]["id"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert info["mean"] == pytest.approx(IMAGENET_MEAN)
    assert weights_info(build_model({"name": "resnet18"}))["origin"] == {"kind": "none"}


def test_weights_file_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_model({"name": "resnet18", "weights": str(tmp_path / "nope.pt")})
    with pytest.raises(ConfigError, match="not a regular file|directory"):
        build_model({"name": "resnet18", "weights": str(tmp_path)})
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(ConfigError, match="shares no weights"):
        build_model({"name": "resnet18", "weights": str(other)})
    code = tmp_path / "code.pt"
    torch.save({"conv1.weight": types.SimpleNamespace(a=1)}, code)
    with pytest.raises(ConfigError, match="not a readable"):
        build_model({"name": "resnet18", "weights": str(code)})


def test_config_pretrained_rules(tmp_path: Path) -> None:
    cfg = TrainConfig(task="classify", data=("d",), pretrained=True)
    assert cfg.model == "resnet18"  # auto: a backbone that has pretrained weights
    assert TrainConfig(task="classify", data=("d",)).model == "cnn-small"
    with pytest.raises(ConfigError, match="has no pretrained weights"):
        TrainConfig(task="segment", data=("d",), pretrained=True)
    with pytest.raises(ConfigError, match="has no pretrained weights"):
        TrainConfig(task="classify", model="cnn-small", data=("d",), weights="w.pt")
    with pytest.raises(ConfigError, match="either weights"):
        TrainConfig(task="classify", data=("d",), weights="w.pt", init_checkpoint="c.pt")
    with pytest.raises(ConfigError, match="pretrained must be"):
        TrainConfig(task="classify", model="resnet18", data=("d",), pretrained="yes")  # type: ignore[arg-type]
    rt = TrainConfig.from_yaml(TrainConfig(task="classify", data=("d",), weights="w.pt").to_yaml())
    assert rt.weights == "w.pt" and rt.model == "resnet18"


class _FakeTimmNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 4, 3)
        self.head = nn.Linear(4, num_classes)
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                               "hf_hub_id": "timm/fake.in1k"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).mean((2, 3)))


def test_timm_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # not installed
    with pytest.raises(ConfigError) as err:
        build_model({"name": "timm:resnet18", "num_classes": 2})
    assert "napari-histo[timm]" in str(err.value) and "\n" not in str(err.value)

    fake = types.ModuleType("timm")

    def create_model(name: str, pretrained: bool = False, num_classes: int = 1000,
                     in_chans: int = 3, **kw: Any) -> nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return _FakeTimmNet(num_classes, in_chans)

    fake.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", fake)
    with pytest.raises(ConfigError, match=r"timm:timm/fake.in1k.*not in the local cache"):
        build_model({"name": "timm:fake", "num_classes": 2, "pretrained": True})
    src = _FakeTimmNet(1000, 3)
    with torch.no_grad():
        src.stem.weight.fill_(0.25)
    torch.save(src.state_dict(), tmp_path / "fake.pt")
    model = build_model({"name": "timm:fake", "num_classes": 2, "weights": str(tmp_path / "fake.pt")})
    assert torch.all(model.stem.weight == 0.25)
    info = weights_info(model)
    assert info["origin"]["kind"] == "file" and info["origin"]["tensors_loaded"] == 2
    assert info["mean"] == [0.5, 0.5, 0.5] and info["std"] == [0.5, 0.5, 0.5]  # pretrained_cfg


@pytest.mark.skipif(sys.modules.get("safetensors") is None
                    and __import__("importlib").util.find_spec("safetensors") is None,
                    reason="safetensors not installed")
def test_safetensors_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    _, conv1 = _resnet18_file(tmp_path / "r.pth")
    state = torch.load(tmp_path / "r.pth", weights_only=True)
    save_file(state, str(tmp_path / "r.safetensors"))
    model = build_model({"name": "resnet18", "weights": str(tmp_path / "r.safetensors")})
    assert torch.equal(model.state_dict()["conv1.weight"], conv1)


def test_checkpoint_origin_record_is_validated(tmp_path: Path) -> None:
    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import make_spec

    spec = make_spec("cnn-small", base=4)
    model = build_model(spec)
    good = save_checkpoint(tmp_path / "g.pt", model, spec=spec, task="classify",
                           class_names=["a", "b"], preprocessing=default_preprocessing(),
                           weights_origin={"kind": "hub", "id": "torchvision:X"})
    assert read_checkpoint(good)["weights_origin"] == {"kind": "hub", "id": "torchvision:X"}
    bad = save_checkpoint(tmp_path / "b.pt", model, spec=spec, task="classify",
                          class_names=["a", "b"], preprocessing=default_preprocessing(),
                          weights_origin={"kind": "x" * 5000})
    with pytest.raises(CheckpointError, match="weights_origin"):
        read_checkpoint(bad)
