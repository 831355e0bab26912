"""Losses with class weights, per-pixel weights and an ignored label: CE, Dice, focal."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_histo.core.errors import ConfigError

IGNORE_INDEX = 255


class SegClsLoss(torch.nn.Module):
    """``ce``, ``dice``, ``ce+dice``, ``focal`` or ``focal+dice`` on logits (N, C[, H, W]).

    Pixels labelled ``IGNORE_INDEX`` contribute nothing; ``weights`` (N[, H, W]) scale each
    pixel/sample (the GUI's emphasis on corrected pixels).
    """

    def __init__(self, kind: str = "ce", num_classes: int = 2,
                 class_weights: torch.Tensor | None = None, focal_gamma: float = 2.0) -> None:
        super().__init__()
        if kind not in ("ce", "dice", "ce+dice", "focal", "focal+dice"):
            raise ConfigError(f"unknown loss {kind!r}")
        self.kind = kind
        self.num_classes = num_classes
        self.gamma = focal_gamma
        self.register_buffer("cw", class_weights if class_weights is not None else torch.ones(num_classes))
        self.cw: torch.Tensor

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss."""
        logits = logits.float()
        valid = target != IGNORE_INDEX
        tgt = torch.where(valid, target, torch.zeros_like(target))
        w = valid.float() if weights is None else weights.float() * valid.float()
        total = logits.new_zeros(())
        if self.kind in ("ce", "ce+dice", "focal", "focal+dice"):
            logp = F.log_softmax(logits, 1)
            lp = logp.gather(1, tgt.unsqueeze(1)).squeeze(1)
            pix = -lp * self.cw[tgt]
            if self.kind.startswith("focal"):
                pix = pix * (1 - lp.exp()).pow(self.gamma)
            total = total + (pix * w).sum() / (w * self.cw[tgt]).sum().clamp_min(1e-6)
        if self.kind.endswith("dice"):
            prob = F.softmax(logits, 1)
            onehot = F.one_hot(tgt, self.num_classes).movedim(-1, 1).float()
            ww = w.unsqueeze(1)
            dims = (0,) + tuple(range(2, logits.ndim))
            inter = (prob * onehot * ww).sum(dims)
            denom = ((prob + onehot) * ww).sum(dims)
            dice = (2 * inter + 1.0) / (denom + 1.0)
            cls = slice(1, None) if self.num_classes > 1 else slice(None)
            total = total + (1 - dice[cls]).mean()
        return total
