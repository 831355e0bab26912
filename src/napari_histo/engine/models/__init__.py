"""Model registry: ``build_model(spec)`` turns a plain-dict spec into an ``nn.Module``.

A spec is ``{"name": preset, "in_channels": 3, "num_classes": 2, **kwargs}``; it is stored
in every checkpoint so inference rebuilds the same network without pickled code.
Presets: ``unet-tiny``, ``unet-small``, ``unet`` (segmentation, logits N,C,H,W) and
``cnn-small``, ``resnet18``, ``resnet50``, ``inception_v3``, ``timm:<name>`` (classification,
logits N,C).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from napari_histo.core.errors import ConfigError
from napari_histo.engine.models.classifier import SmallCNN, build_timm, build_torchvision
from napari_histo.engine.models.unet import UNet

__all__ = ["PRESETS", "SEGMENTATION_MODELS", "CLASSIFICATION_MODELS", "build_model",
           "make_spec", "model_task", "UNet", "SmallCNN"]

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "unet-tiny": {"base": 8, "depth": 3},
    "unet-small": {"base": 16, "depth": 4},
    "unet": {"base": 64, "depth": 5},
}
SEGMENTATION_MODELS = tuple(UNET_PRESETS)
CLASSIFICATION_MODELS = ("cnn-small", "resnet18", "resnet50", "inception_v3")
PRESETS = SEGMENTATION_MODELS + CLASSIFICATION_MODELS


def model_task(name: str) -> str:
    """Return 'segment' or 'classify' for a model name."""
    if name in SEGMENTATION_MODELS:
        return "segment"
    if name in CLASSIFICATION_MODELS or name.startswith("timm:"):
        return "classify"
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)} or timm:<name>")


def make_spec(name: str, *, in_channels: int = 3, num_classes: int = 2, **kwargs: Any) -> dict[str, Any]:
    """Build a checkpoint-storable spec dict (plain types only)."""
    model_task(name)
    return {"name": name, "in_channels": int(in_channels), "num_classes": int(num_classes), **kwargs}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Build the network described by ``spec`` (weights freshly initialised).

    Raises
    ------
    ConfigError
        Unknown name, bad keyword, or fewer than 2 classes.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"a model spec is a dict with a 'name'; got {spec!r}")
    kw = dict(spec)
    name = str(kw.pop("name"))
    in_ch = int(kw.pop("in_channels", 3))
    n_cls = int(kw.pop("num_classes", 2))
    if n_cls < 2:
        raise ConfigError(f"num_classes must be >= 2 (binary = 2 logits), got {n_cls}")
    try:
        if name in UNET_PRESETS:
            args = {**UNET_PRESETS[name], **kw}
            return UNet(in_channels=in_ch, num_classes=n_cls, **args)
        if name == "cnn-small":
            return SmallCNN(in_channels=in_ch, num_classes=n_cls, **kw)
        if name in ("resnet18", "resnet50", "inception_v3"):
            return build_torchvision(name, in_ch, n_cls, **kw)
        if name.startswith("timm:"):
            return build_timm(name[5:], in_ch, n_cls, **kw)
    except TypeError as err:
        raise ConfigError(f"bad option for model {name!r}: {err}") from err
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)} or timm:<name>")
