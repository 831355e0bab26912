"""Model registry: ``build_model(spec)`` turns a plain-dict spec into an ``nn.Module``.

A spec is ``{"name": preset, "in_channels": 3, "num_classes": 2, **kwargs}``; it is stored
in every checkpoint so inference rebuilds the same network without pickled code.
Presets: ``unet-tiny``, ``unet-small``, ``unet`` (segmentation, logits N,C,H,W) and
``cnn-small``, ``resnet18``, ``resnet50``, ``inception_v3``, ``timm:<name>`` (classification,
logits N,C).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from napari_histo.core.errors import ConfigError, HistoError
from napari_histo.core.limits import (
    DEPTH_RANGE,
    IN_CHANNELS_RANGE,
    MAX_PARAMS,
    NUM_CLASSES_RANGE,
    WIDTH_RANGE,
    integer,
    number,
)
from napari_histo.core.model_registry import (
    MODELS,
    is_timm,
    model_names,
    model_task,
    pretrained_models,
    supports_pretrained,
    timm_backbone,
)
from napari_histo.engine.models.classifier import (
    WEIGHTS_ATTR,
    SmallCNN,
    build_timm,
    build_torchvision,
)
from napari_histo.engine.models.unet import UNet

__all__ = ["PRESETS", "SEGMENTATION_MODELS", "CLASSIFICATION_MODELS", "build_model",
           "check_model_budget", "count_params", "make_spec", "model_task", "validate_spec", "UNet", "SmallCNN",
           "supports_pretrained", "weights_info"]

#: spec keys that make a model read weights from outside its checkpoint
EXTERNAL_WEIGHT_KEYS = ("pretrained", "weights")

# names, tasks and defaults live in the torch-free registry (core.model_registry)
UNET_PRESETS: dict[str, dict[str, Any]] = {
    m.name: dict(m.defaults) for m in MODELS if m.builder == "unet"}
SEGMENTATION_MODELS = model_names("segment")
CLASSIFICATION_MODELS = model_names("classify")
PRESETS = SEGMENTATION_MODELS + CLASSIFICATION_MODELS
#: presets with published pretrained weights (plus every ``timm:<name>``)
PRETRAINED_MODELS = pretrained_models()
_TORCHVISION = tuple(m.name for m in MODELS if m.builder == "torchvision")


def weights_info(model: nn.Module) -> dict[str, Any]:
    """Where a freshly built model's starting weights came from, and their normalisation.

    ``{"origin": {"kind": "none"}}`` for random initialisation;
    ``{"origin": {"kind": "file", "name", "sha256", ...} | {"kind": "hub", "id", ...},
    "mean": [3 floats], "std": [3 floats]}`` when pretrained weights were loaded.
    """
    info = getattr(model, WEIGHTS_ATTR, None)
    return dict(info) if isinstance(info, dict) else {"origin": {"kind": "none"}}


def make_spec(name: str, *, in_channels: int = 3, num_classes: int = 2, **kwargs: Any) -> dict[str, Any]:
    """Build a checkpoint-storable spec dict (plain types only)."""
    model_task(name)
    return {"name": name, "in_channels": int(in_channels), "num_classes": int(num_classes), **kwargs}


_OPTIONS: dict[str, tuple[str, ...]] = {m.name: m.options for m in MODELS if m.options is not None}


def validate_spec(spec: Any, *, error: type[HistoError] = ConfigError,
                  where: str = "model spec") -> dict[str, Any]:
    """A checked copy of ``spec``: known name, options of the right type and in range.

    Bounds (from :mod:`napari_histo.core.limits`): ``num_classes`` 2..256, ``in_channels``
    1..64, ``base`` 4..256, U-Net ``depth`` 2..8, ``dropout`` in [0, 1). ``timm:`` options
    must be plain scalars (integers up to 4096). Raises ``error`` naming the bad key.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        shown = repr(spec)
        raise error(f"{where} must be a mapping with a 'name' string, got "
                    f"{shown[:60] + '...' if len(shown) > 60 else shown}")
    name = spec["name"]
    try:
        model_task(name)
    except ConfigError as err:
        raise error(f"{where}: {err}") from None
    out: dict[str, Any] = {"name": name}
    out["in_channels"] = integer(f"{where} 'in_channels'", spec.get("in_channels", 3),
                                 *IN_CHANNELS_RANGE, error=error)
    n_cls = spec.get("num_classes", 2)
    if isinstance(n_cls, numbers.Integral) and not isinstance(n_cls, bool) and n_cls < 2:
        raise error(f"{where}: num_classes must be >= 2 (binary = 2 logits), got {n_cls}")
    out["num_classes"] = integer(f"{where} 'num_classes'", n_cls, *NUM_CLASSES_RANGE, error=error)
    allowed = _OPTIONS.get(name)
    for key, value in spec.items():
        if key in ("name", "in_channels", "num_classes"):
            continue
        label = f"{where} '{key}'"
        if allowed is not None and key not in allowed:
            raise error(f"{where}: bad option for model {name!r}: {key!r} (known: "
                        f"{', '.join(allowed)})")
        if key == "base":
            out[key] = integer(label, value, *WIDTH_RANGE, error=error)
        elif key == "depth":
            out[key] = integer(label, value, *DEPTH_RANGE, error=error)
        elif key == "dropout":
            out[key] = number(label, value, 0.0, 1.0, hi_open=True, error=error)
        elif key in ("batch_norm", "pretrained"):
            if not isinstance(value, bool):
                raise error(f"{label} must be true or false, got {value!r}")
            out[key] = value
        elif key == "weights":
            if value is not None and not isinstance(value, str):
                raise error(f"{label} must be a file path, got {type(value).__name__}")
            out[key] = value
        else:  # timm options: plain, bounded scalars only
            if isinstance(value, bool) or value is None:
                out[key] = value
            elif isinstance(value, numbers.Integral):
                out[key] = integer(label, value, -4096, 4096, error=error)
            elif isinstance(value, numbers.Real):
                out[key] = number(label, value, error=error)
            elif isinstance(value, str) and len(value) <= 200:
                out[key] = value
            else:
                raise error(f"{label} must be a number, a boolean or a short string")
    return out


