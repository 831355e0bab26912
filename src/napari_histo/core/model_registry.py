"""The model registry: names, tasks and defaults of every network napari-histo builds.

Torch-free (stdlib only), so the CLI help, ``TrainConfig`` validation and the widgets' model
combos use it without importing torch; :mod:`napari_histo.engine.models` builds the networks
from the same table.

Names
-----
Segmentation (logits N, C, H, W): ``unet-tiny``, ``unet-small``, ``unet``.
Patch classification (logits N, C): ``cnn-small``, ``resnet18``, ``resnet50``,
``inception_v3`` (torchvision, the ``vision`` extra) and ``timm:<name>``, any backbone of
the optional ``timm`` library (the ``timm`` extra), e.g. ``timm:efficientnet_b0``.
``timm:<name>`` is a family, not a name: :data:`TIMM_ENTRY` is how menus list it, and
:func:`model_task` accepts any ``timm:`` name with a non-empty backbone.

Defaults
--------
``unet-small`` for segmentation; ``cnn-small`` for classification, ``resnet18`` when
starting from pretrained weights (:func:`default_model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from napari_histo.core.errors import ConfigError

__all__ = [
    "MODELS",
    "TASKS",
    "TIMM_ENTRY",
    "TIMM_PREFIX",
    "ModelInfo",
    "default_model",
    "is_timm",
    "model_choices",
    "model_help",
    "model_info",
    "model_names",
    "model_options",
    "model_task",
    "pretrained_models",
    "supports_pretrained",
    "timm_backbone",
]

TASKS = ("segment", "classify")
#: prefix of the timm family of classifiers
TIMM_PREFIX = "timm:"
#: how menus and help list the timm family
TIMM_ENTRY = "timm:<name>"


@dataclass(frozen=True)
class ModelInfo:
    """One model preset: its task, builder, spec options and fixed defaults."""

    name: str
    task: str
    description: str
    #: which engine builder makes it: "unet", "cnn", "torchvision" or "timm"
    builder: str
    #: options a spec may set (``validate_spec``); None: any plain scalar (timm)
    options: tuple[str, ...] | None
    #: published pretrained weights exist (``pretrained``/``weights`` allowed)
    pretrained: bool = False
    #: builder keyword defaults of the preset (U-Net width and depth)
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: pip extra the builder needs (None: core install)
    extra: str | None = None


_UNET_OPTIONS = ("base", "depth", "batch_norm", "dropout")
_TV_OPTIONS = ("pretrained", "weights", "dropout")

#: every preset, in menu order (the timm family is not listed: see :data:`TIMM_ENTRY`)
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("unet-tiny", "segment", "U-Net, 8 base channels, depth 3 (fast, small data)",
              "unet", _UNET_OPTIONS, defaults=MappingProxyType({"base": 8, "depth": 3})),
    ModelInfo("unet-small", "segment", "U-Net, 16 base channels, depth 4 (default)",
              "unet", _UNET_OPTIONS, defaults=MappingProxyType({"base": 16, "depth": 4})),
    ModelInfo("unet", "segment", "U-Net, 64 base channels, depth 5 (the original)",
              "unet", _UNET_OPTIONS, defaults=MappingProxyType({"base": 64, "depth": 5})),
    ModelInfo("cnn-small", "classify", "small CNN trained from scratch (default)", "cnn",
              ("base", "dropout")),
    ModelInfo("resnet18", "classify", "torchvision ResNet-18 (ImageNet weights available)",
              "torchvision", _TV_OPTIONS, pretrained=True, extra="vision"),
    ModelInfo("resnet50", "classify", "torchvision ResNet-50 (ImageNet weights available)",
              "torchvision", _TV_OPTIONS, pretrained=True, extra="vision"),
    ModelInfo("inception_v3", "classify", "torchvision Inception v3 (CAMELYON16 baseline)",
              "torchvision", _TV_OPTIONS, pretrained=True, extra="vision"),
)
_BY_NAME = {m.name: m for m in MODELS}


def is_timm(name: str) -> bool:
    """Whether ``name`` is of the ``timm:<name>`` family (backbone possibly empty)."""
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def timm_backbone(name: str) -> str:
    """The backbone of ``timm:<backbone>``."""
    return name[len(TIMM_PREFIX):]


def model_names(task: str | None = None) -> tuple[str, ...]:
    """Preset names (of one ``task``, or all), in menu order; the timm family excluded."""
    return tuple(m.name for m in MODELS if task is None or m.task == task)


def model_choices(task: str | None = None) -> tuple[str, ...]:
    """What a menu offers: the presets plus :data:`TIMM_ENTRY` for classification."""
    names = model_names(task)
    return names + ((TIMM_ENTRY,) if task in (None, "classify") else ())


def model_help() -> str:
    """``unet-tiny|unet-small|...|timm:<name>`` for CLI help."""
    return "|".join(model_choices())


def _unknown(name: Any) -> ConfigError:
    return ConfigError(f"unknown model {name!r}; choose one of {', '.join(model_names())} "
                       f"or {TIMM_ENTRY}")


def model_info(name: str) -> ModelInfo:
    """The preset ``name``, or a :class:`ModelInfo` for a ``timm:<backbone>`` name.

    Raises
    ------
    ConfigError
        Unknown name, or ``timm:`` without a backbone (or the literal ``timm:<name>``).
    """
    if not isinstance(name, str):
        raise _unknown(name)
    if name in _BY_NAME:
        return _BY_NAME[name]
    if is_timm(name):
        backbone = timm_backbone(name)
        if not backbone.strip() or name == TIMM_ENTRY:
            raise ConfigError(f"model {name!r}: give a timm backbone, e.g. timm:resnet18 "
                              "(any name timm.list_models() knows)")
        return ModelInfo(name, "classify", f"timm backbone {backbone}", "timm", None,
                         pretrained=True, extra="timm")
    raise _unknown(name)


def model_task(name: str) -> str:
    """Return 'segment' or 'classify' for a model name (ConfigError when unknown)."""
    return model_info(name).task


def model_options(name: str) -> tuple[str, ...] | None:
    """Spec options ``name`` accepts (None: any plain scalar, the timm family)."""
    return model_info(name).options


def supports_pretrained(name: str) -> bool:
    """Whether ``name`` can start from pretrained weights (``pretrained``/``weights``)."""
    try:
        return model_info(name).pretrained
    except ConfigError:
        return False


def pretrained_models() -> tuple[str, ...]:
    """Presets with published pretrained weights (plus, always, the timm family)."""
    return tuple(m.name for m in MODELS if m.pretrained)


def default_model(task: str, *, transfer: bool = False) -> str:
    """The model of ``model: auto``: ``unet-small`` (segment); ``cnn-small`` (classify), or
    ``resnet18`` when starting from pretrained weights (``transfer``)."""
    if task == "segment":
        return "unet-small"
    return "resnet18" if transfer else "cnn-small"
