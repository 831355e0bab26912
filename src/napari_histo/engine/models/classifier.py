"""Patch classifiers: a small CNN, torchvision ResNet-18/50 and Inception-v3, timm backbones.

Pretrained weights are loaded only from local files (``weights`` path in the spec, or the
torch hub cache when ``pretrained`` is true and the file is already there): training from
scratch works offline, and nothing is downloaded behind the user's back. A model rebuilt
from a checkpoint never reads them (``build_model(..., external_weights=False)``): its own
state dict holds every weight, and a checkpoint must not make napari-histo read other files.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_histo.core.errors import ConfigError
from napari_histo.core.limits import MAX_CHECKPOINT_BYTES, check_regular_file, one_line


class SmallCNN(nn.Module):
    """Four conv blocks + global pooling: a fast CPU baseline for 32-300 px patches."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 32,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(4):
            c = base * 2 ** min(i, 3)
            layers += [
                nn.Conv2d(cin, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (N, num_classes)."""
        x = self.features(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


_HUB_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-11ad3fa6.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
}


def _local_weights(name: str, weights: str | None, pretrained: bool) -> Path | None:
    if weights:
        p = Path(weights).expanduser()
        if not p.exists():
            raise ConfigError(f"pretrained weights file not found: {p}")
        check_regular_file(p, what=f"pretrained weights {p}", error=ConfigError,
                           max_bytes=MAX_CHECKPOINT_BYTES)
        return p
    if not pretrained:
        return None
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    cand = hub / _HUB_FILES.get(name, "")
    if name in _HUB_FILES and cand.is_file():
        return cand
    warnings.warn(
        f"no local pretrained weights for {name} (looked in {hub}); training from scratch",
        stacklevel=3,
    )
    return None


def _load_backbone_weights(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"pretrained weights {path.name} are not a readable torch weights "
                          f"file ({one_line(err, 160)})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"pretrained weights {path.name} hold no state dict")
    own = model.state_dict()
    keep = {k: v for k, v in state.items()
            if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)


def build_torchvision(name: str, in_channels: int, num_classes: int, *,
                      pretrained: bool = False, weights: str | None = None,
                      dropout: float = 0.0) -> nn.Module:
    """ResNet-18/50 or Inception-v3 with a fresh ``num_classes`` head."""
    try:
        import torchvision.models as tvm
    except ImportError as err:  # pragma: no cover - torchvision is an extra
        raise ConfigError(f"model {name!r} needs torchvision: pip install torchvision") from err
    if name == "inception_v3":
        model: nn.Module = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True)
    else:
        model = getattr(tvm, name)(weights=None)
    path = _local_weights(name, weights, pretrained)
    if path is not None:
        _load_backbone_weights(model, path)
    if in_channels != 3:
        if name == "inception_v3":
            raise ConfigError("inception_v3 supports 3 input channels only")
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)  # type: ignore[assignment]
    feat = model.fc.in_features  # type: ignore[union-attr]
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat, num_classes))  # type: ignore[assignment]
    return model


def build_timm(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Any timm backbone (``timm:<name>``), only when timm is installed."""
    try:
        import timm
    except ImportError as err:
        raise ConfigError(f"model 'timm:{name}' needs timm: pip install timm") from err
    pretrained = bool(kwargs.pop("pretrained", False))
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                 in_chans=in_channels, **kwargs)
    except Exception as err:  # timm raises many types for unknown names / offline weights
        raise ConfigError(f"timm could not build {name!r}: {err}") from err
