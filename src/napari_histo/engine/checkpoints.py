"""Checkpoint files: one ``.pt`` with spec, weights, preprocessing, class names and metrics.

Files are written atomically (temp name + rename) and read with
``torch.load(weights_only=True)``, so a checkpoint can never run code: a file carrying a
pickled code payload is refused with :class:`CheckpointError`. Every value a run reads is
validated at load time (types, finite numbers, ranges, a parameter count that matches the
stored weights, computed before the network is built), and a checkpoint never makes
napari-histo read another file (its spec's pretrained-weights options are dropped). Everything else a run needs
(optimizer, scheduler, RNG for resume) goes in ``extra`` as tensors and plain types.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from napari_histo.core.errors import CheckpointError, ConfigError
from napari_histo.core.limits import (
    CONTEXT_RANGE,
    MAX_CHECKPOINT_BYTES,
    MAX_PARAMS,
    MPP_RANGE,
    NUM_CLASSES_RANGE,
    PATCH_RANGE,
    STRIDE_RANGE,
    check_alloc,
    check_regular_file,
    human_bytes,
    integer,
    number,
    one_line,
)
from napari_histo.engine.models import (
    EXTERNAL_WEIGHT_KEYS,
    build_model,
    count_params,
    validate_spec,
)

FORMAT = "napari-histo-checkpoint"
FORMAT_VERSION = 1
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)

__all__ = ["FORMAT_VERSION", "LoadedModel", "save_checkpoint", "load_checkpoint",
           "load_checkpoint_cached", "cached_model", "read_checkpoint", "default_preprocessing",
           "preprocess_batch", "validate_preprocessing"]


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
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    weights_origin: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; return its path.

    ``extra`` may hold tensors (optimizer state, RNG) and plain types, nothing else.
    ``weights_origin`` records where the training started from (``{"kind": "none"}``,
    ``{"kind": "file", "name", "sha256"}``, ``{"kind": "hub", "id"}``, ...): metadata only,
    never used to read anything.
    """
    if task not in ("segment", "classify"):
        raise ConfigError(f"task must be 'segment' or 'classify', got {task!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base: Any = model.module if hasattr(model, "module") else model
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
    if weights_origin is not None:
        payload["weights_origin"] = _plain(weights_origin)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # through a Python file: a full disk then surfaces as OSError(ENOSPC) naming the file
        # (torch's own path writer reports it as an opaque RuntimeError)
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_container(path: Path) -> None:
    """Refuse a checkpoint whose zip members would unpack beyond the memory budget."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load reports what is wrong with it
    if len(infos) > 1_000_000:
        raise CheckpointError(f"{path.name} holds {len(infos)} entries; not a checkpoint")
    total = sum(max(0, i.file_size) for i in infos)
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path.name} unpacks to {human_bytes(total)}, more than the "
                              f"{human_bytes(MAX_CHECKPOINT_BYTES)} napari-histo loads")
    check_alloc(total, f"loading {path.name}", error=CheckpointError)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _floats(v: Any, n: int, label: str, *, positive: bool = False) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != n or not all(_is_number(x) for x in v):
        raise CheckpointError(f"{label} must be a list of {n} numbers, got {_short(v)}")
    out = [float(x) for x in v]
    if not all(math.isfinite(x) for x in out):
        raise CheckpointError(f"{label} must be finite numbers, got {_short(v)}")
    if positive and not all(x > 0 for x in out):
        raise CheckpointError(f"{label} must be > 0, got {_short(v)}")
    return out


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _check_stain(stain: Any, label: str) -> Any:
    if stain is None:
        return None
    if not isinstance(stain, dict):
        raise CheckpointError(f"{label} must be a mapping or null, got {_short(stain)}")
    method = stain.get("method")
    if method == "macenko":
        m = stain.get("stain_matrix")
        if not isinstance(m, (list, tuple)) or len(m) != 3:
            raise CheckpointError(f"{label} 'stain_matrix' must be 3 rows of 2 numbers")
        rows = [_floats(r, 2, f"{label} 'stain_matrix' row") for r in m]
        conc = _floats(stain.get("max_conc"), 2, f"{label} 'max_conc'", positive=True)
        return {**stain, "stain_matrix": rows, "max_conc": conc}
    if method == "reinhard":
        return {**stain, "mean": _floats(stain.get("mean"), 3, f"{label} 'mean'"),
                "std": _floats(stain.get("std"), 3, f"{label} 'std'", positive=True)}
    raise CheckpointError(f"{label} 'method' must be 'macenko' or 'reinhard', got {_short(method)}")


def validate_preprocessing(pre: Any, where: str = "checkpoint") -> dict[str, Any]:
    """A checked copy of a checkpoint's preprocessing (defaults filled in).

    ``mpp`` None or a plausible um/px (``MPP_RANGE``); ``patch_size`` 8..4096;
    ``context_size``/``center_size`` None or 8..4096 / 1..4096; ``mean``/``std`` three
    finite numbers (std > 0); ``stain`` None or fitted Macenko/Reinhard parameters.

    Raises
    ------
    CheckpointError
        Naming the key that is missing, of the wrong type or out of range.
    """
    if not isinstance(pre, dict):
        raise CheckpointError(f"{where}: 'preprocessing' must be a mapping, got {_short(pre)}")
    out = default_preprocessing(**{str(k): v for k, v in pre.items()})
    lab = f"{where}: preprocessing"
    out["mpp"] = number(f"{lab} 'mpp'", out["mpp"], *MPP_RANGE, allow_none=True,
                        error=CheckpointError)
    out["patch_size"] = integer(f"{lab} 'patch_size'", out["patch_size"], *PATCH_RANGE,
                                error=CheckpointError)
    out["context_size"] = integer(f"{lab} 'context_size'", out["context_size"], *CONTEXT_RANGE,
                                  allow_none=True, error=CheckpointError)
    out["center_size"] = integer(f"{lab} 'center_size'", out["center_size"], *STRIDE_RANGE,
                                 allow_none=True, error=CheckpointError)
    for key, positive in (("mean", False), ("std", True)):
        if out[key] is not None:
            out[key] = _floats(out[key], 3, f"{lab} '{key}'", positive=positive)
    out["stain"] = _check_stain(out["stain"], f"{lab} 'stain'")
    return out


def _check_origin(origin: Any, label: str, depth: int = 0) -> dict[str, Any] | None:
    """A weights-origin record: a small mapping of short strings, numbers and booleans."""
    if origin is None:
        return None
    if not isinstance(origin, dict) or len(origin) > 16:
        raise CheckpointError(f"{label} must be a small mapping, got {_short(origin)}")
    out: dict[str, Any] = {}
    for k, v in origin.items():
        if not isinstance(k, str) or len(k) > 64:
            raise CheckpointError(f"{label} has a bad key {_short(k)}")
        if isinstance(v, dict) and depth == 0:
            out[k] = _check_origin(v, f"{label} '{k}'", 1)
        elif v is None or isinstance(v, bool) or (isinstance(v, numbers.Real)
                                                    and math.isfinite(float(v))):
            out[k] = v
        elif isinstance(v, str) and len(v) <= 300:
            out[k] = v
        else:
            raise CheckpointError(f"{label} '{k}' must be a short string or a number, "
                                  f"got {_short(v)}")
    return out


def _validate(ckpt: dict[str, Any], name: str) -> dict[str, Any]:
    """Check every field inference reads; return the checkpoint with a safe spec."""
    if ckpt["task"] not in ("segment", "classify"):
        raise CheckpointError(f"{name}: 'task' must be 'segment' or 'classify', "
                              f"got {_short(ckpt['task'])}")
    spec = validate_spec(ckpt["spec"], error=CheckpointError, where=f"{name}: spec")
    # the state dict holds every weight: never let a checkpoint name another file to read
    spec = {k: v for k, v in spec.items() if k not in EXTERNAL_WEIGHT_KEYS}
    names = ckpt["class_names"]
    if (not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names)
            or len(names) > NUM_CLASSES_RANGE[1]):
        raise CheckpointError(f"{name}: 'class_names' must be a list of at most "
                              f"{NUM_CLASSES_RANGE[1]} strings, got {_short(names)}")
    if names and len(names) != spec["num_classes"]:
        raise CheckpointError(f"{name}: {len(names)} class names for a model with "
                              f"{spec['num_classes']} classes")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name}: 'state_dict' must map names to tensors")
    for key in ("metrics", "extra"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise CheckpointError(f"{name}: '{key}' must be a mapping, got {_short(ckpt[key])}")
    try:
        n_params = count_params(spec)
    except ConfigError as err:
        raise CheckpointError(f"{name}: spec does not build: {one_line(err, 200)}") from None
    stored = sum(int(v.numel()) for v in state.values())
    if n_params > MAX_PARAMS or n_params > stored:
        raise CheckpointError(
            f"{name}: its spec describes a network of {n_params:,} parameters but the file "
            f"stores {stored:,} weight values; the spec was edited or the file is corrupt")
    # where training started (metadata: never a reason to read another file)
    origin = _check_origin(ckpt.get("weights_origin"), f"{name}: 'weights_origin'")
    return {**ckpt, "spec": spec, "weights_origin": origin,
            "class_names": [str(c) for c in names],
            "preprocessing": validate_preprocessing(ckpt["preprocessing"], name)}


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint dict (CPU tensors) without building the model.

    Everything a run reads is checked here (see :func:`validate_preprocessing` and
    :func:`~napari_histo.engine.models.validate_spec`); the returned spec never asks for
    external (pretrained) weights. Named pipes and devices are refused unopened.

    Raises
    ------
    CheckpointError
        Missing, corrupt, foreign, newer-version, unsafe (pickled code) or inconsistent
        file, or one that would unpack beyond the memory budget.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_regular_file(path, what=f"checkpoint {path.name}", error=CheckpointError,
                       max_bytes=MAX_CHECKPOINT_BYTES)
    _check_container(path)
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
    except MemoryError:
        raise CheckpointError(f"{path.name}: not enough memory to load it") from None
    except Exception as err:
        raise CheckpointError(f"{path.name} is not a readable checkpoint: "
                              f"{one_line(err, 200)}") from err
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
    return _validate(ckpt, path.name)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint into a :class:`LoadedModel` (eval mode, on ``device``)."""
    from napari_histo.engine.devices import resolve_device

    ckpt = read_checkpoint(path)
    dev = resolve_device(device)
    try:
        model = build_model(dict(ckpt["spec"]), external_weights=False)
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{Path(path).name}: weights do not match the model spec: "
                              f"{one_line(err, 240)}") from err
    model.to(dev).eval()
    pre = dict(ckpt["preprocessing"])
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
    try:
        key = _cache_key(path, device)
    except OSError:
        return load_checkpoint(path, device=device)  # raises a CheckpointError saying why
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    loaded = load_checkpoint(path, device=device)
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE[key] = loaded
    return loaded
