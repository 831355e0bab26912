"""The prediction stores in the user's predictions folder: list them with their size, delete one.

The Segment widget writes each whole-slide prediction to ``settings.predictions_dir()`` as
``NAME.ome.zarr`` (with ``NAME.run_card.yaml`` beside it); they pile up. :func:`list_predictions`
says what is there (name, size on disk, date, complete or not, source slide) and
:func:`delete_prediction` removes one of them, only ever a store napari-histo wrote (the same
check as ``predict --overwrite``), never a foreign folder or a symbolic link.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from napari_histo.core import settings
from napari_histo.core.errors import ConfigError
from napari_histo.engine.inference.writer import StoreLock, is_our_store, read_meta
from napari_histo.engine.run_card import predict_card_path
from napari_histo.io.prediction_status import done_dir

__all__ = ["PredictionEntry", "card_path", "delete_prediction", "format_size",
           "list_predictions", "total_size"]

SUFFIX = ".ome.zarr"


@dataclass(frozen=True)
class PredictionEntry:
    """One prediction store of the predictions folder."""

    name: str
    path: Path
    size_bytes: int
    modified: float
    complete: bool
    source: str | None


def card_path(path: str | Path) -> Path:
    """``NAME.run_card.yaml`` beside the store ``NAME.ome.zarr``."""
    return predict_card_path(path)


def _disk_size(path: Path) -> tuple[int, float]:
    """(bytes summed over the files under ``path``, newest modification time); links not followed."""
    total, newest = 0, 0.0
    try:
        newest = path.stat().st_mtime
    except OSError:
        pass
    for root, _dirs, files in os.walk(path, followlinks=False):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


def list_predictions(folder: str | Path | None = None) -> list[PredictionEntry]:
    """The napari-histo prediction stores in ``folder`` (default the predictions folder), newest first.

    Other files and folders (and symbolic links) are left out.
    """
    root = Path(folder) if folder is not None else settings.predictions_dir()
    if not root.is_dir():
        return []
    out: list[PredictionEntry] = []
    for p in root.iterdir():
        if p.name.startswith(".") or not is_our_store(p):
            continue
        meta = read_meta(p) or {}
        size, mtime = _disk_size(p)
        card = card_path(p)
        if card.is_file() and not card.is_symlink():
            size += card.stat().st_size
        source = meta.get("source") or None
        name = p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else p.name
        out.append(PredictionEntry(name=name, path=p, size_bytes=size, modified=mtime,
                                   complete=bool(meta.get("complete")),
                                   source=str(source) if source else None))
    out.sort(key=lambda e: (-e.modified, e.name))
    return out


def total_size(entries: list[PredictionEntry]) -> int:
    """Bytes taken by ``entries`` together."""
    return sum(e.size_bytes for e in entries)


def format_size(n: int) -> str:
    """``n`` bytes as a short size: 512 B, 3.4 KB, 114.0 MB, 1.2 GB."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def delete_prediction(path: str | Path) -> None:
    """Delete the prediction store ``path``, its hidden progress folder and its run card.

    Raises
    ------
    ConfigError
        ``path`` is a symbolic link, or not a prediction store napari-histo wrote (a foreign
        folder, a file, nothing), or a running prediction is writing it (its lock is live), or
        it cannot be removed.
    """
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link, not a prediction store; nothing deleted")
    if not is_our_store(path):
        raise ConfigError(f"{path} is not a napari-histo prediction store; nothing deleted "
                          "(only stores napari-histo wrote are deleted)")
    card = card_path(path)
    try:
        lock = StoreLock(path).acquire()  # no writer may be filling it meanwhile
    except ConfigError:
        raise ConfigError(f"{path} is being written by a running prediction; cancel it or wait "
                          "for it to finish before deleting it") from None
    try:
        shutil.rmtree(path)
        marks = done_dir(path)
        if marks.is_symlink() or marks.is_file():
            marks.unlink()
        elif marks.is_dir():
            shutil.rmtree(marks)
        if card.is_symlink() or card.is_file():
            card.unlink()
    except OSError as err:
        raise ConfigError(f"cannot delete {path}: {err.strerror or err}") from None
    finally:
        lock.release()
