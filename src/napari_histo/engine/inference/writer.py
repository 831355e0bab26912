"""Streaming prediction outputs: an OME-Zarr store written block by block, or memory.

Layout of ``NAME.ome.zarr`` (OME-NGFF 0.4 on zarr v2 by default, for the widest reader
support; 0.5 on zarr v3 with ``ngff_version="0.5"``, the NGFF keys then under ``"ome"``)::

    .zattrs          multiscales of the probabilities + "napari_histo" (complete flag, mpp,
    (zarr.json)      origin, classes, settings fingerprint, skipped/failed tiles)
    0, 1, ...        probabilities: (H, W) positive class for binary models, (C, H, W)
                     otherwise; float16 or uint8 (= round(255 p)); level k is 2**k smaller
    labels/prediction/0, 1, ...   uint8 label map (threshold or argmax), NGFF image-label

A new store (:meth:`ZarrSink.create`) has all its levels from the start and each written
block is downsampled into them at once (in the writer thread), so a viewer can show the
whole store, zoomed out or in, while it fills (issue 11); a store reopened to resume or by
distributed workers gets its lower levels rebuilt at :meth:`ZarrSink.finish` instead.

While a run is unfinished, a sibling folder ``.NAME.ome.zarr.done/`` holds one empty file
per finished block (what a resume skips; outside the zarr hierarchy so readers never see
it); it is removed once the store is complete.

NGFF metadata, pyramid levels, opening and completeness come from :mod:`napari_histo.io.ome_zarr`
(the one OME-Zarr module); this module keeps what is specific to predictions.

Each block is exactly one level-0 chunk, so separate processes can write separate blocks of
the same store. The ``complete`` flag is set last: a store without it is a partial run.

Safety rules (:func:`prepare_output`, :class:`StoreLock`):

* ``overwrite`` only ever deletes a store napari-histo wrote (its ``napari_histo`` prediction
  attributes) and its ``.NAME.done`` sibling; never a symbolic link, a plain file, another
  folder or OME-Zarr, nor a path that is, contains or lies inside an input.
* one run at a time writes a store: the coordinating process holds ``.NAME.lock`` (pid, host,
  time) beside it; a lock left by a dead process on this host is taken over.
* ``resume`` continues only the same run: :func:`check_resume` compares the checkpoint's
  sha256, the slide's fingerprint and the settings stored in the metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError, DataError, OutputExistsError
from napari_histo.core.limits import one_line
from napari_histo.io.ome_zarr import (
    VERSIONS,
    add_levels,
    array_options,
    grow_pyramid,
    image_label,
    is_complete,
    multiscales,
    open_ome_zarr,
    read_attrs,
    update_levels,
    wrap,
)
from napari_histo.io.prediction_status import done_dir

__all__ = ["MemorySink", "StoreLock", "ZarrSink", "build_pyramid", "check_resume",
           "discard_store", "encode", "is_complete", "is_our_store", "lock_path", "open_prediction",
           "prepare_output", "read_meta"]

META = "napari_histo"


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


def put_block(probabilities: Any, labels: Any, box: tuple[int, int, int, int],
              probs: npt.NDArray[np.float32], prob_dtype: str, threshold: float) -> None:
    """Encode one block's class probabilities into a sink's probability and label arrays."""
    y0, x0, y1, x1 = box
    p, lab = encode(probs, prob_dtype, threshold)
    probabilities[..., y0:y1, x0:x1] = p
    labels[y0:y1, x0:x1] = lab


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
        put_block(self.probabilities, self.labels, box, probs, self.prob_dtype, self.threshold)
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


class ZarrSink:
    """Writes blocks into an OME-Zarr prediction store; resumable and multi-process safe.

    Use :meth:`create` for a new run and :meth:`open` (by workers, or to resume).
    """

    def __init__(self, path: Path, group: Any, threshold: float, prob_dtype: str,
                 *, live_levels: bool = False) -> None:
        self.path = path
        self.group = group
        self.threshold = threshold
        self.prob_dtype = prob_dtype
        self.probabilities = group["0"]
        self.labels = group["labels/prediction/0"]
        #: lower levels kept up to date block by block (only by the sink that created them:
        #: another process writing blocks of the same store could not be serialised with it)
        self.live_levels = live_levels
        self._prob_levels: list[Any] = []
        self._label_levels: list[Any] = []
        if live_levels:
            self._prob_levels = _levels(group)
            self._label_levels = _levels(group["labels/prediction"])
        # blocks are written by several threads; a lower-level pixel covers several blocks,
        # so their downsampling runs one block at a time
        self._levels_lock = threading.Lock()
        done_dir(path).mkdir(exist_ok=True)

    @classmethod
    def create(cls, path: str | Path, *, shape: tuple[int, int], chunk: int, num_classes: int,
               prob_dtype: str, threshold: float, meta: dict[str, Any],
               mpp: tuple[float, float] | None, origin_um: tuple[float, float],
               name: str = "prediction", ngff_version: str = "0.4") -> ZarrSink:
        """Create a fresh store (the caller has dealt with an existing one).

        ``mpp`` and ``origin_um`` place level 0 (scale and translation); they are in
        micrometres when ``meta["mpp"]`` is set, else in level-0 pixels (no unit written).
        """
        zarr = _zarr()
        path = Path(path)
        if ngff_version not in VERSIONS:
            raise ConfigError(f"ngff_version must be one of {', '.join(VERSIONS)}, "
                              f"got {ngff_version!r}")
        if path.exists() or path.is_symlink():
            raise OutputExistsError(
                f"output {path} appeared while this run was starting (another process?); "
                "choose another --out")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_done_dir(path)  # markers of an older store
            # "w-": never clear something that appeared at the path meanwhile
            group = zarr.open_group(str(path), mode="w-",
                                    zarr_format=2 if ngff_version == "0.4" else 3)
        except (OSError, PermissionError) as err:
            raise ConfigError(f"cannot write the output {path}: {err}") from err
        except Exception as err:  # zarr's ContainsGroupError / ContainsArrayError
            if path.exists() or path.is_symlink():
                raise OutputExistsError(
                    f"output {path} appeared while this run was starting (another process?); "
                    "choose another --out") from None
            raise ConfigError(f"cannot write the output {path}: {err}") from err
        pshape = shape if num_classes == 2 else (num_classes, *shape)
        pchunks = (chunk, chunk) if num_classes == 2 else (num_classes, chunk, chunk)
        dt = "uint8" if prob_dtype == "uint8" else "float16"
        zf = group.metadata.zarr_format
        group.create_array("0", shape=pshape, chunks=pchunks, dtype=dt, fill_value=0,
                           **array_options(zf, len(pshape)))
        labels = group.create_group("labels")
        labels.attrs.update(wrap({"labels": ["prediction"]}, ngff_version))
        lab = labels.create_group("prediction")
        lab.create_array("0", shape=shape, chunks=(chunk, chunk), dtype="uint8", fill_value=0,
                         **array_options(zf, 2))
        scale0, unit = mpp or (1.0, 1.0), "micrometer" if meta.get("mpp") else None
        lab.attrs.update(wrap({
            "multiscales": [multiscales(1, channels=False, scale0=scale0,
                                        translation0=origin_um, unit=unit, name="prediction",
                                        version=ngff_version, kind="labels")],
            "image-label": image_label(ngff_version, {1: [255, 0, 0, 255]}, source="../../"),
        }, ngff_version))
        probs = multiscales(1, channels=len(pshape) == 3, scale0=scale0, translation0=origin_um,
                            unit=unit, name=name, version=ngff_version, kind="image")
        group.attrs.update({**wrap({"multiscales": [probs]}, ngff_version),
                            META: {**meta, "complete": False}})
        add_levels(group)
        add_levels(lab)
        return cls(path, group, threshold, prob_dtype, live_levels=True)

    @classmethod
    def open(cls, path: str | Path, *, threshold: float | None = None,
             prob_dtype: str | None = None) -> ZarrSink:
        """Open an existing store for writing more blocks."""
        path = Path(path)
        try:
            group = open_ome_zarr(path, mode="r+").group
            meta = dict(group.attrs[META])
            return cls(path, group, threshold if threshold is not None else meta["threshold"],
                       prob_dtype or meta["prob_dtype"])
        except (DataError, KeyError, ValueError, TypeError, FileNotFoundError) as err:
            raise DataError(f"{path} is not a usable napari-histo prediction store "
                            f"({type(err).__name__}: {one_line(err, 200)}); use --overwrite or "
                            "another --out") from None

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
        out: set[tuple[int, int]] = set()
        d = done_dir(self.path)
        if not d.is_dir():
            return out
        for f in d.iterdir():
            try:
                by, bx = f.name.split("_")
                out.add((int(by), int(bx)))
            except ValueError:
                continue
        return out

    def write(self, b: tuple[int, int], box: tuple[int, int, int, int],
              probs: npt.NDArray[np.float32]) -> None:
        """Write one block (= one chunk) then its done marker."""
        put_block(self.probabilities, self.labels, box, probs, self.prob_dtype, self.threshold)
        if self.live_levels:
            with self._levels_lock:
                update_levels(self._prob_levels, "image", box)
                update_levels(self._label_levels, "labels", box)
        (done_dir(self.path) / f"{b[0]}_{b[1]}").touch()

    def finish(self, **meta: Any) -> None:
        """Complete the pyramids (unless kept up to date while writing) and set the
        completion flag (last)."""
        if not self.live_levels:
            build_pyramid(self.group)
        self.update_meta(**meta, complete=True)
        shutil.rmtree(done_dir(self.path), ignore_errors=True)


def _levels(group: Any) -> list[Any]:
    """Arrays ``0, 1, ...`` of an NGFF group, largest first."""
    out: list[Any] = []
    while str(len(out)) in group:
        out.append(group[str(len(out))])
    return out


def build_pyramid(group: Any, min_side: int = 256) -> None:
    """Downsampled levels for the probabilities (mean) and labels (nearest), flat memory."""
    grow_pyramid(group, "image", min_side=min_side, after_row=release_memory)
    grow_pyramid(group["labels/prediction"], "labels", min_side=min_side,
                 after_row=release_memory)


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The napari_histo metadata of a prediction store, or None if it is not one.

    A prediction store is a zarr group (``.zattrs`` or ``zarr.json``) with ``napari_histo``
    attributes; the other OME-Zarr stores napari-histo writes (``io.ome_zarr``: slides,
    label pyramids) carry ``napari_histo`` attributes too, always with a ``kind``, which a
    prediction's never has.
    """
    attrs = read_attrs(path)
    if attrs is None:
        return None
    meta = attrs.get(META)
    if not isinstance(meta, dict) or not meta or "kind" in meta:
        return None
    return dict(meta)


