"""Patch classifiers: a small CNN, torchvision ResNet-18/50 and Inception-v3, timm backbones.

Pretrained weights come from a local state-dict file (``weights`` in the spec) or, with
``pretrained``, from torchvision's / timm's standard caches (downloaded when online; when
they are neither cached nor downloadable the build stops with a clear error instead of
training from scratch). The built model carries where its weights came from and the input
normalisation they expect (:func:`napari_histo.engine.models.weights_info`). A model rebuilt
from a checkpoint never reads them (``build_model(..., external_weights=False)``): its own
state dict holds every weight, and a checkpoint must not make napari-histo read other files.
"""

from __future__ import annotations

import hashlib
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


#: ImageNet normalisation (torchvision and most timm ImageNet weights)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the published torchvision weights of each preset (ids for ``torchvision.models.get_weight``)
TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "inception_v3": "Inception_V3_Weights.IMAGENET1K_V1",
}
#: input normalisation each preset's pretrained weights expect. Inception-v3's Google weights
#: were trained on [-1, 1] inputs (torchvision maps ImageNet-normalised inputs there with
#: ``transform_input``; we build without it and normalise with 0.5/0.5 directly)
TORCHVISION_NORM = {
    "resnet18": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": (IMAGENET_MEAN, IMAGENET_STD),
    "inception_v3": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
#: attribute of a built model that tells where its starting weights came from
WEIGHTS_ATTR = "_histo_weights"


def _unavailable(what: str, where: str, err: BaseException) -> ConfigError:
    return ConfigError(
        f"pretrained weights {what} were asked for but are not in the local cache ({where}) "
        f"and could not be downloaded ({one_line(err, 120)}); run once online to cache them, "
        "or pass --weights PATH to a weights file")


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A plain state dict from ``path`` (``.pt``/``.pth`` or ``.safetensors``) and its origin.

    The file must be a regular file (no pipe, device or oversized file); torch files are read
    with ``weights_only=True``, so they cannot run code. The origin is
    ``{"kind": "file", "name": ..., "sha256": ...}``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"weights file not found: {p}")
    check_regular_file(p, what=f"weights file {p.name}", error=ConfigError,
                       max_bytes=MAX_CHECKPOINT_BYTES)
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    try:
        if p.suffix.lower() == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise ConfigError(f"{p.name} is a safetensors file, which needs the safetensors "
                                  "package: pip install safetensors") from None
            state: Any = load_file(str(p), device="cpu")
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"weights file {p.name} is not a readable torch or safetensors "
                          f"weights file ({one_line(err, 160)})") from None
    if isinstance(state, dict) and state.get("format") == "napari-histo-checkpoint":
        raise ConfigError(f"{p.name} is a napari-histo checkpoint: fine-tune it with --init, "
                          "not --weights")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {p.name} holds no state dict (name -> tensor)")
    state = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[7:]: v for k, v in state.items()}
    return state, {"kind": "file", "name": p.name, "sha256": digest.hexdigest()}


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> tuple[int, int]:
    """Copy the tensors of ``state`` whose name and shape match ``model``'s; (copied, total).

    A fresh head (other class count) or input layer is skipped; a file that shares no
    tensor with the model is refused (the wrong architecture).
    """
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not keep:
        raise ConfigError(f"{what} shares no weights with this model; give weights of the "
                          "same architecture")
    model.load_state_dict(keep, strict=False)
    return len(keep), len(own)


def _local_weights(name: str, weights: str | None, pretrained: bool,
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state dict, origin) of a torchvision preset's starting weights, or None (random)."""
    if weights:
        return read_weights_file(weights)
    if not pretrained:
        return None
    import torchvision.models as tvm

    wid = TORCHVISION_WEIGHTS[name]
    try:  # torch.hub's cache first; a download only when the file is not there
        state = tvm.get_weight(wid).get_state_dict(progress=False, check_hash=True,
                                                   weights_only=True)
    except Exception as err:
        raise _unavailable(f"torchvision:{wid} (for {name})",
                           str(Path(torch.hub.get_dir()) / "checkpoints"), err) from None
    return state, {"kind": "hub", "id": f"torchvision:{wid}"}


