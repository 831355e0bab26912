"""Checkpoint files: one ``.pt`` with spec, weights, preprocessing, class names and metrics.

Files are written atomically (temp name + rename) and read with
``torch.load(weights_only=True)``, so a checkpoint can never run code: a file carrying a
pickled code payload is refused with :class:`CheckpointError`. Everything else a run needs
(optimizer, scheduler, RNG for resume) goes in ``extra`` as tensors and plain types.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from napari_histo.core.errors import CheckpointError, ConfigError
from napari_histo.engine.models import build_model

FORMAT = "napari-histo-checkpoint"
FORMAT_VERSION = 1
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)

__all__ = ["FORMAT_VERSION", "LoadedModel", "save_checkpoint", "load_checkpoint",
           "load_checkpoint_cached", "cached_model", "read_checkpoint", "default_preprocessing",
           "preprocess_batch"]


def default_preprocessing(**kw: Any) -> dict[str, Any]:
    """Preprocessing dict with every key inference reads (``mpp``, ``patch_size``, ...)."""
    pre: dict[str, Any] = {
        "mpp": None,
        "patch_size": 256,
        "context_size": None,
        "center_size": None,
        "stain": None,
        "mean": list(DEFAULT_MEAN),
        "std": list(DEFAULT_STD),
    }
    pre.update(kw)
    return pre


def preprocess_batch(batch: npt.NDArray[np.uint8] | torch.Tensor, preprocessing: dict[str, Any],
                     device: torch.device | str = "cpu", *, stain: bool = True) -> torch.Tensor:
    """uint8 NHWC (numpy or tensor) -> normalised float NCHW on ``device``.

    ``stain=False`` skips stain normalisation (training applies it once at load time).
    """
    if isinstance(batch, np.ndarray):
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] < 3:
            raise ConfigError(f"expected an (N, H, W, 3) uint8 batch, got shape {batch.shape}")
        arr = np.ascontiguousarray(batch[..., :3])
        if stain and preprocessing.get("stain"):
            from napari_histo.engine.stain import normalize_batch

            arr = normalize_batch(arr, preprocessing["stain"])
        t = torch.from_numpy(arr)
    else:
        t = batch[..., :3]
    t = t.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.tensor(preprocessing.get("mean") or DEFAULT_MEAN, device=t.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.get("std") or DEFAULT_STD, device=t.device).view(1, -1, 1, 1)
    return (t / 255.0 - mean) / std


@dataclass
class LoadedModel:
    """A model ready for inference plus everything needed to feed it like in training."""

    model: nn.Module
    device: torch.device
    task: str
    class_names: list[str]
    spec: dict[str, Any]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of output logits."""
        return int(self.spec.get("num_classes", len(self.class_names)))

    def preprocess(self, batch: npt.NDArray[np.uint8]) -> torch.Tensor:
        """uint8 NHWC -> float NCHW on the model's device, normalised exactly as in training."""
        return preprocess_batch(batch, self.preprocessing, self.device)

    @torch.no_grad()
    def predict_proba(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Softmax probabilities (N, C[, H, W]) for a uint8 NHWC batch."""
        self.model.eval()
        out = self.model(self.preprocess(batch))
        return torch.softmax(out.float(), dim=1).cpu().numpy()


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to weights_only-safe plain types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, spec: dict[str, Any],
                    task: str, class_names: list[str], preprocessing: dict[str, Any],
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; return its path.

    ``extra`` may hold tensors (optimizer state, RNG) and plain types, nothing else.
    """
    if task not in ("segment", "classify"):
        raise ConfigError(f"task must be 'segment' or 'classify', got {task!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = model.module if hasattr(model, "module") else model
    base = getattr(base, "_orig_mod", base)  # torch.compile wrapper
    state = {k: v.detach().cpu() for k, v in base.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "spec": _plain(spec),
        "class_names": [str(c) for c in class_names],
        "preprocessing": _plain(preprocessing),
        "metrics": _plain(metrics or {}),
        "state_dict": state,
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint dict (CPU tensors) without building the model.

    Raises
    ------
    CheckpointError
        Missing, corrupt, foreign, newer-version or unsafe (pickled code) file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():
            raise CheckpointError(f"{path.name} is not a readable checkpoint (corrupt or not "
                                  "a torch file)") from err
        raise CheckpointError(
            f"{path.name} contains pickled Python code, which napari-histo refuses to load "
            "for safety; save it again with napari-histo (save_checkpoint) from trusted code"
        ) from err
    except Exception as err:
        raise CheckpointError(f"{path.name} is not a readable checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a napari-histo checkpoint (no '{FORMAT}' tag)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} has checkpoint format {version}; this napari-histo reads <= "
            f"{FORMAT_VERSION}: upgrade napari-histo")
    for key in ("spec", "state_dict", "task", "class_names", "preprocessing"):
        if key not in ckpt:
            raise CheckpointError(f"{path.name} is incomplete: missing '{key}'")
    return ckpt


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint into a :class:`LoadedModel` (eval mode, on ``device``)."""
    from napari_histo.engine.devices import resolve_device

    ckpt = read_checkpoint(path)
    dev = resolve_device(device)
    try:
        model = build_model(dict(ckpt["spec"]))
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, ConfigError) as err:
        raise CheckpointError(f"{Path(path).name}: weights do not match the model spec: {err}") from err
    model.to(dev).eval()
    pre = default_preprocessing(**ckpt["preprocessing"])
    return LoadedModel(model=model, device=dev, task=ckpt["task"],
                       class_names=list(ckpt["class_names"]), spec=dict(ckpt["spec"]),
                       preprocessing=pre, metrics=dict(ckpt.get("metrics") or {}),
                       path=Path(path), extra=dict(ckpt.get("extra") or {}))


_CACHE_LOCK = threading.Lock()
_CACHE: dict[tuple[str, int, int, str], LoadedModel] = {}


def _cache_key(path: str | os.PathLike[str], device: str | torch.device) -> tuple[str, int, int, str]:
    from napari_histo.engine.devices import resolve_device

    p = Path(path).resolve()
    st = p.stat()
    return (str(p), st.st_size, st.st_mtime_ns, str(resolve_device(device)))


def cached_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 ) -> LoadedModel | None:
    """The model :func:`load_checkpoint_cached` holds for this file and device, or None."""
    try:
        key = _cache_key(path, device)
    except OSError:
        return None
    with _CACHE_LOCK:
        return _CACHE.get(key)


def load_checkpoint_cached(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                           ) -> LoadedModel:
    """:func:`load_checkpoint` that keeps the last model loaded.

    Segmenting again after a pan must not reload the weights (seconds for a ResNet-50). The
    key is the file's resolved path, size and modification time and the device, so a
    rewritten checkpoint is reloaded; one model is kept, so memory stays bounded.
    """
    key = _cache_key(path, device)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    loaded = load_checkpoint(path, device=device)
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE[key] = loaded
    return loaded
