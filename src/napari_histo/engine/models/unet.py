"""U-Net for dense segmentation: padded convolutions, so output size = input size.

Any input size works: the forward pass pads to a multiple of ``2**(depth-1)`` by reflection
and crops back, so tiles of arbitrary size (GlaS images, slide tiles) go straight through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, batch_norm: bool, dropout: float) -> None:
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with ``depth`` resolution levels and ``base`` channels at the top.

    Parameters
    ----------
    in_channels, num_classes
        Input channels (3 for RGB) and output logit channels (>= 2).
    base
        Channels of the first level; level ``i`` has ``base * 2**i`` channels.
    depth
        Number of levels including the bottleneck (the seed's 64..1024 layout is depth 5).
    batch_norm, dropout
        Regularisation of each double convolution (dropout only in the bottleneck).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        base: int = 64,
        depth: int = 5,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("U-Net depth must be >= 2")
        chans = [base * 2**i for i in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList()
        cin = in_channels
        for i, c in enumerate(chans):
            self.down.append(_DoubleConv(cin, c, batch_norm, dropout if i == depth - 1 else 0.0))
            cin = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(depth - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2))
            self.dec.append(_DoubleConv(chans[i - 1] * 2, chans[i - 1], batch_norm, 0.0))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (N, num_classes, H, W) for an input (N, C, H, W)."""
        h, w = x.shape[-2:]
        m = 2 ** (self.depth - 1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=False):
            x = up(x)
            x = dec(torch.cat([skips.pop(), x], dim=1))
        x = self.head(x)
        if ph or pw:
            x = x[..., :h, :w]
        return x
