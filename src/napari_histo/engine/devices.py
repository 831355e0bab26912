"""Device choice, seeding and CPU thread settings for training and inference.

One place resolves ``'auto'|'cpu'|'cuda'|'mps'`` so the GUI, CLI and tests agree, and one
place seeds every RNG so runs repeat.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from napari_histo.core.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device`` ('auto' picks cuda > mps > cpu).

    Raises
    ------
    ConfigError
        When an explicitly requested accelerator is not available.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if base == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' requested but Apple MPS is not available; use cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a run with the same config repeats."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def default_num_workers() -> int:
    """DataLoader workers that pay off: none on small machines (decode is cheap vs compute)."""
    import os

    n = os.cpu_count() or 1
    return 0 if n <= 4 else min(8, n // 2)


def avoid_triton_llvm_clash() -> None:
    """Keep torch from importing triton when Mesa's LLVM (software OpenGL) is loaded.

    torch's optimizers import ``torch._dynamo``, which imports triton if installed; triton
    bundles its own LLVM and segfaults on import once Mesa's ``libLLVM`` (llvmpipe, e.g. under
    Xvfb or on machines without a GPU driver) is in the process. triton only serves
    ``torch.compile`` on GPUs, which napari-histo never uses, so it is marked unavailable.
    Called before every optimizer is built (``training.loop``), whoever trains: the GUI, the
    CLI, or a script that has a napari viewer open.
    """
    import sys

    if "triton" in sys.modules:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            llvm = "libLLVM" in fh.read()
    except OSError:  # not Linux: no Mesa llvmpipe clash known
        return
    if llvm:
        sys.modules["triton"] = None  # type: ignore[assignment]


def visible_gpu_ids() -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` values of this process's CUDA GPUs, one per GPU.

    UUIDs (``GPU-...``) where torch reports them, so a worker pinned to one names the same
    physical GPU whatever ``CUDA_VISIBLE_DEVICES`` this process was started with; plain
    indices otherwise. Empty without CUDA.
    """
    if not torch.cuda.is_available():
        return []
    ids = []
    for i in range(torch.cuda.device_count()):
        uuid = str(getattr(torch.cuda.get_device_properties(i), "uuid", "") or "")
        ids.append(uuid if uuid.startswith(("GPU-", "MIG-")) else (f"GPU-{uuid}" if uuid
                                                                   else str(i)))
    return ids
