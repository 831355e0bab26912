"""Model adapter: a LoadedModel, a checkpoint path or a bare nn.Module -> batched probabilities.

Inference only needs ``probs = runner(uint8 NHWC tiles)``; this module hides where the model
came from, checks its input channels against RGB, and (optionally) pads every forward pass
to a fixed batch size so a tile's result never depends on which other tiles shared its
batch: resumed and distributed runs then write byte-identical outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from napari_histo.core.errors import CheckpointError, ConfigError
from napari_histo.core.limits import BATCH_RANGE, NUM_CLASSES_RANGE, integer
from napari_histo.engine.checkpoints import LoadedModel, default_preprocessing, load_checkpoint
from napari_histo.engine.devices import resolve_device

__all__ = ["Runner", "as_loaded", "model_in_channels"]


def model_in_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution or linear layer, if any."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def as_loaded(model: Any, device: str | torch.device = "auto") -> LoadedModel:
    """Turn a checkpoint path, a LoadedModel or a bare ``nn.Module`` into a LoadedModel.

    A bare module gets default preprocessing (``mpp`` None: run at the image's own pixels);
    its task is guessed from the output rank of a probe forward pass.
    """
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_checkpoint(model, device=resolve_device(device))
    if isinstance(model, nn.Module):
        dev = resolve_device(device)
        model = model.to(dev).eval()
        cin = model_in_channels(model) or 3
        with torch.inference_mode():
            out = model(torch.zeros(1, cin, 64, 64, device=dev))
        task = "segment" if out.ndim == 4 else "classify"
        n = integer(f"{type(model).__name__} output classes", int(out.shape[1]),
                    *NUM_CLASSES_RANGE)
        spec = {"name": type(model).__name__, "in_channels": cin, "num_classes": n}
        names = ["background", "tumor"] if n == 2 else [f"class_{i}" for i in range(n)]
        pre = default_preprocessing(patch_size=256 if task == "segment" else 96)
        return LoadedModel(model=model, device=dev, task=task, class_names=names, spec=spec,
                           preprocessing=pre)
    raise CheckpointError(f"cannot use {type(model).__name__} as a model: give a checkpoint path")


class Runner:
    """Batched forward pass returning float32 softmax probabilities on the CPU.

    Parameters
    ----------
    loaded : LoadedModel
    batch_size : int
        Tiles per forward pass.
    pad_batches : bool
        Pad short batches to ``batch_size`` (deterministic per-tile results across runs).
    amp : bool
        float16 autocast on CUDA.
    tta : bool
        Test-time augmentation: average the probabilities over the 8 flips/rot90 of each tile
        (4 flips for non-square tiles), segmentation maps mapped back first; 4-8x slower.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 8, *, pad_batches: bool = False,
                 amp: bool = False, tta: bool = False) -> None:
        self.loaded = loaded
        if not isinstance(tta, bool):
            raise ConfigError(f"tta must be true or false, got {tta!r}")
        self.tta = tta
        self.batch_size = integer("batch_size", batch_size, *BATCH_RANGE)
        self.pad_batches = pad_batches
        self.amp = amp and loaded.device.type == "cuda"
        cin = int(loaded.spec.get("in_channels") or model_in_channels(loaded.model) or 3)
        if cin != 3:
            name = loaded.path.name if loaded.path else "the model"
            raise ConfigError(
                f"{name} expects {cin} input channel(s) but slides and images are RGB "
                "(3 channels); use a checkpoint trained on RGB images")
        self.task = loaded.task
        self.num_classes = integer("number of classes", loaded.num_classes, *NUM_CLASSES_RANGE)

    @property
    def device(self) -> torch.device:
        """Device the model runs on."""
        return self.loaded.device

    def __call__(self, tiles: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Probabilities (N, C, H, W) or (N, C) for a uint8 (N, H, W, 3) batch."""
        n = tiles.shape[0]
        outs = []
        for i in range(0, n, self.batch_size):
            chunk = tiles[i : i + self.batch_size]
            k = chunk.shape[0]
            if self.pad_batches and k < self.batch_size:
                pad = np.zeros((self.batch_size - k, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outs.append(self._forward(chunk)[:k])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    @torch.inference_mode()
    def _forward(self, chunk: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        x = self.loaded.preprocess(np.ascontiguousarray(chunk))
        if self.tta:
            from napari_histo.engine.transforms import tta_probs

            probs = tta_probs(self.loaded.model, x, autocast=torch.float16 if self.amp else None)
            return probs.cpu().numpy().astype(np.float32, copy=False)
        if self.amp:
            with torch.autocast("cuda", dtype=torch.float16):
                logits = self.loaded.model(x)
        else:
            logits = self.loaded.model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if hasattr(logits, "logits"):
            logits = logits.logits
        probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu().numpy().astype(np.float32, copy=False)