def _load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor],
                           origin: dict[str, Any]) -> dict[str, Any]:
    n, total = load_matching(model, state, origin.get("name") or origin.get("id", "weights"))
    return {**origin, "tensors_loaded": n, "tensors_total": total}


def _attach(model: nn.Module, origin: dict[str, Any] | None,
            norm: tuple[tuple[float, ...], tuple[float, ...]] | None) -> nn.Module:
    info: dict[str, Any] = {"origin": origin or {"kind": "none"}}
    if origin is not None and norm is not None:
        info["mean"], info["std"] = [float(v) for v in norm[0]], [float(v) for v in norm[1]]
    setattr(model, WEIGHTS_ATTR, info)
    return model


def build_torchvision(name: str, in_channels: int, num_classes: int, *,
                      pretrained: bool = False, weights: str | None = None,
                      dropout: float = 0.0) -> nn.Module:
    """ResNet-18/50 or Inception-v3 with a fresh ``num_classes`` head.

    ``weights``: a local state-dict file; ``pretrained``: torchvision's ImageNet weights
    through its standard cache (``torch.hub.get_dir()/checkpoints``), downloaded when online.
    Neither: random initialisation.
    """
    try:
        import torchvision.models as tvm
    except ImportError as err:  # pragma: no cover - torchvision is an extra
        raise ConfigError(f"model {name!r} needs torchvision: pip install torchvision") from err
    if name == "inception_v3":
        model: nn.Module = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True)
    else:
        model = getattr(tvm, name)(weights=None)
    if in_channels != 3:
        if name == "inception_v3":
            raise ConfigError("inception_v3 supports 3 input channels only")
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    head: Any = model.fc  # torchvision is untyped: a Linear here
    feat = int(head.in_features)
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat, num_classes))
    origin: dict[str, Any] | None = None
    got = _local_weights(name, weights, pretrained)  # after the new head: it stays fresh
    if got is not None:
        origin = _load_backbone_weights(model, *got)
    return _attach(model, origin, TORCHVISION_NORM[name])


def _timm_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean") or IMAGENET_MEAN, cfg.get("std") or IMAGENET_STD
    mean = tuple(mean) * 3 if len(mean) == 1 else tuple(mean)
    std = tuple(std) * 3 if len(std) == 1 else tuple(std)
    if len(mean) != 3 or len(std) != 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return mean, std


def build_timm(name: str, in_channels: int, num_classes: int, *, pretrained: bool = False,
               weights: str | None = None, **kwargs: Any) -> nn.Module:
    """Any timm backbone (``timm:<name>``); needs the ``timm`` extra.

    ``pretrained`` loads timm's weights through its standard caches (Hugging Face hub or
    torch hub, downloaded when online); ``weights`` a local state-dict file. The input
    normalisation is the model's ``pretrained_cfg`` mean/std.
    """
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model 'timm:{name}' needs timm, an optional extra: "
                          "pip install 'napari-histo[timm]'") from None
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=in_channels, **kwargs)
    except Exception as err:  # timm raises many types for unknown names / bad options
        raise ConfigError(f"timm could not build {name!r}: {one_line(err, 160)}") from None
    origin: dict[str, Any] | None = None
    if weights:
        origin = _load_backbone_weights(model, *read_weights_file(weights))
    elif pretrained:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        tag = cfg.get("hf_hub_id") or cfg.get("url") or name
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes,
                                      in_chans=in_channels, **kwargs)
        except Exception as err:
            raise _unavailable(f"timm:{tag}", "the Hugging Face / torch hub cache", err) from None
        origin = {"kind": "hub", "id": f"timm:{tag}"}
    return _attach(model, origin, _timm_norm(model))