def open_prediction(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(probabilities level 0, labels level 0, metadata) of a prediction store (read-only).

    Raises
    ------
    DataError
        ``path`` is not a napari-histo prediction store (or it is damaged).
    """
    if read_meta(path) is None:
        raise DataError(f"{path} is not a napari-histo prediction store (no napari_histo "
                        "prediction metadata); give a store written by napari-histo predict")
    try:
        group = open_ome_zarr(path).group
        return group["0"], group["labels/prediction/0"], dict(group.attrs[META])
    except (DataError, KeyError, ValueError, TypeError, FileNotFoundError) as err:
        raise DataError(f"{path}: the prediction store is damaged ({type(err).__name__}: "
                        f"{err})") from None


def _resolved(p: Path) -> Path:
    try:
        return p.expanduser().resolve(strict=False)
    except (OSError, RuntimeError):
        return p.expanduser().absolute()


def _check_inputs(path: Path, inputs: Any) -> None:
    """Refuse an output that is, contains or lies inside one of the inputs."""
    out = _resolved(path)
    for inp in inputs or ():
        if inp is None or str(inp) == "":
            continue
        src = _resolved(Path(inp))
        if out == src:
            raise ConfigError(f"output {path} is the input {inp}; choose another --out")
        if src in out.parents:
            raise ConfigError(f"output {path} lies inside the input {inp}; choose another --out")
        if out in src.parents:
            raise ConfigError(f"output {path} contains the input {inp}; choose another --out")


def _remove_done_dir(path: Path) -> None:
    """Remove the hidden ``.NAME.done`` sibling (a link is unlinked, never followed)."""
    d = done_dir(path)
    if d.is_symlink() or d.is_file():
        d.unlink()
    elif d.is_dir():
        shutil.rmtree(d)


def is_our_store(path: str | Path) -> bool:
    """Whether ``path`` is a real folder (not a link) holding a napari-histo prediction store.

    The one test before napari-histo deletes anything (``--overwrite``, the Past predictions
    list): a foreign folder, a file or a symbolic link is never ours.
    """
    path = Path(path)
    return (not path.is_symlink() and path.is_dir() and read_meta(path) is not None
            and (path / "0").is_dir())


def _remove_ours(path: Path) -> None:
    """Delete a prediction store napari-histo wrote, refusing anything else (one line)."""
    if path.is_symlink():
        raise ConfigError(f"output {path} is a symbolic link; give the real path")
    if not path.is_dir():
        raise OutputExistsError(
            f"output {path} is a file, not a napari-histo prediction store; --overwrite only "
            "replaces stores napari-histo wrote: remove it yourself or choose another --out")
    if not is_our_store(path):
        raise OutputExistsError(
            f"output {path} exists and is not a napari-histo prediction store; --overwrite "
            "only replaces stores napari-histo wrote: remove it yourself or choose another --out")
    try:
        shutil.rmtree(path)
        _remove_done_dir(path)
    except OSError as err:
        raise ConfigError(f"cannot remove the old output {path}: {err.strerror or err}") from None


def discard_store(path: str | Path) -> bool:
    """Remove an unfinished store of ours (a run that failed before writing any block).

    Returns whether it was removed; anything not an unfinished napari-histo prediction store
    is left alone.
    """
    path = Path(path)
    meta = read_meta(path)
    if path.is_symlink() or meta is None or meta.get("complete"):
        return False
    try:
        shutil.rmtree(path)
        _remove_done_dir(path)
    except OSError:
        return False
    return True


def prepare_output(path: Path, *, resume: bool, overwrite: bool, inputs: Any = ()) -> str:
    """Decide what to do with an existing output: 'new', 'resume' or 'done'.

    ``overwrite`` removes only a prediction store napari-histo wrote (and its hidden
    ``.NAME.done`` sibling); ``inputs`` (the slide, the checkpoint) are never the output, inside
    it or around it. Call it while holding the store's :class:`StoreLock`.

    Raises
    ------
    OutputExistsError
        It exists and neither resume nor overwrite was asked for, or overwrite was asked
        for something napari-histo did not write.
    ConfigError
        The output is a symbolic link or overlaps an input, or its folder cannot be written.
    """
    path = Path(path)
    _check_inputs(path, inputs)
    if path.is_symlink():
        raise ConfigError(f"output {path} is a symbolic link; give the real path")
    if path.exists():
        if overwrite:
            _remove_ours(path)
            return "new"
        if resume:
            meta = read_meta(path)
            if meta is None:
                raise ConfigError(f"{path} exists but is not a napari-histo prediction; "
                                  "cannot resume it (use another --out)")
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


# ------------------------------------------------------------------------------ resume checks


def _short(h: Any) -> str:
    return str(h)[:12] if h else "unknown"


def check_resume(path: Path, meta: dict[str, Any], *, fingerprint: dict[str, Any],
                 checkpoint_sha256: str | None, checkpoint_name: str | None,
                 slide_fingerprint: dict[str, Any]) -> None:
    """Refuse to resume (or reuse) a store written by another run, naming what differs.

    Raises
    ------
    ConfigError
        One line: an old store without fingerprints, another checkpoint, a changed slide,
        or other settings.
    """
    fix = "use --overwrite to replace it or another --out"
    if "checkpoint_sha256" not in meta or "slide_fingerprint" not in meta:
        raise ConfigError(f"{path} was written by an older napari-histo that did not record "
                          f"the checkpoint and slide fingerprints, so resuming it cannot be "
                          f"checked; {fix}")
    old = meta.get("checkpoint_sha256")
    if old != checkpoint_sha256:
        was = meta.get("checkpoint_name") or meta.get("checkpoint") or "an in-memory model"
        was = Path(str(was)).name
        now = Path(str(checkpoint_name)).name if checkpoint_name else "an in-memory model"
        raise ConfigError(f"{path} was written with checkpoint {was} (sha256 {_short(old)}), "
                          f"not {now} (sha256 {_short(checkpoint_sha256)}); {fix}")
    sf = meta.get("slide_fingerprint") or {}
    if sf != slide_fingerprint:
        labels = {"shape": "size in pixels", "size": "file size", "head_tail_sha256":
                  "content (first/last MB)", "metadata_sha256": "metadata"}
        diffs = [k for k in labels if sf.get(k) != slide_fingerprint.get(k)]
        what = ", ".join(labels[k] for k in diffs) or "fingerprint"
        raise ConfigError(f"the slide changed since {path} was written ({what} differ); {fix}")
    stored = meta.get("fingerprint") or {}
    if stored != fingerprint:
        keys = [k for k in dict.fromkeys([*fingerprint, *stored])
                if stored.get(k) != fingerprint.get(k)]
        parts = [f"{k} {_fmt(stored.get(k))} vs {_fmt(fingerprint.get(k))}" for k in keys[:4]]
        more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
        raise ConfigError(f"{path}: settings differ (stored vs now): {', '.join(parts)}{more}; "
                          f"{fix}")


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return str(v)


# ------------------------------------------------------------------------------ lock


def lock_path(path: str | Path) -> Path:
    """The lock file of a store: a hidden sibling ``.NAME.lock``."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _proc_start(pid: int) -> str | None:
    """Start time of a process (Linux /proc), to tell a reused pid from the lock's owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class StoreLock:
    """Exclusive writer lock of one prediction store (``.NAME.lock`` created O_EXCL).

    Holds pid, host, start time and a token; :meth:`release` removes it only if it is still
    ours. Only the coordinating process locks: distributed workers write blocks of a store
    whose coordinator holds the lock.
    """

    #: an unreadable (just created, not yet written) lock younger than this is held
    FRESH_S = 10.0

    def __init__(self, path: str | Path) -> None:
        self.store = Path(path)
        self.path = lock_path(path)
        self.token = uuid.uuid4().hex
        self.held = False
        self.note: str | None = None

    def _content(self) -> bytes:
        pid = os.getpid()
        return json.dumps({"pid": pid, "host": socket.gethostname(), "time": time.time(),
                           "started": _proc_start(pid), "token": self.token}).encode()

    def acquire(self) -> StoreLock:
        """Take the lock or raise ConfigError naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the output folder {self.path.parent}: "
                              f"{err.strerror or err}") from None
        for _ in range(4):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._judge_existing()
                continue
            except OSError as err:
                raise ConfigError(f"cannot write the output {self.store}: "
                                  f"{err.strerror or err}") from None
            try:
                os.write(fd, self._content())
            finally:
                os.close(fd)
            self.held = True
            return self
        raise ConfigError(f"{self.store} is being written by another napari-histo process "
                          f"(its lock {self.path} keeps changing); try again later")

    def _judge_existing(self) -> None:
        """Raise when the existing lock is live; remove it when its owner is gone."""
        try:
            raw = self.path.read_bytes()
            st = self.path.stat()
        except FileNotFoundError:
            return  # released meanwhile: try again
        except OSError as err:
            raise ConfigError(f"cannot read the lock {self.path}: {err.strerror or err}") from None
        try:
            info = json.loads(raw.decode())
            pid = int(info["pid"])
            host = str(info.get("host") or "")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if time.time() - st.st_mtime < self.FRESH_S:
                raise ConfigError(f"{self.store} is being written by another napari-histo "
                                  "process (its lock was just created); wait for it to finish "
                                  "or choose another --out") from None
            info, pid, host = {}, -1, socket.gethostname()
        try:
            t = float(info.get("time") or st.st_mtime)
        except (TypeError, ValueError):
            t = st.st_mtime
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
        if host != socket.gethostname():
            raise ConfigError(f"{self.store} is being written by another napari-histo process "
                              f"(pid {pid} on host {host}, since {since}); if no such run is "
                              f"going on, delete {self.path}")
        started = info.get("started")
        if pid > 0 and _alive(pid) and (started is None or _proc_start(pid) in (None, started)):
            raise ConfigError(f"{self.store} is being written by another napari-histo process "
                              f"(pid {pid}, since {since}); wait for it to finish or choose "
                              "another --out")
        # stale: move it aside atomically, and make sure what we moved is what we judged
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{self.token[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != raw:  # another process took it over meanwhile: put back
                try:
                    os.link(aside, self.path)
                except OSError:
                    pass
                return
            who = f"pid {pid}" if pid > 0 else "an unreadable lock"
            self.note = (f"{self.store.name}: took over the stale lock of {who} (since {since}), "
                         "which is no longer running")
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if it is still ours (idempotent)."""
        if not self.held:
            return
        self.held = False
        try:
            info = json.loads(self.path.read_bytes().decode())
        except (OSError, ValueError, UnicodeDecodeError):
            return
        if info.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> StoreLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()
