"""Batch augmentation in torch: dihedral flips/rotations, scale, colour and HED jitter.

Everything works on a whole batch at once (no per-sample Python image ops), so the data
pipeline costs a few milliseconds per batch next to a model step. Images are float tensors
(N, 3, H, W) in [0, 1]; labels (N, H, W) int64 and weights (N, H, W) float follow the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# skimage.color.rgb_from_hed (Ruifrok & Johnston), rows = stains H, E, DAB.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run; ranges are symmetric around identity."""

    flips: bool = True
    rot90: bool = True
    scale: float = 0.15  # +- relative zoom, applied when cropping
    brightness: float = 0.08
    contrast: float = 0.12
    saturation: float = 0.15
    hed: float = 0.04

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(False, False, 0.0, 0.0, 0.0, 0.0, 0.0)


def to_float01(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return batch_u8.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x01: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Map [0, 1] images to the model's input range (same as checkpoints.preprocess_batch)."""
    m = torch.tensor(mean, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
    return (x01 - m) / s


def dihedral(x: torch.Tensor, gen: torch.Generator, *others: torch.Tensor | None,
             flips: bool = True, rot90: bool = True) -> tuple[torch.Tensor | None, ...]:
    """Random flip / 90-degree rotation per sample, the same for the image and its maps."""
    n = x.shape[0]
    square = x.shape[-1] == x.shape[-2]
    flip = torch.rand(n, generator=gen) < 0.5 if flips else torch.zeros(n, dtype=torch.bool)
    rot = torch.randint(0, 4, (n,), generator=gen) if (rot90 and square) else torch.zeros(n, dtype=torch.long)
    tensors = [x, *others]
    out: list[torch.Tensor | None] = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        t = t.clone()
        if flip.any():
            t[flip] = t[flip].flip(-1)
        for k in (1, 2, 3):
            sel = rot == k
            if sel.any():
                t[sel] = torch.rot90(t[sel], k, (-2, -1))
        out.append(t)
    return tuple(out)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample HED, brightness, contrast and saturation jitter on [0, 1] images."""
    n = x.shape[0]

    def u(r: float) -> torch.Tensor:
        return ((torch.rand(n, generator=gen) * 2 - 1) * r).to(x.device).view(n, 1, 1, 1)

    if cfg.hed > 0:
        # HED scaling/shift folded into one per-sample 3x3 map in optical-density space:
        # od' = ((od @ M) * a + b) @ R = od @ (M diag(a) R) + b @ R
        od = -torch.log(x.clamp_min(1.0 / 255))
        a = 1 + (torch.rand(n, 3, generator=gen) * 2 - 1) * cfg.hed
        b = (torch.rand(n, 3, generator=gen) * 2 - 1) * cfg.hed
        mat = torch.einsum("cd,nd,de->nce", _HED_FROM_RGB, a, _RGB_FROM_HED).to(x.device)
        bias = (b @ _RGB_FROM_HED).to(x.device).view(n, 3, 1, 1)
        x = torch.exp(-(torch.einsum("nchw,nce->nehw", od, mat) + bias))
    if cfg.saturation > 0:
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * (1 + u(cfg.saturation))
    if cfg.contrast > 0:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * (1 + u(cfg.contrast))
    if cfg.brightness > 0:
        x = x + u(cfg.brightness)
    return x.clamp_(0, 1)


def random_scale_size(patch: int, rng: np.random.Generator, amount: float) -> int:
    """Crop size giving a zoom of up to +-``amount`` once resized to ``patch``."""
    if amount <= 0:
        return patch
    s = float(np.exp(rng.uniform(np.log(1 - amount), np.log(1 + amount))))
    return max(8, int(round(patch * s)))


def resize_batch(x: torch.Tensor, size: int, *maps: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Resize images (bilinear) and label/weight maps (nearest) of a batch to ``size``."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return (x, *maps)
    out: list[torch.Tensor | None] = [F.interpolate(x, size=(size, size), mode="bilinear",
                                                    align_corners=False, antialias=x.shape[-1] > size)]
    for m in maps:
        if m is None:
            out.append(None)
            continue
        mm = F.interpolate(m[:, None].float(), size=(size, size), mode="nearest")[:, 0]
        out.append(mm.to(m.dtype))
    return tuple(out)