def _build(spec: dict[str, Any]) -> nn.Module:
    kw = dict(spec)
    name = str(kw.pop("name"))
    in_ch = int(kw.pop("in_channels", 3))
    n_cls = int(kw.pop("num_classes", 2))
    try:
        if name in UNET_PRESETS:
            args = {**UNET_PRESETS[name], **kw}
            return UNet(in_channels=in_ch, num_classes=n_cls, **args)
        if name == "cnn-small":
            return SmallCNN(in_channels=in_ch, num_classes=n_cls, **kw)
        if name in _TORCHVISION:
            return build_torchvision(name, in_ch, n_cls, **kw)
        if is_timm(name):
            return build_timm(timm_backbone(name), in_ch, n_cls, **kw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad option for model {name!r}: {err}") from err
    model_task(name)  # raises the registry's "unknown model" error
    raise ConfigError(f"model {name!r} has no builder")


def count_params(spec: dict[str, Any]) -> int:
    """Parameters of the network ``spec`` describes, counted without allocating its weights.

    The network is built on torch's ``meta`` device (shapes only, no storage) and without
    external weights.
    """
    kw = {k: v for k, v in validate_spec(spec).items() if k not in EXTERNAL_WEIGHT_KEYS}
    with torch.device("meta"):
        model = _build(kw)
    return int(sum(p.numel() for p in model.parameters()))


def build_model(spec: dict[str, Any], *, external_weights: bool = True) -> nn.Module:
    """Build the network described by ``spec`` (weights freshly initialised).

    The spec is validated (:func:`validate_spec`) and its parameter count checked against
    ``MAX_PARAMS`` before any weight is allocated. ``external_weights=False`` ignores
    ``pretrained``/``weights`` (a model whose weights come from a checkpoint must never
    read another file).

    Raises
    ------
    ConfigError
        Unknown name, bad keyword or value, fewer than 2 classes, or a network too big.
    """
    spec = validate_spec(spec)
    if not external_weights:
        spec = {k: v for k, v in spec.items() if k not in EXTERNAL_WEIGHT_KEYS}
    check_model_budget(spec)
    return _build(spec)


def check_model_budget(spec: dict[str, Any]) -> int:
    """Parameter count of ``spec`` (validated), refused beyond ``MAX_PARAMS``.

    Raises
    ------
    ConfigError
        A bad spec, or a network whose weights alone would exceed the budget.
    """
    n = count_params(spec)
    if n > MAX_PARAMS:
        raise ConfigError(
            f"model {spec['name']!r} with these options has {n / 1e6:,.0f} M parameters "
            f"({n * 4 / 1024**3:,.1f} GB of weights), more than the {MAX_PARAMS / 1e6:.0f} M "
            "napari-histo builds; use a smaller base/depth")
    return n
