"""Learning-rate schedules driven by run progress in [0, 1].

Progress is ``max(step / total_steps, elapsed / time_limit)`` (:func:`run_progress`), so a
run cut by a time limit still warms up and anneals fully (one-cycle needs to know where the
end is). A run given a time limit and no epoch count is paced by the clock alone: its
schedule spans exactly the time budget. The state is one float, trivially saved for resume.
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


def run_progress(step: int, total_steps: int | None, elapsed_s: float, limit_s: float | None,
                 reserve_s: float = 0.0) -> float:
    """Schedule progress in [0, 1] after ``step`` optimiser steps and ``elapsed_s`` seconds.

    ``total_steps`` None (no epoch count given) means the run is paced by ``limit_s`` only;
    ``reserve_s`` is kept back at the end of the budget (the last validation and saving), so
    the LR has annealed when the run stops. With neither, progress stays 0.
    """
    frac = step / total_steps if total_steps else 0.0
    if limit_s:
        frac = max(frac, elapsed_s / max(1.0, limit_s - reserve_s))
    return min(max(frac, 0.0), 1.0)


#: a time-paced run stops early only once the LR is annealing ...
EARLY_STOP_MIN_PROGRESS = 0.5
#: ... and the metric has not improved for this fraction of the time budget
EARLY_STOP_MIN_FRACTION = 0.2


def should_stop_early(since_best: int, patience: int | None, *, progress: float,
                      limit_s: float | None = None, since_best_s: float = 0.0,
                      time_paced: bool = False) -> bool:
    """Early stopping: ``since_best`` epochs without improvement reached ``patience``.

    In a time-paced run (a time limit and no epoch count) epochs may last a second or ten
    minutes, and a one-cycle run improves most while its LR anneals, so patience counted in
    epochs alone is not enough: such a run stops only when, besides, the schedule is at least
    half way (:data:`EARLY_STOP_MIN_PROGRESS`) and the plateau has lasted a fifth of the time
    budget (:data:`EARLY_STOP_MIN_FRACTION`).
    """
    if not patience or since_best < patience:
        return False
    if not time_paced or not limit_s:
        return True
    return progress >= EARLY_STOP_MIN_PROGRESS and since_best_s >= EARLY_STOP_MIN_FRACTION * limit_s
