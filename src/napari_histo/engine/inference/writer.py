"""Streaming prediction outputs: an OME-Zarr store written block by block, or memory.

Layout of ``NAME.ome.zarr`` (OME-NGFF 0.4, zarr format 2 for the widest reader support)::

    .zattrs          multiscales of the probabilities + "napari_histo" (complete flag, mpp,
                     origin, classes, settings fingerprint, skipped/failed tiles)
    0, 1, ...        probabilities: (H, W) positive class for binary models, (C, H, W)
                     otherwise; float16 or uint8 (= round(255 p)); level k is 2**k smaller
    labels/prediction/0, 1, ...   uint8 label map (threshold or argmax), NGFF image-label

While a run is unfinished, a sibling folder ``.NAME.ome.zarr.done/`` holds one empty file
per finished block (what a resume skips; outside the zarr hierarchy so readers never see
it); it is removed once the store is complete.

Each block is exactly one level-0 chunk, so separate processes can write separate blocks of
the same store. The ``complete`` flag is set last: a store without it is a partial run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError, OutputExistsError
from napari_histo.io.ome_zarr import downsample2

__all__ = ["MemorySink", "ZarrSink", "build_pyramid", "encode", "is_complete",
           "open_prediction", "read_meta"]

META = "napari_histo"


def done_dir(path: str | Path) -> Path:
    """Folder of the finished-block markers of a store (a hidden sibling)."""
    path = Path(path)
    return path.parent / f".{path.name}.done"


def encode(probs: npt.NDArray[np.float32], prob_dtype: str, threshold: float,
           ) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
    """Class probabilities (C, h, w) -> stored probabilities and the label map."""
    if probs.shape[0] == 2:
        p = probs[1]
        labels = (p >= threshold).astype(np.uint8)
        if threshold <= 0:
            labels &= (probs.sum(axis=0) > 0).astype(np.uint8)
    else:
        p = probs
        labels = np.argmax(probs, axis=0).astype(np.uint8)
    if prob_dtype == "uint8":
        return np.round(np.clip(p, 0, 1) * 255).astype(np.uint8), labels
    if prob_dtype == "float32":
        return p.astype(np.float32), labels
    return p.astype(np.float16), labels


class MemorySink:
    """Keeps the whole prediction in numpy arrays (regions, single images, tests)."""

    def __init__(self, shape: tuple[int, int], num_classes: int, threshold: float,
                 prob_dtype: str = "float32") -> None:
        self.threshold = threshold
        self.prob_dtype = prob_dtype
        dt = np.float16 if prob_dtype == "float16" else (np.uint8 if prob_dtype == "uint8" else np.float32)
        pshape = shape if num_classes == 2 else (num_classes, *shape)
        self.probabilities = np.zeros(pshape, dtype=dt)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.done: set[tuple[int, int]] = set()

    def write(self, b: tuple[int, int], box: tuple[int, int, int, int],
              probs: npt.NDArray[np.float32]) -> None:
        """Store one block."""
        y0, x0, y1, x1 = box
        p, lab = encode(probs, self.prob_dtype, self.threshold)
        self.probabilities[..., y0:y1, x0:x1] = p
        self.labels[y0:y1, x0:x1] = lab
        self.done.add(b)


_LIBC: Any = None


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    Many threads decoding, blending and compressing blocks of varying sizes leave glibc's
    per-thread arenas fragmented: without this, RSS grew ~3 MB per tile on a 50k x 50k
    slide although nothing was leaked (measured in benchmarks/bench_infer.py).
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _zarr() -> Any:
    import zarr

    return zarr


def _multiscales(name: str, n_levels: int, ndim: int, mpp: tuple[float, float] | None,
                 origin: tuple[float, float]) -> list[dict[str, Any]]:
    unit = "micrometer" if mpp else None
    base = mpp or (1.0, 1.0)
    axes: list[dict[str, Any]] = []
    if ndim == 3:
        axes.append({"name": "c", "type": "channel"})
    for ax in ("y", "x"):
        a: dict[str, Any] = {"name": ax, "type": "space"}
        if unit:
            a["unit"] = unit
        axes.append(a)
    datasets = []
    for k in range(n_levels):
        s = [base[0] * 2**k, base[1] * 2**k]
        t = [origin[0], origin[1]]
        if ndim == 3:
            s, t = [1.0, *s], [0.0, *t]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": s}, {"type": "translation", "translation": t}]})
    return [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]


class ZarrSink:
    """Writes blocks into an OME-Zarr prediction store; resumable and multi-process safe.

    Use :meth:`create` for a new run and :meth:`open` (by workers, or to resume).
    """

    def __init__(self, path: Path, group: Any, threshold: float, prob_dtype: str) -> None:
        self.path = path
        self.group = group
        self.threshold = threshold
        self.prob_dtype = prob_dtype
        self.probabilities = group["0"]
        self.labels = group["labels/prediction/0"]
        done_dir(path).mkdir(exist_ok=True)

    @classmethod
    def create(cls, path: str | Path, *, shape: tuple[int, int], chunk: int, num_classes: int,
               prob_dtype: str, threshold: float, meta: dict[str, Any],
               mpp: tuple[float, float] | None, origin_um: tuple[float, float],
               name: str = "prediction") -> ZarrSink:
        """Create a fresh store (the caller has dealt with an existing one)."""
        zarr = _zarr()
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(done_dir(path), ignore_errors=True)  # markers of an older store
            group = zarr.open_group(str(path), mode="w", zarr_format=2)
        except (OSError, PermissionError) as err:
            raise ConfigError(f"cannot write the output {path}: {err}") from err
        pshape = shape if num_classes == 2 else (num_classes, *shape)
        pchunks = (chunk, chunk) if num_classes == 2 else (num_classes, chunk, chunk)
        dt = "uint8" if prob_dtype == "uint8" else "float16"
        group.create_array("0", shape=pshape, chunks=pchunks, dtype=dt, fill_value=0)
        labels = group.create_group("labels")
        labels.attrs["labels"] = ["prediction"]
        lab = labels.create_group("prediction")
        lab.create_array("0", shape=shape, chunks=(chunk, chunk), dtype="uint8", fill_value=0)
        ndim = len(pshape)
        group.attrs["multiscales"] = _multiscales(name, 1, ndim, mpp, origin_um)
        lab.attrs["multiscales"] = _multiscales("prediction", 1, 2, mpp, origin_um)
        lab.attrs["image-label"] = {"version": "0.4", "colors": [
            {"label-value": 1, "rgba": [255, 0, 0, 255]}], "source": {"image": "../../"}}
        group.attrs[META] = {**meta, "complete": False}
        return cls(path, group, threshold, prob_dtype)

    @classmethod
    def open(cls, path: str | Path, *, threshold: float | None = None,
             prob_dtype: str | None = None) -> ZarrSink:
        """Open an existing store for writing more blocks."""
        zarr = _zarr()
        path = Path(path)
        group = zarr.open_group(str(path), mode="r+")
        meta = dict(group.attrs[META])
        return cls(path, group, threshold if threshold is not None else meta["threshold"],
                   prob_dtype or meta["prob_dtype"])

    @property
    def meta(self) -> dict[str, Any]:
        """The napari_histo metadata dict."""
        return dict(self.group.attrs[META])

    def update_meta(self, **changes: Any) -> None:
        """Merge keys into the napari_histo metadata."""
        m = self.meta
        m.update(changes)
        self.group.attrs[META] = m

    def done_blocks(self) -> set[tuple[int, int]]:
        """Blocks already written by this or an earlier run."""
        out = set()
        for f in done_dir(self.path).iterdir():
            try:
                by, bx = f.name.split("_")
                out.add((int(by), int(bx)))
            except ValueError:
                continue
        return out

    def write(self, b: tuple[int, int], box: tuple[int, int, int, int],
              probs: npt.NDArray[np.float32]) -> None:
        """Write one block (= one chunk) then its done marker."""
        y0, x0, y1, x1 = box
        p, lab = encode(probs, self.prob_dtype, self.threshold)
        self.probabilities[..., y0:y1, x0:x1] = p
        self.labels[y0:y1, x0:x1] = lab
        (done_dir(self.path) / f"{b[0]}_{b[1]}").touch()

    def finish(self, **meta: Any) -> None:
        """Build the pyramids and set the completion flag (last)."""
        build_pyramid(self.group)
        self.update_meta(**meta, complete=True)
        shutil.rmtree(done_dir(self.path), ignore_errors=True)


def _build_levels(group: Any, reduce: Any, min_side: int) -> int:
    """Add levels 1.. to a multiscale group chunk by chunk; return the level count."""
    k = 0
    while True:
        src = group[str(k)]
        h, w = src.shape[-2:]
        if max(h, w) <= min_side:
            break
        shape = (*src.shape[:-2], math.ceil(h / 2), math.ceil(w / 2))
        chunks = src.chunks
        if str(k + 1) in group:
            del group[str(k + 1)]
        dst = group.create_array(str(k + 1), shape=shape, chunks=chunks, dtype=src.dtype,
                                 fill_value=0)
        cy, cx = chunks[-2:]
        for y0 in range(0, shape[-2], cy):
            for x0 in range(0, shape[-1], cx):
                y1, x1 = min(y0 + cy, shape[-2]), min(x0 + cx, shape[-1])
                block = np.asarray(src[..., 2 * y0 : 2 * y1, 2 * x0 : 2 * x1])
                if not block.any():
                    continue  # leave fill value: no chunk file for background
                dst[..., y0:y1, x0:x1] = reduce(block)[..., : y1 - y0, : x1 - x0]
            release_memory()
        k += 1
    return k + 1


def build_pyramid(group: Any, min_side: int = 256) -> None:
    """Downsampled levels for the probabilities (mean) and labels (nearest), flat memory."""
    n = _build_levels(group, lambda b: downsample2(b, "image"), min_side)
    ms = group.attrs["multiscales"]
    scale0 = ms[0]["datasets"][0]["coordinateTransformations"]
    ms[0]["datasets"] = [_level_ds(scale0, k) for k in range(n)]
    group.attrs["multiscales"] = ms
    lab = group["labels/prediction"]
    n = _build_levels(lab, lambda b: downsample2(b, "labels"), min_side)
    ms = lab.attrs["multiscales"]
    scale0 = ms[0]["datasets"][0]["coordinateTransformations"]
    ms[0]["datasets"] = [_level_ds(scale0, k) for k in range(n)]
    lab.attrs["multiscales"] = ms


def _level_ds(transforms0: list[dict[str, Any]], k: int) -> dict[str, Any]:
    s = list(transforms0[0]["scale"])
    s[-2:] = [s[-2] * 2**k, s[-1] * 2**k]
    return {"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": s}, *transforms0[1:]]}


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The napari_histo metadata of a prediction store, or None if it is not one."""
    p = Path(path) / ".zattrs"
    if not p.is_file():
        return None
    try:
        return dict(json.loads(p.read_text()).get(META) or {}) or None
    except (OSError, ValueError):
        return None


def is_complete(path: str | Path) -> bool:
    """Whether a prediction store finished (its completion flag is set)."""
    meta = read_meta(path)
    return bool(meta and meta.get("complete"))


def open_prediction(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(probabilities level 0, labels level 0, metadata) of a prediction store (read-only)."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="r")
    return group["0"], group["labels/prediction/0"], dict(group.attrs[META])


def prepare_output(path: Path, *, resume: bool, overwrite: bool) -> str:
    """Decide what to do with an existing output: 'new', 'resume' or 'done'.

    Raises
    ------
    OutputExistsError
        It exists and neither resume nor overwrite was asked for.
    ConfigError
        The output folder cannot be written.
    """
    import os

    if path.exists():
        if overwrite:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            return "new"
        if resume:
            meta = read_meta(path)
            if meta is None:
                raise ConfigError(f"{path} exists but is not a napari-histo prediction; "
                                  "cannot resume it (use --overwrite or another --out)")
            return "done" if meta.get("complete") else "resume"
        raise OutputExistsError(
            f"output {path} already exists; pass --resume to finish it, --overwrite to "
            "replace it, or choose another --out")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the output folder {parent}: {err.strerror or err}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {parent} is not writable; choose another --out")
    return "new"
