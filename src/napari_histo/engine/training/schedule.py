"""Learning-rate schedules driven by run progress in [0, 1].

Progress is ``max(step / total_steps, elapsed / time_limit)``, so a run cut by a time limit
still warms up and anneals fully (one-cycle needs to know where the end is). The state is
one float, trivially saved for resume.
"""

from __future__ import annotations

import math

import torch


class ProgressLR:
    """One-cycle (cosine warm-up 30 %, cosine anneal), cosine, or constant LR on progress."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_lr: float, kind: str = "onecycle",
                 pct_start: float = 0.3, div_factor: float = 25.0, final_div: float = 1e4) -> None:
        self.opt = optimizer
        self.max_lr = max_lr
        self.kind = kind
        self.pct = pct_start
        self.div = div_factor
        self.final_div = final_div
        self.progress = 0.0
        self.set_progress(0.0)

    def lr_at(self, p: float) -> float:
        """Learning rate at progress ``p``."""
        p = min(max(p, 0.0), 1.0)
        lo, hi, end = self.max_lr / self.div, self.max_lr, self.max_lr / self.final_div
        if self.kind == "none":
            return hi
        if self.kind == "cosine":
            return end + (hi - end) * 0.5 * (1 + math.cos(math.pi * p))
        if p < self.pct:
            t = p / self.pct
            return hi + (lo - hi) * 0.5 * (1 + math.cos(math.pi * t))
        t = (p - self.pct) / (1 - self.pct)
        return end + (hi - end) * 0.5 * (1 + math.cos(math.pi * t))

    def set_progress(self, p: float) -> float:
        """Move to progress ``p`` (never backwards); return the new LR."""
        self.progress = max(self.progress, min(p, 1.0))
        lr = self.lr_at(self.progress)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, float]:
        """Resumable state."""
        return {"progress": self.progress}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from :meth:`state_dict`."""
        self.progress = 0.0
        self.set_progress(float(state.get("progress", 0.0)))
